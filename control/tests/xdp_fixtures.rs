//! The XDP switch on synthetic packets through BPF_PROG_TEST_RUN: for every rule, the input
//! frame, the expected verdict and the expected output frame, byte for byte (rewritten MAC
//! addresses, TTL, version, and both checksums included), as Katran's fixture tests do.
//!
//! The program runs in a namespace made for the test, with two ports and static neighbours, so
//! that its FIB lookups give a known answer. Needs root (as CI runs).

use pegasus_common::{
    hash::key_hash,
    switch::Counter,
    version,
    wire::{self, Header, Message, Op},
};
use pegasus_control::{
    netns::{self, ScopedNetns},
    switch::{
        PacketVerdict, Switch, SwitchSettings, action,
        packet::{self, UdpFrame, addr},
    },
};
use proptest::prelude::*;

const PORT: u16 = 7400;
const EPOCH: u16 = 3;
const SERVER_PORT_MAC: [u8; 6] = [0x02, 0, 0, 1, 0, 1];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 1, 0, 2];
const CLIENT_PORT_MAC: [u8; 6] = [0x02, 0, 0, 2, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 2, 0, 2];

/// A namespace with ports `sv0` (towards server 10.1.0.2) and `cl0` (towards client
/// 10.2.0.2), and the switch loaded in it. The calling thread is moved into the namespace.
struct Bench {
    switch: Switch,
    _ns: ScopedNetns,
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn setup(tag: &str) -> Bench {
    assert!(
        netns::is_root(),
        "the XDP fixtures need root (BPF_PROG_TEST_RUN, namespaces)"
    );
    let ns = ScopedNetns::new(tag).unwrap();
    let n = ns.name();
    for (port, port_mac, port_ip, host_ip, host_mac) in [
        (
            "sv0",
            SERVER_PORT_MAC,
            "10.1.0.1/24",
            "10.1.0.2",
            SERVER_MAC,
        ),
        (
            "cl0",
            CLIENT_PORT_MAC,
            "10.2.0.1/24",
            "10.2.0.2",
            CLIENT_MAC,
        ),
    ] {
        let peer = format!("{port}p");
        netns::ip(&[
            "-n",
            n,
            "link",
            "add",
            port,
            "address",
            &mac(port_mac),
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])
        .unwrap();
        netns::ip(&["-n", n, "addr", "add", port_ip, "dev", port]).unwrap();
        netns::ip(&["-n", n, "link", "set", port, "up"]).unwrap();
        netns::ip(&["-n", n, "link", "set", &peer, "up"]).unwrap();
        netns::ip(&[
            "-n",
            n,
            "neigh",
            "replace",
            host_ip,
            "lladdr",
            &mac(host_mac),
            "dev",
            port,
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    netns::exec_in(n, "sysctl", &["-qw", "net.ipv4.conf.all.forwarding=1"]).unwrap();
    netns::enter_current_thread(n).unwrap();
    let mut switch = Switch::load(SwitchSettings {
        store_port: PORT,
        epoch: EPOCH,
    })
    .unwrap();
    switch.add_port("sv0").unwrap();
    switch.add_port("cl0").unwrap();
    Bench { switch, _ns: ns }
}

fn pegasus(op: Op, key: &[u8], value: &[u8], version: u64, flags: u8) -> Vec<u8> {
    let mut h = Header::new(op);
    h.keyhash = key_hash(key);
    h.version = version;
    h.flags = flags;
    h.request_id = 0xabcd;
    h.client_id = 7;
    let m = Message {
        header: h,
        key,
        value,
    };
    let mut b = vec![0u8; m.encoded_len()];
    m.encode(&mut b).unwrap();
    b
}

fn to_server(payload: Vec<u8>) -> UdpFrame {
    UdpFrame::new(addr("10.2.0.2:40000"), addr("10.1.0.2:7400"), payload)
}

fn to_client(payload: Vec<u8>) -> UdpFrame {
    UdpFrame::new(addr("10.1.0.2:7400"), addr("10.2.0.2:40000"), payload)
}

/// `frame` as the switch should forward it: next-hop MACs, TTL one less, checksums redone.
fn forwarded(mut frame: UdpFrame, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    frame.src_mac = src_mac;
    frame.dst_mac = dst_mac;
    frame.ttl -= 1;
    frame.build()
}

struct Fixture {
    name: &'static str,
    input: Vec<u8>,
    action: u32,
    output: Vec<u8>,
}

fn check(switch: &Switch, f: &Fixture) {
    let PacketVerdict { action, packet } = switch.run_on_packet(&f.input).unwrap();
    assert_eq!(
        action::name(action),
        action::name(f.action),
        "{}: verdict",
        f.name
    );
    assert_eq!(packet, f.output, "{}: output bytes", f.name);
    if action == action::REDIRECT {
        assert!(
            packet::ipv4_checksum_ok(&packet),
            "{}: IPv4 checksum",
            f.name
        );
    }
    // A zero UDP checksum means "none" over IPv4 and must stay so.
    if action == action::REDIRECT && packet::udp_checksum_field(&f.input) != 0 {
        assert_eq!(
            packet::udp_checksum_field(&packet),
            packet::udp_checksum(&packet),
            "{}: UDP checksum",
            f.name
        );
    }
}

fn stamped(counter: u64) -> u64 {
    version::make(EPOCH, counter).unwrap()
}

#[test]
fn every_rule_has_its_fixture() {
    let bench = setup("fx");
    let unchanged = |name, frame: Vec<u8>| Fixture {
        name,
        output: frame.clone(),
        input: frame,
        action: action::PASS,
    };
    let put = to_server(pegasus(Op::Put, b"key", b"value", 0, 0));
    let put_stamped = |n| to_server(pegasus(Op::Put, b"key", b"value", stamped(n), 0));
    let mut zero_sum_put = to_server(pegasus(Op::Put, b"z", b"v", 0, 0));
    zero_sum_put.zero_udp_checksum = true;
    let mut zero_sum_expected = to_server(pegasus(Op::Put, b"z", b"v", stamped(3), 0));
    zero_sum_expected.zero_udp_checksum = true;
    let get = to_server(pegasus(Op::Get, b"key", b"", 0, 0));
    let chained = to_server(pegasus(Op::Put, b"key", b"v", 99, wire::flags::STAMPED));
    let reply = to_client(pegasus(Op::GetReply, b"", b"value", stamped(1), 0));
    let mut ttl_one = get.clone();
    ttl_one.ttl = 1;
    let no_neighbour = UdpFrame::new(
        addr("10.2.0.2:40000"),
        addr("10.1.0.99:7400"),
        pegasus(Op::Get, b"k", b"", 0, 0),
    );
    let mut bad_magic = pegasus(Op::Get, b"k", b"", 0, 0);
    bad_magic[0] = 0x00;
    let mut bad_version = pegasus(Op::Put, b"k", b"v", 0, 0);
    bad_version[wire::offset::PROTO_VERSION] = 9;
    let mut unknown_op = pegasus(Op::Put, b"k", b"v", 0, 0);
    unknown_op[wire::offset::OP] = 200;
    let short = pegasus(Op::Put, b"k", b"v", 0, 0)[..wire::HEADER_LEN - 1].to_vec();
    let mut with_ip_options = put.build();
    with_ip_options[packet::ETH_LEN] = 0x46; // IHL 6: not at the fixed offset
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);

    let fixtures = [
        Fixture {
            name: "a PUT gets the next version and is forwarded to the server",
            input: put.build(),
            action: action::REDIRECT,
            output: forwarded(put_stamped(1), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "the next PUT gets a larger version",
            input: put.build(),
            action: action::REDIRECT,
            output: forwarded(put_stamped(2), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "a zero UDP checksum stays zero when the version is stamped",
            input: zero_sum_put.build(),
            action: action::REDIRECT,
            output: forwarded(zero_sum_expected, SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "a GET is forwarded with its header untouched",
            input: get.build(),
            action: action::REDIRECT,
            output: forwarded(get.clone(), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "a PUT stamped upstream keeps its version",
            input: chained.build(),
            action: action::REDIRECT,
            output: forwarded(chained.clone(), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "a reply is forwarded to the client",
            input: reply.build(),
            action: action::REDIRECT,
            output: forwarded(reply.clone(), CLIENT_PORT_MAC, CLIENT_MAC),
        },
        unchanged(
            "TTL 1 goes to the kernel (ICMP time exceeded)",
            ttl_one.build(),
        ),
        unchanged(
            "no neighbour entry: the kernel resolves and forwards",
            no_neighbour.build(),
        ),
        unchanged(
            "bad magic on the store port: passed, not rewritten",
            to_server(bad_magic).build(),
        ),
        unchanged(
            "unknown protocol version: passed, not rewritten",
            to_server(bad_version).build(),
        ),
        unchanged(
            "unknown op: passed, not rewritten",
            to_server(unknown_op).build(),
        ),
        unchanged(
            "truncated header: passed, not rewritten",
            to_server(short).build(),
        ),
        unchanged(
            "a request sent from the store port: passed",
            to_client(pegasus(Op::Put, b"k", b"v", 0, 0)).build(),
        ),
        unchanged(
            "other UDP traffic: passed",
            UdpFrame::new(addr("10.2.0.2:40000"), addr("10.1.0.2:53"), b"dns".to_vec()).build(),
        ),
        unchanged("IPv4 with options: passed", with_ip_options),
        unchanged("not IPv4 (ARP): passed", arp),
        unchanged("a runt frame: passed", vec![0u8; 14]),
    ];
    for f in &fixtures {
        check(&bench.switch, f);
    }

    let c = bench.switch.counters().unwrap();
    assert_eq!(c.get(Counter::Packets), fixtures.len() as u64);
    assert_eq!(c.get(Counter::VerdictRedirect), 6);
    assert_eq!(c.get(Counter::WritesStamped), 3);
    assert_eq!(c.get(Counter::ParseFailures), 5);
    assert_eq!(c.get(Counter::FibMisses), 1);
    assert_eq!(bench.switch.version_counter().unwrap(), 3);
}

/// Random payloads on the store port: the program either treats the packet as a valid request
/// (then only the version, MACs, TTL and checksums may change) or passes it untouched.
#[test]
fn random_payloads_are_forwarded_whole_or_passed_untouched() {
    let bench = setup("fz");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
    runner
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..200),
                any::<bool>(),
                1u8..=9,
            ),
            |(mut payload, valid_prefix, op)| {
                if valid_prefix && payload.len() >= 4 {
                    payload[..4].copy_from_slice(&[0x50, 0x47, 1, op]);
                }
                let input = to_server(payload.clone()).build();
                let PacketVerdict { action, packet } = bench.switch.run_on_packet(&input).unwrap();
                prop_assert_eq!(packet.len(), input.len());
                match action {
                    action::PASS => prop_assert_eq!(&packet, &input),
                    action::REDIRECT => {
                        prop_assert!(payload.len() >= wire::HEADER_LEN);
                        let out_payload = &packet[packet::PAYLOAD_OFFSET..];
                        // Only the version field may differ in the payload.
                        let v = wire::offset::VERSION;
                        prop_assert_eq!(&out_payload[..v], &payload[..v]);
                        prop_assert_eq!(&out_payload[v + 8..], &payload[v + 8..]);
                        prop_assert!(packet::ipv4_checksum_ok(&packet));
                        prop_assert_eq!(
                            packet::udp_checksum_field(&packet),
                            packet::udp_checksum(&packet)
                        );
                    }
                    other => prop_assert!(false, "unexpected verdict {}", action::name(other)),
                }
                Ok(())
            },
        )
        .unwrap();
}
