//! What the XDP program's fixture tests share (Katran's style): a fixture is a named input
//! frame with the verdict and output bytes the program must give; [`check`] runs one through
//! the real program (`BPF_PROG_TEST_RUN`) and compares verdict, bytes and checksums.

use super::packet::{self, UdpFrame};
use crate::switch::{PacketVerdict, Switch, action};
use pegasus_common::wire::{self, Header, Message};

/// The client id the fixtures' client uses.
pub const CLIENT_ID: u16 = 7;

/// One rule of the program, as a test: this input gives this verdict and these bytes.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: &'static str,
    pub input: Vec<u8>,
    /// XDP action ([`action`]).
    pub action: u32,
    pub output: Vec<u8>,
}

/// Runs `f.input` through the program and checks its verdict and output bytes; a forwarded
/// frame must also carry correct IPv4 and UDP checksums (a zero UDP checksum, "none" over
/// IPv4, must stay zero).
pub fn check(switch: &Switch, f: &Fixture) {
    let PacketVerdict { action, packet } = switch.run_on_packet(&f.input).unwrap();
    assert_eq!(
        action::name(action),
        action::name(f.action),
        "{}: verdict",
        f.name
    );
    assert_eq!(packet, f.output, "{}: output bytes", f.name);
    if action == action::REDIRECT || action == action::TX {
        assert!(
            packet::ipv4_checksum_ok(&packet),
            "{}: IPv4 checksum",
            f.name
        );
        if packet::udp_checksum_field(&packet) != 0 {
            assert_eq!(
                packet::udp_checksum_field(&packet),
                packet::udp_checksum(&packet),
                "{}: UDP checksum",
                f.name
            );
        }
    }
}

/// A Pegasus payload: `header`, then `key` and `value` (and, for a CHAIN_PUT, the address of
/// [`FIXTURE_CLIENT`]).
pub fn payload(header: Header, key: &[u8], value: &[u8]) -> Vec<u8> {
    let reply_to = (header.op() == Some(wire::Op::ChainPut)).then_some(FIXTURE_CLIENT);
    Message {
        reply_to,
        ..Message::new(header, key, value)
    }
    .to_vec()
    .expect("a fixture's message fits in a datagram")
}

/// The client a fixture's CHAIN_PUT is answered to.
pub const FIXTURE_CLIENT: wire::ReplyTo = wire::ReplyTo {
    ipv4: [10, 2, 0, 2],
    port: 40_000,
};

/// A reply's payload as a store sends it: no key (its key hash names the key), maybe a value.
pub fn reply_payload(header: Header, value: &[u8]) -> Vec<u8> {
    payload(header, b"", value)
}

/// `frame` as the switch forwards it: next-hop MACs, TTL one less, checksums redone.
pub fn forwarded(mut frame: UdpFrame, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    frame.src_mac = src_mac;
    frame.dst_mac = dst_mac;
    frame.ttl -= 1;
    frame.build()
}
