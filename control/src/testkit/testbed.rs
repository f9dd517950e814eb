//! A namespace made for running the switch program on synthetic packets
//! (`BPF_PROG_TEST_RUN`) with known FIB answers: ports `sv0`..`svN` towards servers at
//! `10.1.I.2` and `cl0` towards a client at `10.2.0.2`, with static neighbours; in a chain
//! ([`Testbed::in_chain`]), also `pr0` (role upstream) towards a server of the previous rack at
//! `10.17.0.2` and `nx0` (role downstream) towards one of the next rack at `10.33.0.2`. The
//! fixture tests and `pegasus switch cost` run on it. Needs root.

use super::packet;
use crate::{
    lab::{
        Host, HostAddressing, mac_text,
        netns::{self, ScopedNetns},
    },
    switch::{Switch, SwitchSettings},
};
use anyhow::{Result, ensure};
use pegasus_common::{directory::SERVERS_MAX, roles::PortRole};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The switch's MAC address on the client port (the lab's addressing, client 0).
pub const CLIENT_PORT_MAC: [u8; 6] = [0x02, 0, 0, 2, 0, 1];
/// The client's MAC address.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 2, 0, 2];

/// The switch's MAC address on server `i`'s port.
pub fn server_port_mac(i: u8) -> [u8; 6] {
    Host::Server(i).addressing().tor_mac
}

/// Server `i`'s MAC address.
pub fn server_mac(i: u8) -> [u8; 6] {
    Host::Server(i).addressing().host_mac
}

/// Server `i`'s address.
pub fn server_ip(i: u8) -> Ipv4Addr {
    Host::Server(i).addressing().host_ip
}

/// The client's address.
pub fn client_ip() -> Ipv4Addr {
    Host::Client(0).addressing().host_ip
}

/// The client's UDP address on `port`.
pub fn client_addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(client_ip(), port)
}

/// A UDP address of server `i`.
pub fn server_addr(i: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(server_ip(i), port)
}

/// A server of the previous rack of a chain, behind the chain port `pr0`.
pub const PREVIOUS_RACK: ChainNeighbour = ChainNeighbour {
    port: "pr0",
    role: PortRole::Chain,
    subnet: 17,
};
/// A server of the next rack of a chain, behind another chain port, `nx0`.
pub const NEXT_RACK: ChainNeighbour = ChainNeighbour {
    port: "nx0",
    role: PortRole::Chain,
    subnet: 33,
};

/// A neighbouring rack's port of the testbed: its server 0 is `10.SUBNET.0.2`.
#[derive(Clone, Copy, Debug)]
pub struct ChainNeighbour {
    pub port: &'static str,
    pub role: PortRole,
    subnet: u8,
}

impl ChainNeighbour {
    /// The addressing of the port: the switch at `10.SUBNET.0.1`, the server at `.2`.
    pub fn addressing(self) -> HostAddressing {
        HostAddressing {
            tor_port: self.port.to_owned(),
            tor_ip: Ipv4Addr::new(10, self.subnet, 0, 1),
            tor_mac: [0x02, 0, 0, self.subnet, 0, 0x01],
            host_ip: Ipv4Addr::new(10, self.subnet, 0, 2),
            host_mac: [0x02, 0, 0, self.subnet, 0, 0x02],
        }
    }

    /// The neighbouring server's UDP address on `port`.
    pub fn server_addr(self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.addressing().host_ip, port)
    }
}

/// The namespace and the switch loaded in it.
pub struct Testbed {
    pub switch: Switch,
    _ns: ScopedNetns,
}

impl Testbed {
    /// Makes the namespace (`pgt-TAG-...`, removed on drop), moves the calling thread into it,
    /// and loads the switch with `settings`, its server table replaced by the `servers`
    /// servers of the testbed.
    pub fn new(tag: &str, servers: u8, settings: SwitchSettings) -> Result<Testbed> {
        Testbed::build(tag, servers, settings, &[])
    }

    /// As [`Testbed::new`], for a switch in the middle of a chain: with the ports towards
    /// [`PREVIOUS_RACK`] and [`NEXT_RACK`].
    pub fn in_chain(tag: &str, servers: u8, settings: SwitchSettings) -> Result<Testbed> {
        Testbed::build(tag, servers, settings, &[PREVIOUS_RACK, NEXT_RACK])
    }

    fn build(
        tag: &str,
        servers: u8,
        mut settings: SwitchSettings,
        neighbours: &[ChainNeighbour],
    ) -> Result<Testbed> {
        ensure!(
            netns::is_root(),
            "the switch testbed needs root (BPF_PROG_TEST_RUN, namespaces)"
        );
        ensure!(
            (1..=SERVERS_MAX).contains(&u32::from(servers)),
            "a testbed has 1 to {SERVERS_MAX} servers"
        );
        let ns = ScopedNetns::new(tag)?;
        let n = ns.name();
        // The lab's addressing, with port names of the testbed's own.
        let ports: Vec<(String, HostAddressing, PortRole)> = (0..servers)
            .map(|i| {
                let a = Host::Server(i).addressing();
                (format!("sv{i}"), a, PortRole::Server)
            })
            .chain([(
                "cl0".to_owned(),
                Host::Client(0).addressing(),
                PortRole::Client,
            )])
            .chain(
                neighbours
                    .iter()
                    .map(|n| (n.port.to_owned(), n.addressing(), n.role)),
            )
            .collect();
        for (port, a, _) in &ports {
            let peer = format!("{port}p");
            let (port_mac, host_mac) = (mac_text(a.tor_mac), mac_text(a.host_mac));
            let (port_ip, host_ip) = (format!("{}/24", a.tor_ip), a.host_ip.to_string());
            netns::ip(&[
                "-n", n, "link", "add", port, "address", &port_mac, "type", "veth", "peer", "name",
                &peer,
            ])?;
            netns::ip(&["-n", n, "addr", "add", &port_ip, "dev", port])?;
            netns::ip(&["-n", n, "link", "set", port, "up"])?;
            netns::ip(&["-n", n, "link", "set", &peer, "up"])?;
            netns::set_neighbour(n, &host_ip, &host_mac, port)?;
        }
        netns::exec_in(n, "sysctl", &["-qw", "net.ipv4.conf.all.forwarding=1"])?;
        netns::enter_current_thread(n)?;
        settings.servers = (0..servers).map(|i| (i, server_ip(i))).collect();
        let mut switch = Switch::load(&settings)?;
        for (port, a, role) in &ports {
            let ifindex = switch.add_port(port, *role)?;
            let [a0, a1, a2, _] = a.host_ip.octets();
            switch.set_test_ingress([a0, a1, a2], ifindex);
        }
        Ok(Testbed { switch, _ns: ns })
    }
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
