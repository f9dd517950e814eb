//! An emulated rack on one Linux host.
//!
//! `up` builds, for a lab called NAME:
//! - namespace `pg-NAME-tor`, the top-of-rack switch, with one port per host: `sI` towards
//!   server I and `cJ` towards client J, IPv4 forwarding on;
//! - namespaces `pg-NAME-sI` (a store listening on `10.1.I.2`) and `pg-NAME-cJ` (`10.2.J.2`),
//!   each with an `eth0` whose default route is the ToR (`10.1.I.1` / `10.2.J.1`);
//! - static neighbour entries everywhere (so that the XDP switch's FIB lookups succeed from the
//!   first packet), TX checksum offload off on every veth (a partial checksum would reach the
//!   receiver broken once XDP forwards the frame), GRO on the host ends (native XDP redirect
//!   into a veth needs NAPI on the peer);
//! - a store process per server namespace and, with the XDP dataplane, the switch process in
//!   the ToR namespace, whose kernel forwards no store traffic itself (`rack.nft`: when the
//!   switch is down, nothing is forwarded, as with a real one); `cluster.toml` for clients.
//!
//! With `--racks N` (N ≥ 2), a chain of N such racks, linked through a spine and through link
//! namespaces between consecutive racks ([`chain`]).
//!
//! `restart_switch` crashes the switch and starts it again, for fault experiments.
//!
//! Everything it creates is named after NAME, so labs and parallel tests never collide, and
//! `down` removes all of it: processes (found through the namespaces, so also after a failed
//! `up` or a lost state file), namespaces, and the state directory.

pub mod chain;
pub mod fault;
pub mod netns;

use crate::{
    controller::hotkeys::{SAMPLES_PER_SECOND_DEFAULT, STATS_INTERVAL_MS_DEFAULT},
    service::{
        admin,
        config::{DaemonConfig, LEASE_TTL_SECS_DEFAULT, PolicyName, PortSpec},
    },
    switch::AttachMode,
};
use anyhow::{Context, Result, bail, ensure};
use pegasus_client::cluster::{Cluster, ServerEntry};
use pegasus_common::{
    directory::SERVERS_MAX,
    hash::key_hash,
    roles::PortRole,
    switch::{REPLICATION_DEFAULT, SAMPLE_PERIOD_DEFAULT},
    wire::{self, DEFAULT_PORT, Header, Message, Op},
};
use serde::{Deserialize, Serialize};
use std::{
    ffi::OsStr,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// Most client namespaces.
pub const CLIENTS_MAX: u8 = 64;
/// The client id of the lab's readiness probes (the stores answer any client id).
const LAB_PROBE_CLIENT_ID: u16 = 0xfffe;
/// Longest lab name.
pub const NAME_LEN_MAX: usize = 24;
/// How long `up` waits for a store or the switch to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `down` waits for a process to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The switch's role among the lab's processes.
const SWITCH_ROLE: &str = "switch";
/// How long one readiness probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Which dataplane forwards between the rack's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataplane {
    /// The Pegasus XDP switch on every ToR port.
    Xdp,
    /// Plain kernel IPv4 forwarding: the no-switch baseline.
    Kernel,
    /// The in-switch cache baseline (`pegasus switch --cache`, NetCache-style) on every ToR
    /// port.
    Cache,
}

impl Dataplane {
    /// Whether a `pegasus switch` runs on the ToR (with its admin socket and nftables rule).
    pub fn runs_switch(self) -> bool {
        matches!(self, Dataplane::Xdp | Dataplane::Cache)
    }
}

impl std::str::FromStr for Dataplane {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "xdp" => Ok(Dataplane::Xdp),
            "kernel" => Ok(Dataplane::Kernel),
            "cache" => Ok(Dataplane::Cache),
            _ => bail!("unknown dataplane {s:?} (expected xdp, kernel or cache)"),
        }
    }
}

/// What to build: `pegasus lab up`'s flags, saved with the lab's state.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct LabSpec {
    /// The lab's name (a-z, 0-9, '-'); every namespace and file it makes carries it.
    #[arg(long)]
    pub name: String,
    /// Number of storage servers (1-64).
    #[arg(long, default_value_t = 4)]
    pub servers: u8,
    /// Number of client namespaces (1-64).
    #[arg(long, default_value_t = 1)]
    pub clients: u8,
    /// Racks in a chain (1-8): each holds every key, a write crosses them all, head first,
    /// and the tail answers (docs/chain.md). 1 is a single rack.
    #[arg(long, default_value_t = 1)]
    #[serde(default = "default_racks")]
    pub racks: u8,
    /// Give every store an emulated service rate (requests per second), so that a hot
    /// server saturates as a real one would.
    #[arg(long)]
    pub capacity_ops: Option<u32>,
    /// What forwards on the ToR: xdp (the Pegasus switch), kernel (plain kernel forwarding,
    /// the no-switch baseline) or cache (the in-switch cache baseline, NetCache-style:
    /// `pegasus switch --cache`).
    #[arg(long, default_value = "xdp")]
    pub dataplane: Dataplane,
    /// XDP attach mode on the ToR ports.
    #[arg(long, default_value = "native")]
    pub mode: AttachMode,
    /// The stores' UDP port.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Worker threads per store (the lab shares this host's cores among all of them).
    #[arg(long, default_value_t = 1)]
    pub store_threads: usize,
    /// Copies of each hot key (the switch's --replication).
    #[arg(long, default_value_t = REPLICATION_DEFAULT)]
    pub replication: u8,
    /// How the switch picks a server for a hot key (the switch's --policy).
    #[arg(long, value_enum, default_value_t = DaemonConfig::default().policy)]
    #[serde(default = "default_policy")]
    pub policy: PolicyName,
    /// Most hot keys in the switch's directory (default: the switch's, from the rack's size).
    #[arg(long)]
    #[serde(default)]
    pub directory_capacity: Option<u32>,
    /// Hot keys the switch's controller finds and keeps by itself (the switch's
    /// --hot-keys; default n·log2(n) for n servers, at least 16); 0 leaves the directory to
    /// `switch hot add|del`.
    #[arg(long)]
    #[serde(default)]
    pub hot_keys: Option<u32>,
    /// The switch's --stats-interval-ms (hot-key detection's statistics interval).
    #[arg(long, alias = "epoch-ms", default_value_t = STATS_INTERVAL_MS_DEFAULT)]
    #[serde(default = "default_stats_interval_ms", alias = "epoch_ms")]
    pub stats_interval_ms: u64,
    /// The switch's --sample-period (one request in N sampled).
    #[arg(long, alias = "sample-rate", default_value_t = SAMPLE_PERIOD_DEFAULT)]
    #[serde(default, alias = "sample_rate")]
    pub sample_period: u16,
    /// The switch's --sample-target (samples a second its controller aims for; 0: always one
    /// in --sample-period).
    #[arg(long, default_value_t = SAMPLES_PER_SECOND_DEFAULT)]
    #[serde(default = "default_sample_target")]
    pub sample_target: u32,
    /// In a chain: the racks' controllers' lease in etcd, in seconds. A rack whose switch is
    /// down longer than this (a crash, or `lab restart-switch`) is taken out of the chain.
    #[arg(long, default_value_t = LEASE_TTL_SECS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
}

fn default_lease_ttl_secs() -> u64 {
    LEASE_TTL_SECS_DEFAULT
}

fn default_racks() -> u8 {
    1
}

fn default_stats_interval_ms() -> u64 {
    STATS_INTERVAL_MS_DEFAULT
}

fn default_policy() -> PolicyName {
    DaemonConfig::default().policy
}

fn default_sample_target() -> u32 {
    SAMPLES_PER_SECOND_DEFAULT
}

impl LabSpec {
    fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        ensure!(
            (1..=SERVERS_MAX).contains(&u32::from(self.servers)),
            "--servers must be between 1 and {SERVERS_MAX}"
        );
        ensure!(
            (1..=CLIENTS_MAX).contains(&self.clients),
            "--clients must be between 1 and {CLIENTS_MAX}"
        );
        ensure!(
            (1..=chain::RACKS_MAX).contains(&self.racks),
            "--racks must be between 1 and {}",
            chain::RACKS_MAX
        );
        ensure!(self.port != 0, "--port must not be 0");
        ensure!(self.store_threads >= 1, "stores need at least one thread");
        if let Some(c) = self.capacity_ops {
            ensure!(c > 0, "--capacity-ops must be positive");
        }
        Ok(())
    }
}

/// A process the lab started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabProcess {
    pub role: String,
    pub namespace: String,
    pub pid: u32,
    pub log: PathBuf,
    /// Its `pegasus` arguments, to start it again the same way.
    #[serde(default)]
    pub args: Vec<String>,
}

/// What `up` built; saved as `state.json` in the lab's directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub spec: LabSpec,
    pub namespaces: Vec<String>,
    pub processes: Vec<LabProcess>,
    pub cluster_file: PathBuf,
    /// The switch's admin socket (XDP dataplane only; in a chain, the head's).
    pub admin_socket: Option<PathBuf>,
    /// In a chain, every rack's switch's admin socket, head first (empty for one rack).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rack_admin_sockets: Vec<PathBuf>,
}

/// The lab's directory: `$PEGASUS_LAB_DIR/NAME`, by default `/run/pegasus/lab/NAME`.
pub fn lab_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("PEGASUS_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/pegasus/lab"));
    root.join(name)
}

/// The ToR namespace of lab `name`.
pub fn tor_ns(name: &str) -> String {
    format!("pg-{name}-tor")
}

/// The namespace of server `i`.
pub fn server_ns(name: &str, i: u8) -> String {
    format!("pg-{name}-s{i}")
}

/// The namespace of client `j`.
pub fn client_ns(name: &str, j: u8) -> String {
    format!("pg-{name}-c{j}")
}

/// A host of the rack: server `I` or client `J`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Server(u8),
    Client(u8),
}

/// The lab's addressing, the one place it is written: host `I` of kind `K` (1 = servers,
/// 2 = clients) is `10.K.I.2` with MAC `02:00:00:K:I:02`, behind the ToR's port (`sI` or
/// `cJ`) at `10.K.I.1` with MAC `02:00:00:K:I:01`, on a /24 of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAddressing {
    /// The ToR's port towards the host.
    pub tor_port: String,
    pub tor_ip: Ipv4Addr,
    pub tor_mac: [u8; 6],
    pub host_ip: Ipv4Addr,
    pub host_mac: [u8; 6],
}

impl Host {
    /// Where the host sits in the lab's addressing plan.
    pub fn addressing(self) -> HostAddressing {
        let (kind, index, port) = match self {
            Host::Server(i) => (1u8, i, format!("s{i}")),
            Host::Client(j) => (2u8, j, format!("c{j}")),
        };
        HostAddressing {
            tor_port: port,
            tor_ip: Ipv4Addr::new(10, kind, index, 1),
            tor_mac: [0x02, 0, 0, kind, index, 0x01],
            host_ip: Ipv4Addr::new(10, kind, index, 2),
            host_mac: [0x02, 0, 0, kind, index, 0x02],
        }
    }
}

impl Host {
    /// This host's namespace in lab `name`.
    pub fn namespace(self, name: &str) -> String {
        match self {
            Host::Server(i) => server_ns(name, i),
            Host::Client(j) => client_ns(name, j),
        }
    }

    /// The link between this host and the ToR of lab `name`, for fault injection.
    pub fn link(self, name: &str) -> fault::Link {
        fault::Link {
            host_ns: self.namespace(name),
            host_interface: "eth0".into(),
            tor_ns: tor_ns(name),
            tor_interface: self.addressing().tor_port,
        }
    }
}

/// The ToR port towards server `i`.
pub fn server_port_name(i: u8) -> String {
    Host::Server(i).addressing().tor_port
}

/// The ToR port towards client `j`.
pub fn client_port_name(j: u8) -> String {
    Host::Client(j).addressing().tor_port
}

/// Server `i`'s address.
pub fn server_ip(i: u8) -> Ipv4Addr {
    Host::Server(i).addressing().host_ip
}

/// Client `j`'s address.
pub fn client_ip(j: u8) -> Ipv4Addr {
    Host::Client(j).addressing().host_ip
}

/// A MAC address as `ip` writes it.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn validate_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= NAME_LEN_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "a lab name is 1 to {NAME_LEN_MAX} characters of a-z, 0-9 and '-' (got {name:?})"
    );
    Ok(())
}

/// True when `ns` is one of lab `name`'s namespaces (`tor`, `sI`, `cJ`; in a chain also
/// `spine`, `lR`, `rR-tor`, `rR-sI`), and no other lab's.
fn belongs_to(name: &str, ns: &str) -> bool {
    let Some(rest) = ns.strip_prefix(&format!("pg-{name}-")) else {
        return false;
    };
    let numbered = |text: &str, prefix: char| {
        text.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let in_rack = |text: &str| text == "tor" || numbered(text, 's');
    in_rack(rest)
        || numbered(rest, 'c')
        || numbered(rest, 'l')
        || rest == "spine"
        || rest == "fabric"
        || rest
            .split_once('-')
            .is_some_and(|(rack, host)| numbered(rack, 'r') && in_rack(host))
}

/// Builds the lab and starts its processes. On any failure, everything already made is removed
/// again before the error is returned. `exe` is the `pegasus` binary to start.
pub fn up(spec: &LabSpec, exe: &Path) -> Result<LabState> {
    spec.validate()?;
    ensure!(
        netns::is_root(),
        "the lab needs root (network namespaces, XDP)"
    );
    let dir = lab_dir(&spec.name);
    ensure!(
        !dir.exists() && !netns::list()?.iter().any(|ns| belongs_to(&spec.name, ns)),
        "lab {:?} already exists; run `pegasus lab down --name {}` first",
        spec.name,
        spec.name
    );
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    match build(spec, exe, &dir) {
        Ok(state) => Ok(state),
        Err(e) => {
            if let Err(cleanup) = down(&spec.name) {
                tracing::warn!("cleaning up after a failed lab up: {cleanup:#}");
            }
            Err(e)
        }
    }
}

fn build(spec: &LabSpec, exe: &Path, dir: &Path) -> Result<LabState> {
    let mut state = LabState {
        spec: spec.clone(),
        namespaces: Vec::new(),
        processes: Vec::new(),
        cluster_file: dir.join("cluster.toml"),
        admin_socket: None,
        rack_admin_sockets: Vec::new(),
    };
    let children = if spec.racks > 1 {
        chain::build(spec, exe, dir, &mut state)?
    } else {
        build_rack(spec, exe, dir, &mut state)?
    };
    for (mut child, log, readiness) in children {
        wait_ready(&mut child, &log, 0, &readiness)?;
    }
    Ok(state)
}

/// The arguments of server `id`'s store, listening on `address`.
fn store_args(spec: &LabSpec, address: SocketAddrV4, id: u8, cluster: &Path) -> Vec<String> {
    let mut args = vec![
        "store".to_owned(),
        "--listen".to_owned(),
        address.to_string(),
        "--server-id".to_owned(),
        id.to_string(),
        "--threads".to_owned(),
        spec.store_threads.to_string(),
        "--cluster".to_owned(),
        cluster.display().to_string(),
    ];
    if let Some(c) = spec.capacity_ops {
        args.extend(["--capacity-ops".to_owned(), c.to_string()]);
    }
    if spec.dataplane.runs_switch() {
        // Every honest write crosses the switch, which stamps it.
        args.push("--require-stamped".to_owned());
    }
    args
}

/// A switch's settings from the lab's flags (ports, files and sockets are the caller's).
fn switch_config(spec: &LabSpec) -> DaemonConfig {
    DaemonConfig {
        mode: spec.mode,
        store_port: spec.port,
        replication: spec.replication,
        policy: spec.policy,
        directory_capacity: spec.directory_capacity,
        hot_keys: spec.hot_keys,
        stats_interval_ms: spec.stats_interval_ms,
        sample_period: spec.sample_period,
        sample_target: spec.sample_target,
        cache: spec.dataplane == Dataplane::Cache,
        ..DaemonConfig::default()
    }
}

/// One rack: builds it and starts its processes; returns them to wait for.
fn build_rack(
    spec: &LabSpec,
    exe: &Path,
    dir: &Path,
    state: &mut LabState,
) -> Result<Vec<(Child, PathBuf, Readiness)>> {
    let name = &spec.name;
    let tor = tor_ns(name);
    state.namespaces.push(tor.clone());
    netns::add(&tor)?;
    netns::exec_in(&tor, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    quiet(&tor)?;

    let hosts = (0..spec.servers)
        .map(|i| (server_ns(name, i), Host::Server(i)))
        .chain((0..spec.clients).map(|j| (client_ns(name, j), Host::Client(j))));
    for (ns, host) in hosts {
        netns::add(&ns)?;
        state.namespaces.push(ns.clone());
        quiet(&ns)?;
        wire_host(&tor, &ns, &host.addressing())?;
    }
    save(state, dir)?;

    let cluster = Cluster {
        // The controller runs in the ToR: a store sees it at the ToR's end of its link.
        controllers: (0..spec.servers)
            .map(|i| IpAddr::V4(Host::Server(i).addressing().tor_ip))
            .collect(),
        servers: (0..spec.servers)
            .map(|i| ServerEntry {
                id: i,
                addr: SocketAddr::V4(SocketAddrV4::new(server_ip(i), spec.port)),
            })
            .collect(),
        ..Cluster::default()
    };
    cluster.save(&state.cluster_file)?;

    let mut children: Vec<(Child, PathBuf, Readiness)> = Vec::new();
    for i in 0..spec.servers {
        let ns = server_ns(name, i);
        let log = dir.join(format!("store-{i}.log"));
        let address = SocketAddrV4::new(server_ip(i), spec.port);
        let args = store_args(spec, address, i, &state.cluster_file);
        let readiness = Readiness::Store {
            namespace: ns.clone(),
            address,
        };
        let started = start(state, format!("store-{i}"), &ns, exe, args, log, readiness)?;
        children.push(started);
    }

    if spec.dataplane.runs_switch() {
        let socket = dir.join("switch.sock");
        let log = dir.join("switch.log");
        let ports: Vec<PortSpec> = (0..spec.servers)
            .map(|i| PortSpec::new(server_port_name(i), PortRole::Server))
            .chain((0..spec.clients).map(|j| PortSpec::new(client_port_name(j), PortRole::Client)))
            .collect();
        let config = DaemonConfig {
            ports,
            cluster: Some(state.cluster_file.clone()),
            state: dir.join("switch-state.json"),
            admin: Some(socket.clone()),
            ..switch_config(spec)
        };
        let config_file = dir.join("switch.toml");
        config.save(&config_file)?;
        let readiness = Readiness::Switch {
            admin: socket.clone(),
        };
        let args = switch_args(&config_file);
        let role = SWITCH_ROLE.to_owned();
        children.push(start(state, role, &tor, exe, args, log, readiness)?);
        state.admin_socket = Some(socket);
        only_the_switch_forwards(&tor, spec.port, &dir.join("rack.nft"))?;
    }
    save(state, dir)?;
    Ok(children)
}

/// Turns IPv6 off in a lab namespace (before its interfaces exist): the rack speaks IPv4,
/// and without router solicitations and multicast reports an interface's counters count the
/// rack's own traffic only (the trust tests measure what a datagram causes by them).
fn quiet(ns: &str) -> Result<()> {
    for key in ["all", "default"] {
        netns::exec_in(
            ns,
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{key}.disable_ipv6=1")],
        )?;
    }
    Ok(())
}

/// Stops the ToR namespace's kernel from forwarding store traffic (UDP to or from the store
/// port), with an nftables rule written to `rules` (`DIR/rack.nft`). The XDP program's redirects bypass
/// netfilter, so while the switch runs this drops nothing; while it is down (stopped,
/// crashed, restarting: its XDP program detached) the kernel would otherwise forward requests
/// straight to the servers they are addressed to, past the directory, and a read of a key
/// whose newest version sits on another replica would be stale. A dead switch forwards
/// nothing; neither does the lab's.
fn only_the_switch_forwards(tor: &str, port: u16, rules: &Path) -> Result<()> {
    fs::write(
        rules,
        format!(
            "# Written by `pegasus lab up`: only the XDP switch forwards store traffic.\n\
             table inet pegasus_lab {{\n\
             \tchain switch_only {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tudp dport {port} counter drop\n\
             \t\tudp sport {port} counter drop\n\
             \t}}\n\
             }}\n"
        ),
    )
    .with_context(|| format!("writing {}", rules.display()))?;
    netns::exec_in(tor, "nft", &["-f", &rules.display().to_string()])
        .context("installing the ToR's nftables rule (is nftables installed?)")?;
    Ok(())
}

/// What [`restart_switch`] or [`restart_store`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Restart {
    /// The process killed.
    pub killed_pid: u32,
    /// The new process.
    pub pid: u32,
    /// From the kill to the new process's start.
    pub down_ms: u64,
    /// From the new process's start until it served again (for the switch: recovery of the
    /// keys that were hot included).
    pub recovery_ms: u64,
}

/// Crashes lab `name`'s switch (SIGKILL: nothing of it runs after, and the kernel detaches its
/// program: the rack forwards nothing), waits until `down` has passed, starts it again with the
/// same arguments (so the same state file) and waits until it forwards. `exe` is the
/// `pegasus` binary to start.
pub fn restart_switch(name: &str, down: Duration, exe: &Path) -> Result<Restart> {
    restart_process(name, SWITCH_ROLE, down, exe)
}

/// As [`restart_switch`], for rack `rack` of a chain (rack 0: the head, as `restart_switch`).
pub fn restart_rack_switch(name: &str, rack: u8, down: Duration, exe: &Path) -> Result<Restart> {
    match rack {
        0 => restart_switch(name, down, exe),
        r => restart_process(name, &format!("{SWITCH_ROLE}-r{r}"), down, exe),
    }
}

/// Stops lab `name`'s etcd (SIGKILL), waits until `down` has passed and starts it again
/// with its data: meanwhile the chain serves with the configuration it last read, and no
/// rack can be taken out or join (docs/chain.md, "When etcd is away").
pub fn restart_etcd(name: &str, down: Duration) -> Result<Restart> {
    restart_process(name, chain::ETCD_ROLE, down, Path::new("etcd"))
}

/// Crashes server `server`'s store in lab `name` (SIGKILL: it loses every key it held, as a
/// store without replicas across racks does), waits until `down` has passed and starts it
/// again, empty, with the same arguments.
pub fn restart_store(name: &str, server: u8, down: Duration, exe: &Path) -> Result<Restart> {
    restart_process(name, &format!("store-{server}"), down, exe)
}

fn restart_process(name: &str, role: &str, down: Duration, exe: &Path) -> Result<Restart> {
    ensure!(netns::is_root(), "the lab needs root");
    let mut state = load(name)?;
    let index = state
        .processes
        .iter()
        .position(|p| p.role == role)
        .with_context(|| match role {
            SWITCH_ROLE => format!("lab {name:?} has no switch (its dataplane is kernel)"),
            _ => format!("lab {name:?} has no {role}"),
        })?;
    let process = state.processes[index].clone();
    ensure!(
        !process.args.is_empty(),
        "lab {name:?} was made by an older pegasus that did not record its processes' arguments"
    );
    let readiness = match role.strip_prefix("store-") {
        _ if role == chain::ETCD_ROLE => Readiness::Tcp {
            namespace: process.namespace.clone(),
            address: SocketAddrV4::new(chain::etcd_ip(), chain::ETCD_PORT),
        },
        Some(server) => Readiness::Store {
            namespace: process.namespace.clone(),
            address: SocketAddrV4::new(server_ip(server.parse()?), state.spec.port),
        },
        None => {
            // A chain's rack R > 0 runs `switch-rR`, with its own admin socket.
            let rack = role
                .strip_prefix(&format!("{SWITCH_ROLE}-r"))
                .map(|r| r.parse::<usize>())
                .transpose()?;
            let admin = match rack {
                Some(r) => state.rack_admin_sockets.get(r).cloned(),
                None => state.admin_socket.clone(),
            };
            Readiness::Switch {
                admin: admin
                    .with_context(|| format!("lab {name:?} has a {role} but no admin socket"))?,
            }
        }
    };
    let killed = Instant::now();
    kill_now(process.pid as i32).with_context(|| format!("killing {role}"))?;
    std::thread::sleep(down.saturating_sub(killed.elapsed()));
    let log_len = fs::metadata(&process.log).map_or(0, |m| m.len() as usize);
    let started = Instant::now();
    let mut child = spawn_in(&process.namespace, exe, &process.args, &process.log)?;
    let down_ms = started.duration_since(killed).as_millis() as u64;
    state.processes[index].pid = child.id();
    save(&state, &lab_dir(name))?;
    wait_ready(&mut child, &process.log, log_len, &readiness)?;
    Ok(Restart {
        killed_pid: process.pid,
        pid: child.id(),
        down_ms,
        recovery_ms: started.elapsed().as_millis() as u64,
    })
}

/// Creates the veth pair between the ToR and host namespace `ns`, with addresses, routes,
/// static neighbours and offload settings.
fn wire_host(tor: &str, ns: &str, a: &HostAddressing) -> Result<()> {
    let (port, tor_ip, host_ip) = (a.tor_port.as_str(), a.tor_ip, a.host_ip);
    let (tor_mac, host_mac) = (mac_text(a.tor_mac), mac_text(a.host_mac));
    netns::ip(&[
        "-n", tor, "link", "add", port, "address", &tor_mac, "type", "veth", "peer", "name",
        "eth0", "address", &host_mac, "netns", ns,
    ])?;
    netns::ip(&[
        "-n",
        tor,
        "addr",
        "add",
        &format!("{tor_ip}/24"),
        "dev",
        port,
    ])?;
    netns::ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{host_ip}/24"),
        "dev",
        "eth0",
    ])?;
    netns::ip(&["-n", tor, "link", "set", port, "up"])?;
    netns::ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    netns::ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &tor_ip.to_string(),
    ])?;
    let (tor_ip, host_ip) = (tor_ip.to_string(), host_ip.to_string());
    netns::set_neighbour(tor, &host_ip, &host_mac, port)?;
    netns::set_neighbour(ns, &tor_ip, &tor_mac, "eth0")?;
    netns::exec_in(tor, "ethtool", &["-K", port, "tx", "off"])?;
    netns::exec_in(ns, "ethtool", &["-K", "eth0", "tx", "off", "gro", "on"])?;
    Ok(())
}

/// The arguments of a switch run from its configuration file.
fn switch_args(config_file: &Path) -> Vec<String> {
    vec![
        "switch".to_owned(),
        "--config".to_owned(),
        config_file.display().to_string(),
    ]
}

/// Starts `exe ARGS` in `namespace` as the lab's process `role` (its output appended to
/// `log`), records it in `state`, and returns it with how to know that it is ready.
fn start(
    state: &mut LabState,
    role: String,
    namespace: &str,
    exe: &Path,
    args: Vec<String>,
    log: PathBuf,
    readiness: Readiness,
) -> Result<(Child, PathBuf, Readiness)> {
    let child = spawn_in(namespace, exe, &args, &log)?;
    state.processes.push(LabProcess {
        role,
        namespace: namespace.to_owned(),
        pid: child.id(),
        log: log.clone(),
        args,
    });
    Ok((child, log, readiness))
}

/// Starts `exe ARGS` in namespace `ns`, its output appended to `log`.
fn spawn_in(ns: &str, exe: &Path, args: &[String], log: &Path) -> Result<Child> {
    let out = fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; it detaches the process from our session so that
    // it outlives `lab up` and a Ctrl-C in its terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {} in {ns}", exe.display()))
}

/// How the lab knows that a process it started serves.
enum Readiness {
    /// A store answers a GET on its port (probed from inside its namespace).
    Store {
        namespace: String,
        address: SocketAddrV4,
    },
    /// The switch answers a status request on its admin socket (served once it is attached).
    Switch { admin: PathBuf },
    /// A TCP server (etcd) accepts connections at `address` from inside `namespace`.
    Tcp {
        namespace: String,
        address: SocketAddrV4,
    },
}

impl Readiness {
    /// One probe: Ok once the process serves.
    fn probe(&self) -> Result<()> {
        match self {
            Readiness::Store { namespace, address } => probe_store(namespace, *address),
            Readiness::Switch { admin } => admin::probe(admin, PROBE_TIMEOUT).map(drop),
            Readiness::Tcp { namespace, address } => probe_tcp(namespace, *address),
        }
    }
}

/// Connects to `address` over TCP from inside namespace `ns`.
fn probe_tcp(ns: &str, address: SocketAddrV4) -> Result<()> {
    let ns = ns.to_owned();
    std::thread::spawn(move || -> Result<()> {
        netns::enter_current_thread(&ns)?;
        std::net::TcpStream::connect_timeout(&address.into(), PROBE_TIMEOUT)
            .with_context(|| format!("connecting to {address}"))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}

/// Sends a GET to the store at `address` from inside namespace `ns` and waits for any reply.
fn probe_store(ns: &str, address: SocketAddrV4) -> Result<()> {
    let ns = ns.to_owned();
    // setns(2) moves the calling thread: a thread of its own, gone after the probe.
    std::thread::spawn(move || -> Result<()> {
        netns::enter_current_thread(&ns)?;
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(PROBE_TIMEOUT))?;
        let key = b"pegasus-lab-probe";
        let header = Header::request(Op::Get, key_hash(key), LAB_PROBE_CLIENT_ID, 1, 0);
        let request = Message::new(header, key, &[]).to_vec()?;
        socket.send_to(&request, address)?;
        let mut reply = [0u8; wire::MAX_PAYLOAD_LEN];
        let (len, from) = socket.recv_from(&mut reply)?;
        ensure!(
            from == std::net::SocketAddr::V4(address),
            "a reply from {from}"
        );
        let header = Header::decode(&reply[..len])?;
        // Outside a chain's tail, a store refuses a GET (WrongRack): it answers all the same.
        ensure!(
            matches!(header.op(), Some(Op::GetReply | Op::Error)),
            "not a GET reply"
        );
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the store probe panicked"))?
}

/// Waits until the process is ready (see [`Readiness`]); on failure, the error shows its log
/// after its first `from` bytes.
fn wait_ready(child: &mut Child, log: &Path, from: usize, readiness: &Readiness) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let log_text = || {
        let text = fs::read(log).unwrap_or_default();
        String::from_utf8_lossy(text.get(from..).unwrap_or_default()).into_owned()
    };
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "process exited ({status}) before it was ready; its log {}:\n{}",
                log.display(),
                tail(&log_text(), 20)
            );
        }
        let probed = readiness.probe();
        if probed.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "not ready after {READY_TIMEOUT:?} ({:#}); its log {}:\n{}",
                probed.unwrap_err(),
                log.display(),
                tail(&log_text(), 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn save(state: &LabState, dir: &Path) -> Result<()> {
    let path = dir.join("state.json");
    fs::write(&path, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads the state of lab `name`.
pub fn load(name: &str) -> Result<LabState> {
    validate_name(name)?;
    let path = lab_dir(name).join("state.json");
    let bytes = fs::read(&path)
        .with_context(|| format!("no lab {name:?} is up (cannot read {})", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("corrupt {}", path.display()))
}

/// What `down` removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DownReport {
    pub processes_stopped: usize,
    pub namespaces_removed: Vec<String>,
    pub dir_removed: bool,
}

/// Removes everything lab `name` made. Safe to run twice, after a failed `up`, or without a
/// state file: processes are found through the lab's namespaces.
pub fn down(name: &str) -> Result<DownReport> {
    validate_name(name)?;
    ensure!(netns::is_root(), "the lab needs root");
    let mut report = DownReport::default();
    // Every namespace named as the lab's, and every one its state says it made.
    let recorded = load(name).map_or(Vec::new(), |state| state.namespaces);
    let namespaces: Vec<String> = netns::list()?
        .into_iter()
        .filter(|ns| belongs_to(name, ns) || recorded.contains(ns))
        .collect();
    let mut pids = Vec::new();
    for ns in &namespaces {
        for line in netns::ip(&["netns", "pids", ns])?.lines() {
            if let Ok(pid) = line.trim().parse::<i32>() {
                pids.push(pid);
            }
        }
    }
    report.processes_stopped = stop_processes(&pids);
    for ns in &namespaces {
        netns::delete(ns)?;
        report.namespaces_removed.push(ns.clone());
    }
    let dir = lab_dir(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        report.dir_removed = true;
    }
    Ok(report)
}

/// SIGKILL to a process the lab started, and waits until it is gone (at most
/// [`STOP_TIMEOUT`]).
fn kill_now(pid: i32) -> Result<()> {
    if !alive(pid) {
        return Ok(());
    }
    // SAFETY: kill(2) of a pid the lab started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) {
        ensure!(
            Instant::now() < deadline,
            "{pid} still alive {STOP_TIMEOUT:?} after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// SIGTERM, then SIGKILL for whatever is still alive after [`STOP_TIMEOUT`].
fn stop_processes(pids: &[i32]) -> usize {
    for &pid in pids {
        // SAFETY: kill(2) with a pid we found in the lab's namespaces.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    pids.len()
}

/// True while `pid` runs (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A lab's processes and, for the XDP dataplane, the switch's status.
#[derive(Clone, Debug, Serialize)]
pub struct LabStatus {
    pub name: String,
    pub dataplane: Dataplane,
    pub namespaces: Vec<String>,
    pub processes: Vec<(String, u32, bool)>,
    /// The switch's status (in a chain, the head's).
    pub switch: Option<admin::Status>,
    /// In a chain, every rack's switch's status by rack id (`None`: the rack was killed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub racks: Vec<Option<admin::Status>>,
}

/// Reads the state of lab `name` and asks its switch for counters.
pub async fn status(name: &str) -> Result<LabStatus> {
    let state = load(name)?;
    let present = netns::list()?;
    // A switch the lab killed (`lab kill-rack`) is no longer among its processes.
    let running = |role: &str| state.processes.iter().any(|p| p.role == role);
    let switch = match &state.admin_socket {
        Some(path) if running(SWITCH_ROLE) => Some(admin::status(path).await?),
        _ => None,
    };
    let mut racks = Vec::new();
    for (r, path) in state.rack_admin_sockets.iter().enumerate() {
        let role = match r {
            0 => SWITCH_ROLE.to_owned(),
            r => format!("{SWITCH_ROLE}-r{r}"),
        };
        racks.push(match running(&role) {
            true => Some(admin::status(path).await?),
            false => None,
        });
    }
    Ok(LabStatus {
        name: name.to_owned(),
        dataplane: state.spec.dataplane,
        namespaces: state
            .namespaces
            .iter()
            .filter(|ns| present.contains(ns))
            .cloned()
            .collect(),
        processes: state
            .processes
            .iter()
            .map(|p| (p.role.clone(), p.pid, alive(p.pid as i32)))
            .collect(),
        switch,
        racks,
    })
}

/// Runs `command` in client namespace `client` of lab `name`, with `PEGASUS_CLUSTER` set.
pub fn run(name: &str, client: u8, command: &[String]) -> Result<ExitStatus> {
    let (program, args) = command
        .split_first()
        .context("no command given (usage: pegasus lab run --name NAME -- CMD ARGS...)")?;
    client_command(name, client, program)?
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))
}

/// `program`, to be run in client namespace `client` of lab `name` with `PEGASUS_CLUSTER`
/// set; its arguments are the caller's to add.
pub fn client_command(name: &str, client: u8, program: impl AsRef<OsStr>) -> Result<Command> {
    let state = load(name)?;
    ensure!(
        client < state.spec.clients,
        "lab {name:?} has {} client namespaces (0 to {})",
        state.spec.clients,
        state.spec.clients - 1
    );
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &client_ns(name, client)])
        .arg(program)
        .env("PEGASUS_CLUSTER", &state.cluster_file);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_ownership_is_exact() {
        assert!(belongs_to("a", "pg-a-tor"));
        assert!(belongs_to("a", "pg-a-s12"));
        assert!(belongs_to("a", "pg-a-c0"));
        assert!(!belongs_to("a", "pg-a-b-tor"), "lab a-b is not lab a's");
        assert!(!belongs_to("a", "pg-a-s"));
        assert!(!belongs_to("a", "pg-a-x1"));
        assert!(!belongs_to("a", "pg-ab-tor"));
        for chain in ["pg-a-spine", "pg-a-l0", "pg-a-r2-tor", "pg-a-r1-s3"] {
            assert!(belongs_to("a", chain), "{chain}");
        }
        // Every namespace a chain's lab makes, by the functions that name them.
        let made = [
            chain::spine_ns("a"),
            chain::fabric_ns("a"),
            chain::rack_tor_ns("a", 0),
            chain::rack_tor_ns("a", 7),
            chain::rack_server_ns("a", 3, 63),
            client_ns("a", 5),
        ];
        for ns in made {
            assert!(belongs_to("a", &ns), "{ns}");
        }
        for other in ["pg-a-r-tor", "pg-a-r1-c0", "pg-a-r1", "pg-a-l", "pg-a-r1-s"] {
            assert!(!belongs_to("a", other), "{other}");
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("rack-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("Rack").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(NAME_LEN_MAX + 1)).is_err());
    }
}
