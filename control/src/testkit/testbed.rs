//! A namespace made for running the switch program on synthetic packets
//! (`BPF_PROG_TEST_RUN`) with known FIB answers: ports `sv0`..`svN` towards servers at
//! `10.1.I.2` and `cl0` towards a client at `10.2.0.2`, with static neighbours. The fixture
//! tests and `pegasus switch cost` run on it. Needs root.

use super::packet;
use crate::{
    lab::netns::{self, ScopedNetns},
    switch::{Switch, SwitchSettings},
};
use anyhow::{Result, ensure};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The switch's MAC address on the client port.
pub const CLIENT_PORT_MAC: [u8; 6] = [0x02, 0, 0, 2, 0, 1];
/// The client's MAC address.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 2, 0, 2];
/// Most servers a testbed has.
pub const SERVERS_MAX: u8 = 32;

/// The switch's MAC address on server `i`'s port.
pub fn server_port_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 1, i, 1]
}

/// Server `i`'s MAC address.
pub fn server_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 1, i, 2]
}

/// Server `i`'s address.
pub fn server_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, i, 2)
}

/// The client's address.
pub fn client_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 2)
}

/// A UDP address of server `i`.
pub fn server_addr(i: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(server_ip(i), port)
}

/// (port, port MAC, port address, host address, host MAC) of one switch port.
type PortSpec = (String, [u8; 6], String, Ipv4Addr, [u8; 6]);

/// The namespace and the switch loaded in it.
pub struct Testbed {
    pub switch: Switch,
    _ns: ScopedNetns,
}

impl Testbed {
    /// Makes the namespace (`pgt-TAG-...`, removed on drop), moves the calling thread into it,
    /// and loads the switch with `settings`, its server table replaced by the `servers`
    /// servers of the testbed.
    pub fn new(tag: &str, servers: u8, mut settings: SwitchSettings) -> Result<Testbed> {
        ensure!(
            netns::is_root(),
            "the switch testbed needs root (BPF_PROG_TEST_RUN, namespaces)"
        );
        ensure!(
            (1..=SERVERS_MAX).contains(&servers),
            "a testbed has 1 to {SERVERS_MAX} servers"
        );
        let ns = ScopedNetns::new(tag)?;
        let n = ns.name();
        let mut ports: Vec<PortSpec> = (0..servers)
            .map(|i| {
                (
                    format!("sv{i}"),
                    server_port_mac(i),
                    format!("10.1.{i}.1/24"),
                    server_ip(i),
                    server_mac(i),
                )
            })
            .collect();
        ports.push((
            "cl0".into(),
            CLIENT_PORT_MAC,
            "10.2.0.1/24".into(),
            client_ip(),
            CLIENT_MAC,
        ));
        for (port, port_mac, port_ip, host_ip, host_mac) in &ports {
            let peer = format!("{port}p");
            let (port_mac, host_mac) = (mac(port_mac), mac(host_mac));
            let host_ip = host_ip.to_string();
            netns::ip(&[
                "-n", n, "link", "add", port, "address", &port_mac, "type", "veth", "peer", "name",
                &peer,
            ])?;
            netns::ip(&["-n", n, "addr", "add", port_ip, "dev", port])?;
            netns::ip(&["-n", n, "link", "set", port, "up"])?;
            netns::ip(&["-n", n, "link", "set", &peer, "up"])?;
            netns::set_neighbour(n, &host_ip, &host_mac, port)?;
        }
        netns::exec_in(n, "sysctl", &["-qw", "net.ipv4.conf.all.forwarding=1"])?;
        netns::enter_current_thread(n)?;
        settings.servers = (0..servers).map(|i| (i, server_ip(i))).collect();
        let mut switch = Switch::load(&settings)?;
        for (port, ..) in &ports {
            switch.add_port(port)?;
        }
        Ok(Testbed { switch, _ns: ns })
    }
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A frame from the client to server `i`'s store port.
pub fn request_to(i: u8, port: u16, payload: Vec<u8>) -> packet::UdpFrame {
    packet::UdpFrame::new(
        SocketAddrV4::new(client_ip(), 40000),
        server_addr(i, port),
        payload,
    )
}

/// A frame from server `i`'s store port to the client.
pub fn reply_from(i: u8, port: u16, payload: Vec<u8>) -> packet::UdpFrame {
    packet::UdpFrame::new(
        server_addr(i, port),
        SocketAddrV4::new(client_ip(), 40000),
        payload,
    )
}
