//! A chain of racks on one host: `pegasus lab up --racks N` (N ≥ 2; docs/chain.md).
//!
//! For lab NAME:
//! - rack R has a ToR namespace and server namespaces, as a single rack does (rack 0 keeps the
//!   single rack's names, `pg-NAME-tor` and `pg-NAME-sI`; rack R ≥ 1 is `pg-NAME-rR-tor` and
//!   `pg-NAME-rR-sI`); its server I is `10.S.I.2` with S = 1 + 16·R, and its ToR runs a
//!   switch (with its controller) on ports `sI` (servers), `spine` (clients), `prev` (the
//!   previous rack, role upstream) and `next` (the next rack, role downstream);
//! - a spine namespace `pg-NAME-spine` routes between the clients (`pg-NAME-cJ` at
//!   `10.2.J.2`, outside every rack) and every ToR's `spine` port (`10.3.R.2`, the spine at
//!   `10.3.R.1`), with plain kernel forwarding;
//! - consecutive racks are linked through a link namespace `pg-NAME-lR` (plain kernel
//!   forwarding between its `r{R}` towards ToR R's `next`, on `10.4.R.0/24`, and `r{R+1}`
//!   towards ToR R+1's `prev`, on `10.5.R.0/24`), where faults can be injected on the chain's
//!   traffic (`pegasus lab fault --link lR`): a ToR's own ports carry XDP programs, which tc
//!   programs there would not see;
//! - the cluster file lists the racks head first; each switch gets its rack's own
//!   (`rack-R.toml`), each store the whole file and its rack (`--rack R`).

use super::{
    HostAddressing, LabSpec, LabState, Readiness, SWITCH_ROLE, client_ns, fault, mac_text, netns,
    only_the_switch_forwards, quiet, save, server_ns, start, tor_ns, wire_host,
};
use crate::service::config::{DaemonConfig, PortSpec};
use anyhow::{Result, ensure};
use pegasus_client::cluster::{Cluster, Rack, ServerEntry};
use pegasus_common::roles::PortRole;
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Child,
};

/// Most racks in a lab's chain.
pub const RACKS_MAX: u8 = pegasus_client::cluster::RACKS_MAX as u8;

/// The ToR namespace of rack `rack`.
pub fn rack_tor_ns(name: &str, rack: u8) -> String {
    match rack {
        0 => tor_ns(name),
        r => format!("pg-{name}-r{r}-tor"),
    }
}

/// The namespace of server `i` of rack `rack`.
pub fn rack_server_ns(name: &str, rack: u8, i: u8) -> String {
    match rack {
        0 => server_ns(name, i),
        r => format!("pg-{name}-r{r}-s{i}"),
    }
}

/// The spine namespace.
pub fn spine_ns(name: &str) -> String {
    format!("pg-{name}-spine")
}

/// The namespace of the link between rack `rack` and rack `rack + 1`.
pub fn link_ns(name: &str, rack: u8) -> String {
    format!("pg-{name}-l{rack}")
}

/// The second byte of rack `rack`'s server addresses: 1 + 16·R.
fn rack_subnet(rack: u8) -> u8 {
    1 + 16 * rack
}

/// Server `i` of rack `rack`, behind its ToR's port `sI` (rack 0: the single rack's plan).
pub fn rack_server_addressing(rack: u8, i: u8) -> HostAddressing {
    let s = rack_subnet(rack);
    HostAddressing {
        tor_port: format!("s{i}"),
        tor_ip: Ipv4Addr::new(10, s, i, 1),
        tor_mac: [0x02, 0, 0, s, i, 0x01],
        host_ip: Ipv4Addr::new(10, s, i, 2),
        host_mac: [0x02, 0, 0, s, i, 0x02],
    }
}

/// Server `i` of rack `rack`'s address.
pub fn rack_server_ip(rack: u8, i: u8) -> Ipv4Addr {
    rack_server_addressing(rack, i).host_ip
}

/// The link between rack `rack` and the next one, for fault injection: its "host" end is the
/// link namespace's interface towards rack `rack` (to-switch: what flows back up the chain,
/// CHAIN_ACKs; from-switch: what flows down, CHAIN_PUTs).
pub fn chain_link(name: &str, rack: u8) -> fault::Link {
    fault::Link {
        host_ns: link_ns(name, rack),
        host_interface: format!("r{rack}"),
        tor_ns: rack_tor_ns(name, rack),
        tor_interface: "next".into(),
    }
}

/// A point-to-point veth between two namespaces, on `10.NET.X.0/24` (`.1` on `a`, `.2` on
/// `b`), with static neighbours and offloads off; GRO on both ends (a native XDP redirect
/// into a veth needs NAPI on its peer).
struct P2p<'a> {
    a_ns: &'a str,
    a_port: &'a str,
    b_ns: &'a str,
    b_port: &'a str,
    net: u8,
    x: u8,
}

impl P2p<'_> {
    fn ip(&self, end: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, self.x, end)
    }

    fn mac(&self, end: u8) -> [u8; 6] {
        [0x02, 0, 0, self.net, self.x, end]
    }

    fn wire(&self) -> Result<()> {
        let (a_mac, b_mac) = (mac_text(self.mac(1)), mac_text(self.mac(2)));
        netns::ip(&[
            "-n",
            self.a_ns,
            "link",
            "add",
            self.a_port,
            "address",
            &a_mac,
            "type",
            "veth",
            "peer",
            "name",
            self.b_port,
            "address",
            &b_mac,
            "netns",
            self.b_ns,
        ])?;
        for (ns, port, ip, peer_ip, peer_mac) in [
            (self.a_ns, self.a_port, self.ip(1), self.ip(2), &b_mac),
            (self.b_ns, self.b_port, self.ip(2), self.ip(1), &a_mac),
        ] {
            netns::ip(&["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", port])?;
            netns::ip(&["-n", ns, "link", "set", port, "up"])?;
            netns::set_neighbour(ns, &peer_ip.to_string(), peer_mac, port)?;
            netns::exec_in(ns, "ethtool", &["-K", port, "tx", "off", "gro", "on"])?;
        }
        Ok(())
    }
}

/// Routes `10.S.0.0/16` (rack `rack`'s servers) in `ns` via `gateway`.
fn route_to_rack(ns: &str, rack: u8, gateway: Ipv4Addr) -> Result<()> {
    netns::ip(&[
        "-n",
        ns,
        "route",
        "add",
        &format!("10.{}.0.0/16", rack_subnet(rack)),
        "via",
        &gateway.to_string(),
    ])?;
    Ok(())
}

/// Builds the namespaces, links and routes of a chain of `spec.racks` racks, writes the
/// cluster files and starts every store and switch. Returns the processes to wait for.
pub(super) fn build(
    spec: &LabSpec,
    exe: &Path,
    dir: &Path,
    state: &mut LabState,
) -> Result<Vec<(Child, PathBuf, Readiness)>> {
    let name = &spec.name;
    let racks = spec.racks;
    ensure!(
        spec.dataplane == super::Dataplane::Xdp,
        "a chain of racks runs the Pegasus switch (--dataplane xdp)"
    );
    let spine = spine_ns(name);
    let mut namespaces = vec![spine.clone()];
    namespaces.extend((0..racks).map(|r| rack_tor_ns(name, r)));
    namespaces.extend((0..racks - 1).map(|r| link_ns(name, r)));
    for ns in &namespaces {
        netns::add(ns)?;
        state.namespaces.push(ns.clone());
        netns::exec_in(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        quiet(ns)?;
    }
    for r in 0..racks {
        let tor = rack_tor_ns(name, r);
        for i in 0..spec.servers {
            let ns = rack_server_ns(name, r, i);
            netns::add(&ns)?;
            state.namespaces.push(ns.clone());
            quiet(&ns)?;
            wire_host(&tor, &ns, &rack_server_addressing(r, i))?;
        }
        // Clients and the other racks' answers reach a rack through the spine.
        let uplink = P2p {
            a_ns: &spine,
            a_port: &format!("r{r}"),
            b_ns: &tor,
            b_port: "spine",
            net: 3,
            x: r,
        };
        uplink.wire()?;
        route_to_rack(&spine, r, uplink.ip(2))?;
        netns::ip(&[
            "-n",
            &tor,
            "route",
            "add",
            "default",
            "via",
            &uplink.ip(1).to_string(),
        ])?;
    }
    for r in 0..racks - 1 {
        let link = link_ns(name, r);
        let (upper, lower) = (rack_tor_ns(name, r), rack_tor_ns(name, r + 1));
        let down = P2p {
            a_ns: &upper,
            a_port: "next",
            b_ns: &link,
            b_port: &format!("r{r}"),
            net: 4,
            x: r,
        };
        let up = P2p {
            a_ns: &link,
            a_port: &format!("r{}", r + 1),
            b_ns: &lower,
            b_port: "prev",
            net: 5,
            x: r,
        };
        down.wire()?;
        up.wire()?;
        route_to_rack(&upper, r + 1, down.ip(2))?;
        route_to_rack(&link, r + 1, up.ip(2))?;
        route_to_rack(&link, r, down.ip(1))?;
        route_to_rack(&lower, r, up.ip(1))?;
    }
    for j in 0..spec.clients {
        let ns = client_ns(name, j);
        netns::add(&ns)?;
        state.namespaces.push(ns.clone());
        quiet(&ns)?;
        wire_host(&spine, &ns, &super::Host::Client(j).addressing())?;
    }
    save(state, dir)?;

    let cluster = Cluster {
        racks: (0..racks)
            .map(|r| Rack {
                id: Some(r),
                // Each rack's controller runs in its ToR: a store sees it at the ToR's end of
                // its link.
                controllers: (0..spec.servers)
                    .map(|i| IpAddr::V4(rack_server_addressing(r, i).tor_ip))
                    .collect(),
                servers: (0..spec.servers)
                    .map(|i| ServerEntry {
                        id: i,
                        addr: SocketAddr::V4(SocketAddrV4::new(rack_server_ip(r, i), spec.port)),
                    })
                    .collect(),
            })
            .collect(),
        ..Cluster::default()
    };
    cluster.save(&state.cluster_file)?;

    let mut children = Vec::new();
    for r in 0..racks {
        for i in 0..spec.servers {
            let role = match r {
                0 => format!("store-{i}"),
                r => format!("store-r{r}-{i}"),
            };
            let address = SocketAddrV4::new(rack_server_ip(r, i), spec.port);
            let mut args = super::store_args(spec, address, i, &state.cluster_file);
            args.extend(["--rack".to_owned(), r.to_string()]);
            let ns = rack_server_ns(name, r, i);
            let log = dir.join(format!("{role}.log"));
            let readiness = Readiness::Store {
                namespace: ns.clone(),
                address,
            };
            children.push(start(state, role, &ns, exe, args, log, readiness)?);
        }
    }
    for r in 0..racks {
        let suffix = match r {
            0 => String::new(),
            r => format!("-r{r}"),
        };
        let rack_file = dir.join(format!("rack-{r}.toml"));
        cluster.rack(r as usize)?.save(&rack_file)?;
        let mut ports: Vec<PortSpec> = (0..spec.servers)
            .map(|i| PortSpec::new(format!("s{i}"), PortRole::Server))
            .chain([PortSpec::new("spine".to_owned(), PortRole::Client)])
            .collect();
        if r > 0 {
            ports.push(PortSpec::new("prev".to_owned(), PortRole::Upstream));
        }
        if r + 1 < racks {
            ports.push(PortSpec::new("next".to_owned(), PortRole::Downstream));
        }
        let socket = dir.join(format!("switch{suffix}.sock"));
        let config = DaemonConfig {
            ports,
            cluster: Some(rack_file),
            state: dir.join(format!("switch{suffix}-state.json")),
            admin: Some(socket.clone()),
            // Every rack but the tail may serve reads of committed versions.
            mark_committed: r + 1 < racks,
            ..super::switch_config(spec)
        };
        let config_file = dir.join(format!("switch{suffix}.toml"));
        config.save(&config_file)?;
        let tor = rack_tor_ns(name, r);
        let log = dir.join(format!("switch{suffix}.log"));
        let readiness = Readiness::Switch {
            admin: socket.clone(),
        };
        let role = format!("{SWITCH_ROLE}{suffix}");
        let args = super::switch_args(&config_file);
        children.push(start(state, role, &tor, exe, args, log, readiness)?);
        if r == 0 {
            state.admin_socket = Some(socket.clone());
        }
        state.rack_admin_sockets.push(socket);
        only_the_switch_forwards(&tor, spec.port, &dir.join(format!("rack{suffix}.nft")))?;
    }
    save(state, dir)?;
    Ok(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racks_have_addresses_and_names_of_their_own() {
        assert_eq!(
            rack_server_addressing(0, 3),
            super::super::Host::Server(3).addressing()
        );
        assert_eq!(rack_server_ip(2, 5), Ipv4Addr::new(10, 33, 5, 2));
        assert_eq!(rack_tor_ns("x", 0), "pg-x-tor");
        assert_eq!(rack_tor_ns("x", 2), "pg-x-r2-tor");
        assert_eq!(rack_server_ns("x", 1, 4), "pg-x-r1-s4");
        // No rack's subnet meets the clients', the spine's or the links'.
        let subnets: Vec<u8> = (0..RACKS_MAX).map(rack_subnet).collect();
        assert!(subnets.iter().all(|s| ![2, 3, 4, 5].contains(s)));
    }
}
