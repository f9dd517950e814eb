//! A chain of racks on one host: `pegasus lab up --racks N` (N ≥ 2; docs/chain.md).
//!
//! For lab NAME:
//! - rack R has a ToR namespace and server namespaces, as a single rack does (rack 0 keeps the
//!   single rack's names, `pg-NAME-tor` and `pg-NAME-sI`; rack R ≥ 1 is `pg-NAME-rR-tor` and
//!   `pg-NAME-rR-sI`); its server I is `10.S.I.2` with S = 1 + 16·R, and its ToR runs a
//!   switch (with its controller) on ports `sI` (servers), `spine` (clients) and `chain`
//!   (the other racks, role chain);
//! - a spine namespace `pg-NAME-spine` routes between the clients (`pg-NAME-cJ` at
//!   `10.2.J.2`, outside every rack) and every ToR's `spine` port (`10.3.R.2`, the spine at
//!   `10.3.R.1`), with plain kernel forwarding;
//! - the racks reach each other through a fabric namespace `pg-NAME-fabric` (plain kernel
//!   forwarding between its `rR` and ToR R's `chain`, on `10.4.R.0/24`): any rack can reach
//!   any other, so the chain can lose a rack in the middle and bridge the gap, or take a new
//!   rack, without rewiring. Faults can be injected on rack R's link to the fabric (`pegasus
//!   lab fault --link lR`): a ToR's own ports carry XDP programs, which tc programs there
//!   would not see;
//! - the cluster file lists the racks head first; each switch gets its rack's own
//!   (`rack-R.toml`), each store the whole file and its rack (`--rack R`).

use super::{
    HostAddressing, LabSpec, LabState, Readiness, SWITCH_ROLE, client_ns, fault, mac_text, netns,
    only_the_switch_forwards, quiet, save, server_ns, start, tor_ns, wire_host,
};
use crate::service::config::{DaemonConfig, PortSpec};
use anyhow::{Context, Result, ensure};
use pegasus_client::{
    cluster::{Cluster, EtcdRef, Rack, ServerEntry},
    membership::{ChainConfig, Etcd, Versioned},
};
use pegasus_common::roles::PortRole;
use serde::Serialize;
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

/// Most racks in a lab's chain.
pub const RACKS_MAX: u8 = pegasus_client::cluster::RACKS_MAX as u8;
/// etcd's client port, on the spine (the namespace is the lab's own: the port is free).
pub const ETCD_PORT: u16 = 2379;
/// etcd's peer port, on the spine's loopback (a cluster of one).
const ETCD_PEER_PORT: u16 = 2380;
/// How long `add-rack` waits for the new rack to become the tail.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `kill-rack` waits for the chain to go on without the rack.
const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(15);

/// The spine's address that etcd serves clients on: every ToR, store and client of the lab
/// routes to it.
pub fn etcd_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 3, 0, 1)
}

/// The lab's etcd, as its cluster file names it (the chain is named after the lab).
pub fn etcd_ref(name: &str) -> EtcdRef {
    EtcdRef {
        url: format!("http://{}:{ETCD_PORT}", etcd_ip()),
        chain: name.to_owned(),
    }
}

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

/// The fabric namespace, which links the racks' chain ports.
pub fn fabric_ns(name: &str) -> String {
    format!("pg-{name}-fabric")
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

/// Rack `rack`'s link to the fabric, for fault injection: its "host" end is the fabric's
/// interface towards the rack (to-switch: the chain messages coming into the rack; from-switch:
/// those leaving it).
pub fn chain_link(name: &str, rack: u8) -> fault::Link {
    fault::Link {
        host_ns: fabric_ns(name),
        host_interface: format!("r{rack}"),
        tor_ns: rack_tor_ns(name, rack),
        tor_interface: "chain".into(),
    }
}

/// Client `j`'s link in a chain's lab: clients hang off the spine, not a rack.
pub fn client_link(name: &str, j: u8) -> fault::Link {
    fault::Link {
        tor_ns: spine_ns(name),
        ..super::Host::Client(j).link(name)
    }
}

/// A point-to-point veth between two namespaces, on `10.NET.X.0/24` (`.1` on `a`, `.2` on
/// `b`), with static neighbours and offloads off; GRO on both ends (a native XDP redirect
/// into a veth needs NAPI on its peer).
struct P2p {
    a_ns: String,
    a_port: String,
    b_ns: String,
    b_port: String,
    net: u8,
    x: u8,
}

impl P2p {
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
            &self.a_ns,
            "link",
            "add",
            &self.a_port,
            "address",
            &a_mac,
            "type",
            "veth",
            "peer",
            "name",
            &self.b_port,
            "address",
            &b_mac,
            "netns",
            &self.b_ns,
        ])?;
        for (ns, port, ip, peer_ip, peer_mac) in [
            (&self.a_ns, &self.a_port, self.ip(1), self.ip(2), &b_mac),
            (&self.b_ns, &self.b_port, self.ip(2), self.ip(1), &a_mac),
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

/// Builds the namespaces, links and routes of a chain of `spec.racks` racks, starts etcd with
/// the chain's first configuration, writes the cluster files and starts every store and
/// switch. Returns the processes to wait for.
pub(super) fn build(
    spec: &LabSpec,
    exe: &Path,
    dir: &Path,
    state: &mut LabState,
) -> Result<Vec<(Child, PathBuf, Readiness)>> {
    let name = &spec.name;
    ensure!(
        spec.dataplane == super::Dataplane::Xdp,
        "a chain of racks runs the Pegasus switch (--dataplane xdp)"
    );
    let (spine, fabric) = (spine_ns(name), fabric_ns(name));
    for ns in [&spine, &fabric] {
        add_forwarding_ns(ns, state)?;
    }
    for r in 0..spec.racks {
        wire_rack(spec, r, state)?;
    }
    for j in 0..spec.clients {
        let ns = client_ns(name, j);
        netns::add(&ns)?;
        state.namespaces.push(ns.clone());
        quiet(&ns)?;
        wire_host(&spine, &ns, &super::Host::Client(j).addressing())?;
    }
    save(state, dir)?;
    start_etcd(name, dir, state)?;

    let etcd = etcd_ref(name);
    let cluster = Cluster {
        racks: (0..spec.racks).map(|r| rack_entry(spec, r)).collect(),
        etcd: Some(etcd.clone()),
        ..Cluster::default()
    };
    cluster.save(&state.cluster_file)?;
    let first = ChainConfig::from_cluster(&cluster)?;
    in_namespace(&spine, async move {
        let etcd = Etcd::connect(&etcd.url, &etcd.chain).await?;
        etcd.create_config(&first).await
    })
    .context("writing the chain's first configuration to etcd")?;

    let mut children = Vec::new();
    let cluster_file = state.cluster_file.clone();
    for r in 0..spec.racks {
        children.extend(start_rack(spec, exe, dir, state, r, &cluster_file, r)?);
    }
    save(state, dir)?;
    Ok(children)
}

/// Adds namespace `ns` to the lab, forwarding and quiet.
fn add_forwarding_ns(ns: &str, state: &mut LabState) -> Result<()> {
    netns::add(ns)?;
    state.namespaces.push(ns.to_owned());
    netns::exec_in(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    quiet(ns)
}

/// Rack `r`'s namespaces and links: its ToR and servers, its uplink to the spine, its link to
/// the fabric, and the routes between it and every rack made before it.
fn wire_rack(spec: &LabSpec, r: u8, state: &mut LabState) -> Result<()> {
    let name = &spec.name;
    let (spine, fabric, tor) = (spine_ns(name), fabric_ns(name), rack_tor_ns(name, r));
    add_forwarding_ns(&tor, state)?;
    for i in 0..spec.servers {
        let ns = rack_server_ns(name, r, i);
        netns::add(&ns)?;
        state.namespaces.push(ns.clone());
        quiet(&ns)?;
        wire_host(&tor, &ns, &rack_server_addressing(r, i))?;
    }
    // Clients, and the tail's answers to them, reach a rack through the spine.
    let uplink = P2p {
        a_ns: spine.clone(),
        a_port: format!("r{r}"),
        b_ns: tor.clone(),
        b_port: "spine".to_owned(),
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
    // The racks reach each other through the fabric.
    let link = fabric_link(name, r);
    link.wire()?;
    route_to_rack(&fabric, r, link.ip(2))?;
    for other in 0..r {
        route_to_rack(&tor, other, link.ip(1))?;
        route_to_rack(&rack_tor_ns(name, other), r, fabric_link(name, other).ip(1))?;
    }
    Ok(())
}

/// The fabric's link to rack `r`: `rR` in the fabric, `chain` in the ToR, on `10.4.R.0/24`.
fn fabric_link(name: &str, r: u8) -> P2p {
    P2p {
        a_ns: fabric_ns(name),
        a_port: format!("r{r}"),
        b_ns: rack_tor_ns(name, r),
        b_port: "chain".to_owned(),
        net: 4,
        x: r,
    }
}

/// Rack `r`'s entry in a chain's cluster file.
fn rack_entry(spec: &LabSpec, r: u8) -> Rack {
    Rack {
        id: Some(r),
        // Each rack's controller runs in its ToR: a store sees it at the ToR's end of its
        // link.
        controllers: (0..spec.servers)
            .map(|i| IpAddr::V4(rack_server_addressing(r, i).tor_ip))
            .collect(),
        servers: (0..spec.servers)
            .map(|i| ServerEntry {
                id: i,
                addr: SocketAddr::V4(SocketAddrV4::new(rack_server_ip(r, i), spec.port)),
            })
            .collect(),
    }
}

/// Starts rack `r`'s stores (reading `cluster_file`, where the rack is at `index`) and its
/// switch, each following the chain in etcd. Returns the processes to wait for.
fn start_rack(
    spec: &LabSpec,
    exe: &Path,
    dir: &Path,
    state: &mut LabState,
    r: u8,
    cluster_file: &Path,
    index: u8,
) -> Result<Vec<(Child, PathBuf, Readiness)>> {
    let name = &spec.name;
    let mut children = Vec::new();
    for i in 0..spec.servers {
        let role = match r {
            0 => format!("store-{i}"),
            r => format!("store-r{r}-{i}"),
        };
        let address = SocketAddrV4::new(rack_server_ip(r, i), spec.port);
        let mut args = super::store_args(spec, address, i, cluster_file);
        args.extend([
            "--rack".to_owned(),
            index.to_string(),
            "--etcd".to_owned(),
            etcd_ref(name).url,
            "--chain".to_owned(),
            name.clone(),
        ]);
        let ns = rack_server_ns(name, r, i);
        let log = dir.join(format!("{role}.log"));
        let readiness = Readiness::Store {
            namespace: ns.clone(),
            address,
        };
        children.push(start(state, role, &ns, exe, args, log, readiness)?);
    }
    let suffix = match r {
        0 => String::new(),
        r => format!("-r{r}"),
    };
    let rack_file = dir.join(format!("rack-{r}.toml"));
    Cluster {
        controllers: rack_entry(spec, r).controllers,
        servers: rack_entry(spec, r).servers,
        ..Cluster::default()
    }
    .save(&rack_file)?;
    let ports: Vec<PortSpec> = (0..spec.servers)
        .map(|i| PortSpec::new(format!("s{i}"), PortRole::Server))
        .chain([
            PortSpec::new("spine".to_owned(), PortRole::Client),
            PortSpec::new("chain".to_owned(), PortRole::Chain),
        ])
        .collect();
    let socket = dir.join(format!("switch{suffix}.sock"));
    let config = DaemonConfig {
        ports,
        cluster: Some(rack_file),
        state: dir.join(format!("switch{suffix}-state.json")),
        admin: Some(socket.clone()),
        // Every rack but the tail may serve reads of committed versions, and any rack may
        // stop being the tail.
        mark_committed: true,
        etcd: Some(etcd_ref(name).url),
        chain: name.clone(),
        rack_id: Some(r),
        lease_ttl_secs: spec.lease_ttl_secs,
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
    Ok(children)
}

/// What `lab add-rack` did.
#[derive(Clone, Debug, Serialize)]
pub struct RackAdd {
    pub rack: u8,
    /// From the rack's processes serving to its joining the chain in etcd.
    pub started_ms: u64,
    /// From its joining until it was the tail (every key copied to it meanwhile).
    pub joined_ms: u64,
    /// The configuration then: its epoch and racks, head first.
    pub epoch: u64,
    pub racks: Vec<u8>,
}

/// Adds a rack to lab `name`'s chain as its new tail: builds and starts it, writes it into
/// etcd's configuration as joining (the tail copies it every key and forwards it every new
/// write), waits until its controller has made it the tail, and rewrites the lab's cluster
/// file to the chain it joined.
pub fn add_rack(name: &str, exe: &Path) -> Result<RackAdd> {
    ensure!(netns::is_root(), "the lab needs root");
    let mut state = super::load(name)?;
    ensure!(
        state.spec.racks > 1,
        "lab {name:?} is a single rack, not a chain"
    );
    let r = state.spec.racks;
    ensure!(
        r < RACKS_MAX,
        "lab {name:?} has made {r} racks already, the most a lab's addresses allow"
    );
    let dir = super::lab_dir(name);
    let spec = state.spec.clone();
    let started = Instant::now();
    wire_rack(&spec, r, &mut state)?;
    let rack_cluster = dir.join(format!("joining-{r}.toml"));
    Cluster {
        racks: vec![rack_entry(&spec, r)],
        etcd: Some(etcd_ref(name)),
        ..Cluster::default()
    }
    .save(&rack_cluster)?;
    let children = start_rack(&spec, exe, &dir, &mut state, r, &rack_cluster, 0)?;
    state.spec.racks = r + 1;
    save(&state, &dir)?;
    for (mut child, log, readiness) in children {
        super::wait_ready(&mut child, &log, 0, &readiness)?;
    }
    let started_ms = started.elapsed().as_millis() as u64;
    let etcd = etcd_ref(name);
    let entry = rack_entry(&spec, r);
    in_namespace(&spine_ns(name), async move {
        let etcd = Etcd::connect(&etcd.url, &etcd.chain).await?;
        etcd.add_joining(&entry).await.map(|_| ())
    })
    .context("writing the joining rack into etcd")?;
    let joining_at = Instant::now();
    let deadline = joining_at + JOIN_TIMEOUT;
    let config = loop {
        let config = config_in_etcd(name)?.context("the configuration vanished")?;
        if config.config.position(r).is_some() {
            break config.config;
        }
        ensure!(
            config.config.joining_id() == Some(r),
            "rack {r} stopped joining (it or the tail failed): {:?}",
            config.config
        );
        ensure!(
            Instant::now() < deadline,
            "rack {r} was not the tail {JOIN_TIMEOUT:?} after it began joining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    config
        .to_cluster(Some(etcd_ref(name)))
        .save(&state.cluster_file)?;
    Ok(RackAdd {
        rack: r,
        started_ms,
        joined_ms: joining_at.elapsed().as_millis() as u64,
        epoch: config.epoch,
        racks: config.rack_ids(),
    })
}

/// Starts the lab's etcd in the spine namespace (a cluster of one, its data in the lab's
/// directory; a short heartbeat so that a lease of 1 s is honoured) and waits until it serves.
fn start_etcd(name: &str, dir: &Path, state: &mut LabState) -> Result<()> {
    let spine = spine_ns(name);
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    let args: Vec<String> = [
        "--name",
        "lab",
        "--data-dir",
        &dir.join("etcd").display().to_string(),
        "--listen-client-urls",
        &format!("http://0.0.0.0:{ETCD_PORT}"),
        "--advertise-client-urls",
        &etcd_ref(name).url,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("lab={peer}"),
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let readiness = Readiness::Tcp {
        namespace: spine.clone(),
        address: SocketAddrV4::new(etcd_ip(), ETCD_PORT),
    };
    let log = dir.join("etcd.log");
    let (mut child, log, readiness) = start(
        state,
        ETCD_ROLE.to_owned(),
        &spine,
        Path::new("etcd"),
        args,
        log,
        readiness,
    )
    .context("starting etcd (is etcd-server installed? scripts/setup.sh installs it)")?;
    save(state, dir)?;
    super::wait_ready(&mut child, &log, 0, &readiness)
}

/// The lab's etcd's role among its processes.
pub const ETCD_ROLE: &str = "etcd";

/// Runs `future` on a thread of its own inside namespace `ns` (where the lab's addresses are
/// reachable), on a runtime of its own.
pub fn in_namespace<T: Send + 'static>(
    ns: &str,
    future: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let inside = ns.to_owned();
    std::thread::spawn(move || -> Result<T> {
        netns::enter_current_thread(&inside)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(future)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in namespace {ns:?} panicked"))?
}

/// The lab's chain's configuration in etcd.
pub fn config_in_etcd(name: &str) -> Result<Option<Versioned>> {
    let etcd = etcd_ref(name);
    in_namespace(&spine_ns(name), async move {
        Etcd::connect(&etcd.url, &etcd.chain)
            .await?
            .read_config()
            .await
    })
}

/// What `lab kill-rack` did.
#[derive(Clone, Debug, Serialize)]
pub struct RackKill {
    pub rack: u8,
    /// The processes killed (the rack's switch and stores).
    pub killed: Vec<String>,
    /// From the kill until etcd's configuration no longer had the rack.
    pub reconfigured_ms: u64,
    /// The configuration then: its epoch and racks, head first.
    pub epoch: u64,
    pub racks: Vec<u8>,
}

/// Crashes rack `rack` of lab `name` (SIGKILL to its switch, with its controller, and its
/// stores), waits until the chain's configuration goes on without it, and rewrites the
/// lab's cluster file to the chain that is left.
pub fn kill_rack(name: &str, rack: u8) -> Result<RackKill> {
    ensure!(netns::is_root(), "the lab needs root");
    let mut state = super::load(name)?;
    ensure!(
        state.spec.racks > 1,
        "lab {name:?} is a single rack, not a chain"
    );
    let config = config_in_etcd(name)?;
    let config = config.context("the lab's chain has no configuration in etcd")?;
    ensure!(
        config.config.position(rack).is_some(),
        "rack {rack} is not in lab {name:?}'s chain (its racks: {:?})",
        config.config.rack_ids()
    );
    ensure!(
        config.config.racks.len() > 1,
        "rack {rack} is the chain's last rack: killing it would leave nothing to serve"
    );
    let switch = match rack {
        0 => SWITCH_ROLE.to_owned(),
        r => format!("{SWITCH_ROLE}-r{r}"),
    };
    let store_prefix = match rack {
        0 => "store-".to_owned(),
        r => format!("store-r{r}-"),
    };
    let is_rack_store = |role: &str| {
        role.strip_prefix(&store_prefix)
            .is_some_and(|i| i.parse::<u8>().is_ok())
    };
    let (victims, kept): (Vec<_>, Vec<_>) = state
        .processes
        .drain(..)
        .partition(|p| p.role == switch || is_rack_store(&p.role));
    state.processes = kept;
    let killed_at = Instant::now();
    for p in &victims {
        super::kill_now(p.pid as i32).with_context(|| format!("killing {}", p.role))?;
    }
    super::save(&state, &super::lab_dir(name))?;
    let deadline = killed_at + RECONFIGURE_TIMEOUT;
    let now = loop {
        let config = config_in_etcd(name)?;
        if let Some(v) = config.filter(|v| v.config.position(rack).is_none()) {
            let cluster = v.config.to_cluster(Some(etcd_ref(name)));
            cluster.save(&state.cluster_file)?;
            break v.config;
        }
        ensure!(
            Instant::now() < deadline,
            "the chain still had rack {rack} {RECONFIGURE_TIMEOUT:?} after it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(RackKill {
        rack,
        killed: victims.into_iter().map(|p| p.role).collect(),
        reconfigured_ms: killed_at.elapsed().as_millis() as u64,
        epoch: now.epoch,
        racks: now.rack_ids(),
    })
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
