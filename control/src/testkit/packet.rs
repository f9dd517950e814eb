//! A small builder of Ethernet/IPv4/UDP frames with correct checksums, and a parser of the
//! fields the switch rewrites. Used to feed the XDP program synthetic packets (its fixtures and
//! its per-packet benchmark), as Katran's test harness does.

use pegasus_common::checksum;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Length of the Ethernet header.
pub const ETH_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// Length of the UDP header.
pub const UDP_LEN: usize = 8;
/// Where the UDP payload starts in a frame built here.
pub const PAYLOAD_OFFSET: usize = ETH_LEN + IPV4_LEN + UDP_LEN;

/// A UDP datagram in an IPv4 packet in an Ethernet frame.
#[derive(Clone, Debug)]
pub struct UdpFrame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub ttl: u8,
    pub payload: Vec<u8>,
    /// Send a zero UDP checksum ("none", allowed over IPv4).
    pub zero_udp_checksum: bool,
}

impl UdpFrame {
    /// A frame from `src` to `dst` with TTL 64 and made-up MAC addresses.
    pub fn new(src: SocketAddrV4, dst: SocketAddrV4, payload: Vec<u8>) -> UdpFrame {
        UdpFrame {
            src_mac: [0x02, 0, 0, 0xaa, 0, 1],
            dst_mac: [0x02, 0, 0, 0xaa, 0, 2],
            src,
            dst,
            ttl: 64,
            payload,
            zero_udp_checksum: false,
        }
    }

    /// The frame's bytes, with valid IPv4 and UDP checksums.
    pub fn build(&self) -> Vec<u8> {
        let udp_len = (UDP_LEN + self.payload.len()) as u16;
        let total_len = IPV4_LEN as u16 + udp_len;
        let mut f = Vec::with_capacity(ETH_LEN + total_len as usize);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = [0u8; IPV4_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total_len.to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = self.ttl;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&self.src.ip().octets());
        ip[16..20].copy_from_slice(&self.dst.ip().octets());
        let check = checksum::full(0, &ip);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.src.port().to_be_bytes());
        f.extend_from_slice(&self.dst.port().to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.payload);
        if !self.zero_udp_checksum {
            let check = udp_checksum(&f);
            f[ETH_LEN + IPV4_LEN + 6..ETH_LEN + IPV4_LEN + 8].copy_from_slice(&check.to_be_bytes());
        }
        f
    }
}

/// The UDP checksum a frame built here should carry (computed over the pseudo-header, the UDP
/// header with a zero checksum field, and the payload).
pub fn udp_checksum(frame: &[u8]) -> u16 {
    let ip = &frame[ETH_LEN..ETH_LEN + IPV4_LEN];
    let udp = &frame[ETH_LEN + IPV4_LEN..];
    let mut pseudo = Vec::with_capacity(12 + udp.len());
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(udp);
    pseudo[12 + 6] = 0;
    pseudo[12 + 7] = 0;
    match checksum::full(0, &pseudo) {
        0 => 0xffff,
        c => c,
    }
}

/// True when the frame's IPv4 header checksum is valid.
pub fn ipv4_checksum_ok(frame: &[u8]) -> bool {
    checksum::full(0, &frame[ETH_LEN..ETH_LEN + IPV4_LEN]) == 0
}

/// The UDP checksum field of a frame.
pub fn udp_checksum_field(frame: &[u8]) -> u16 {
    let at = ETH_LEN + IPV4_LEN + 6;
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// Parses "a.b.c.d:port" for fixtures.
pub fn addr(s: &str) -> SocketAddrV4 {
    s.parse().expect("a literal socket address")
}

/// Parses "a.b.c.d".
pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("a literal IPv4 address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_have_valid_checksums() {
        let f = UdpFrame::new(
            addr("10.2.0.2:40000"),
            addr("10.1.0.2:7400"),
            b"hello".to_vec(),
        )
        .build();
        assert_eq!(f.len(), PAYLOAD_OFFSET + 5);
        assert!(ipv4_checksum_ok(&f));
        assert_eq!(udp_checksum_field(&f), udp_checksum(&f));
        // A corrupted payload no longer matches.
        let mut bad = f.clone();
        bad[PAYLOAD_OFFSET] ^= 0xff;
        assert_ne!(udp_checksum_field(&bad), udp_checksum(&bad));
    }
}
