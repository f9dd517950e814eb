//! The P4 face of the switch (`p4/`, docs/p4.md):
//! - [`constants`]: the constants its programs share with every other face, generated from
//!   `pegasus_common` so that they cannot drift (`p4/include/constants.p4`;
//!   `control/tests/p4_constants.rs` regenerates it and fails on any difference);
//! - [`P4Rack`], [`bmv2_entries`] and [`tofino_entries`]: the control plane of a P4 rack
//!   (ports, hosts, servers, configuration, hot keys) as the `simple_switch_CLI` commands or
//!   the bfrt_python script that load it (`pegasus p4 entries`); the TNA program's choice
//!   tables are computed by the directory's rules ([`tna_round_robin`], [`tna_write_copies`]).

use anyhow::{Context, Result, ensure};
use pegasus_common::{
    directory::{self, Policy},
    hash, once,
    roles::PortRole,
    switch::{self, Counter},
    version,
    wire::{self, Op, flags, offset},
};
use serde::Deserialize;
use std::{collections::BTreeSet, fmt::Write as _, net::Ipv4Addr, path::Path};

/// Where the generated file lives, from the repository's root.
pub const CONSTANTS_PATH: &str = "p4/include/constants.p4";

/// The text of `p4/include/constants.p4`.
pub fn constants() -> String {
    let mut out = String::new();
    let mut define = |name: &str, value: String, why: &str| {
        let _ = writeln!(out, "// {why}\n#define {name} {value}");
    };
    for (name, value, why) in [
        (
            "PEGASUS_MAGIC",
            format!("16w{:#06x}", wire::MAGIC),
            "wire::MAGIC: the first two bytes of every Pegasus header.",
        ),
        (
            "PEGASUS_PROTOCOL_VERSION",
            format!("8w{}", wire::PROTOCOL_VERSION),
            "wire::PROTOCOL_VERSION.",
        ),
        (
            "PEGASUS_HEADER_BYTES",
            wire::HEADER_LEN.to_string(),
            "wire::HEADER_LEN: bytes of the fixed header.",
        ),
        (
            "PEGASUS_STORE_PORT",
            format!("16w{}", wire::DEFAULT_PORT),
            "wire::DEFAULT_PORT: the stores' UDP port.",
        ),
        (
            "PEGASUS_CONTROLLER_CLIENT_ID",
            format!("16w{:#06x}", wire::CONTROLLER_CLIENT_ID),
            "wire::CONTROLLER_CLIENT_ID: a client may not use it.",
        ),
    ] {
        define(name, value, why);
    }
    for op in Op::ALL {
        define(
            &format!("OP_{}", screaming(&format!("{op:?}"))),
            format!("8w{}", op as u8),
            &format!(
                "wire::Op::{op:?}{}{}{}.",
                if op.is_request() {
                    ", a request"
                } else {
                    ", a reply"
                },
                if op.is_write() { ", a write" } else { "" },
                if op.reports_version() {
                    ", reports a version"
                } else {
                    ""
                }
            ),
        );
    }
    let codes: Vec<u8> = Op::ALL.iter().map(|&op| op as u8).collect();
    let (first, last) = (codes[0], codes[codes.len() - 1]);
    assert!(
        (first..=last).all(|code| Op::from_u8(code).is_some()),
        "op codes are contiguous (the P4 programs check a range)"
    );
    define("OP_FIRST", format!("8w{first}"), "The lowest op code.");
    define(
        "OP_LAST",
        format!("8w{last}"),
        "The highest op code; every code between is an op.",
    );
    let ops_where = |rule: fn(Op) -> bool| {
        let names: Vec<String> = Op::ALL
            .into_iter()
            .filter(|&op| rule(op))
            .map(|op| format!("(op) == OP_{}", screaming(&format!("{op:?}"))))
            .collect();
        format!("({})", names.join(" || "))
    };
    define(
        "IS_REQUEST_OP(op)",
        ops_where(Op::is_request),
        "wire::Op::is_request.",
    );
    define(
        "REPORTS_VERSION_OP(op)",
        ops_where(Op::reports_version),
        "wire::Op::reports_version: replies the directory learns from.",
    );
    for (name, bit) in [
        ("STAMPED", flags::STAMPED),
        ("HOT", flags::HOT),
        ("RETRY", flags::RETRY),
        ("CACHED", flags::CACHED),
        ("STALE_EPOCH", flags::STALE_EPOCH),
    ] {
        define(
            &format!("FLAG_{name}"),
            format!("8w{bit:#04x}"),
            &format!("wire::flags::{name}."),
        );
    }
    define(
        "CLIENT_FLAGS",
        format!("8w{:#04x}", pegasus_common::roles::CLIENT_FLAGS),
        "roles::CLIENT_FLAGS: the only flags a client port keeps.",
    );
    for (name, at) in [
        ("MAGIC", offset::MAGIC),
        ("PROTO_VERSION", offset::PROTO_VERSION),
        ("OP", offset::OP),
        ("KEYHASH", offset::KEYHASH),
        ("VERSION", offset::VERSION),
        ("REQUEST_ID", offset::REQUEST_ID),
        ("CLIENT_ID", offset::CLIENT_ID),
        ("SERVER_ID", offset::SERVER_ID),
        ("FLAGS", offset::FLAGS),
        ("REPLICA_BITMAP", offset::REPLICA_BITMAP),
        ("LOAD", offset::LOAD),
        ("STATUS", offset::STATUS),
    ] {
        define(
            &format!("OFFSET_{name}"),
            at.to_string(),
            &format!("wire::offset::{name}: the header's fields in order (headers.p4 checks)."),
        );
    }
    for (name, value, why) in [
        (
            "VERSION_COUNTER_BITS",
            version::COUNTER_BITS.to_string(),
            "version::COUNTER_BITS: a version is epoch << this | counter.",
        ),
        (
            "SERVERS_MAX",
            directory::SERVERS_MAX.to_string(),
            "directory::SERVERS_MAX: servers a rack (and a replica bitmap) holds.",
        ),
        (
            "WRITE_WINDOW",
            once::WRITE_WINDOW.to_string(),
            "once::WRITE_WINDOW: writes remembered per client.",
        ),
        (
            "WRITE_CLIENTS",
            once::CLIENTS.to_string(),
            "once::CLIENTS: client ids with a window.",
        ),
        (
            "WRITE_ID_BIT",
            format!("32w{:#010x}", once::WRITE_ID_BIT),
            "once::WRITE_ID_BIT: set in every recorded write id.",
        ),
        (
            "RETRY_ROUTES",
            switch::RETRY_ROUTES_CAPACITY.to_string(),
            "switch::RETRY_ROUTES_CAPACITY: slots of retried writes' routes.",
        ),
        (
            "RETRY_WINDOW_US",
            format!("48w{}", switch::RETRY_WINDOW_NS / 1_000),
            "switch::RETRY_WINDOW_NS in microseconds (the timestamps of P4 targets).",
        ),
        (
            "DIRECTORY_CAPACITY_MAX",
            switch::DIRECTORY_CAPACITY_MAX.to_string(),
            "switch::DIRECTORY_CAPACITY_MAX: hot keys a directory holds at most.",
        ),
        (
            "MIX_WINDOW",
            format!("16w{}", directory::MIX_WINDOW),
            "directory::MIX_WINDOW: requests in a hot key's recent read/write mix.",
        ),
        (
            "MIX_PRIOR_READS",
            format!("16w{}", directory::MIX_PRIOR_READS),
            "directory::MIX_PRIOR_READS: the mix a new hot key starts from.",
        ),
        (
            "COPY_READS_PER_WRITE",
            format!("32w{}", directory::COPY_READS_PER_WRITE),
            "directory::COPY_READS_PER_WRITE: copies pay when reads are this many per write.",
        ),
        (
            "FMIX64_C1",
            format!("64w{:#018x}", hash::FMIX64_C1),
            "hash::fmix64's first multiplier (retry routes are hashed with it).",
        ),
        (
            "FMIX64_C2",
            format!("64w{:#018x}", hash::FMIX64_C2),
            "hash::fmix64's second multiplier.",
        ),
    ] {
        define(name, value, why);
    }
    for role in PortRole::ALL {
        define(
            &format!("ROLE_{}", screaming(&format!("{role:?}"))),
            format!("8w{}", role as u8),
            &format!("roles::PortRole::{role:?}: what a port of this role admits."),
        );
    }
    for policy in [Policy::LeastLoaded, Policy::RoundRobin, Policy::TwoChoices] {
        define(
            &format!("POLICY_{}", screaming(&format!("{policy:?}"))),
            format!("8w{}", policy as u8),
            &format!("directory::Policy::{policy:?}."),
        );
    }
    for &counter in Counter::ALL {
        define(
            &format!("COUNTER_{}", counter.name().to_ascii_uppercase()),
            (counter as u32).to_string(),
            &format!("switch::Counter::{counter:?}: {}", counter.help()),
        );
    }
    define(
        "COUNTERS",
        Counter::COUNT.to_string(),
        "switch::Counter::COUNT.",
    );
    format!(
        "// GENERATED from pegasus_common by control::p4::constants. Do not edit: regenerate with\n\
         // PEGASUS_BLESS=1 cargo test -p pegasus-control --test p4_constants (which fails on drift).\n\
         #ifndef PEGASUS_CONSTANTS_P4\n#define PEGASUS_CONSTANTS_P4\n\n{out}\n#endif\n"
    )
}

/// The v1model program's ingress control, which names its tables, actions and registers.
const I: &str = "PegasusIngress";

/// Servers the v1model program chooses among (its unrolled choices; `P4_SERVERS` there).
pub const P4_SERVERS: u8 = 8;

/// A P4 rack: what its switch's control plane must be told (a TOML file; see
/// `p4/tests/rack.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P4Rack {
    /// The switch epoch (versions are stamped in it; bump it on every restart).
    pub epoch: u16,
    /// `least-loaded` or `round-robin`.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Servers a hot key's writes go to, copies included.
    #[serde(default = "default_replication")]
    pub replication: u8,
    pub ports: Vec<P4Port>,
    /// Keys in the directory.
    #[serde(default)]
    pub hot: Vec<HotKey>,
}

fn default_policy() -> String {
    Policy::LeastLoaded.name().to_owned()
}

fn default_replication() -> u8 {
    2
}

/// One port of the switch and the host behind it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P4Port {
    /// The target's port number.
    pub port: u16,
    /// `client`, `server`, `upstream` or `downstream`.
    pub role: String,
    /// For a server port: the server id behind it.
    pub server: Option<u8>,
    /// The host's address, its MAC, and the switch's MAC on this port.
    pub ipv4: Ipv4Addr,
    pub mac: String,
    pub switch_mac: String,
}

/// A key in the directory: by its name, or by its hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotKey {
    pub key: Option<String>,
    pub keyhash: Option<u64>,
    /// The key's home server.
    pub home: u8,
}

impl P4Rack {
    pub fn load(path: &Path) -> Result<P4Rack> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let rack: P4Rack =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        rack.validate()?;
        Ok(rack)
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            self.epoch != 0,
            "epoch 0 is never a switch's (clients send it for none)"
        );
        let policy = self.policy()?;
        ensure!(
            !policy.needs_random(),
            "the P4 programs choose by least load or round robin, not {}",
            policy.name()
        );
        ensure!(
            (1..=P4_SERVERS).contains(&self.replication),
            "replication is 1 to {P4_SERVERS} on a P4 rack"
        );
        let mut ports = BTreeSet::new();
        let mut servers = BTreeSet::new();
        for p in &self.ports {
            ensure!(ports.insert(p.port), "port {} appears twice", p.port);
            let role = PortRole::parse(&p.role)
                .with_context(|| format!("port {}: unknown role {:?}", p.port, p.role))?;
            mac(&p.mac)?;
            mac(&p.switch_mac)?;
            match (role, p.server) {
                (PortRole::Server, Some(id)) => {
                    ensure!(
                        id < P4_SERVERS,
                        "server {id}: a P4 rack has servers 0..{P4_SERVERS}"
                    );
                    ensure!(servers.insert(id), "server {id} is behind two ports");
                }
                (PortRole::Server, None) => {
                    anyhow::bail!("port {}: a server port names its server", p.port)
                }
                (_, Some(_)) => anyhow::bail!("port {}: only a server port names a server", p.port),
                _ => {}
            }
        }
        for hot in &self.hot {
            ensure!(
                hot.key.is_some() != hot.keyhash.is_some(),
                "a hot key has a key or a keyhash, not both or neither"
            );
            ensure!(
                servers.contains(&hot.home),
                "hot key's home {} is not a server here",
                hot.home
            );
        }
        ensure!(
            self.hot.len() <= switch::DIRECTORY_CAPACITY_MAX as usize,
            "more hot keys than the directory holds"
        );
        Ok(())
    }

    fn policy(&self) -> Result<Policy> {
        [Policy::LeastLoaded, Policy::RoundRobin, Policy::TwoChoices]
            .into_iter()
            .find(|p| p.name() == self.policy)
            .with_context(|| format!("unknown policy {:?}", self.policy))
    }
}

/// A MAC address "02:00:00:01:00:02" as the CLI's 48-bit number.
fn mac(text: &str) -> Result<u64> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC address {text:?}"))?;
    ensure!(bytes.len() == 6, "bad MAC address {text:?}");
    Ok(bytes.iter().fold(0, |m, &b| m << 8 | b as u64))
}

/// The `simple_switch_CLI` commands that load `rack` into the v1model program: the
/// configuration, port roles, L3 routes, server addresses, and each hot key's directory entry
/// (index, home, not evicting, the configured replication) with its registers as
/// `Switch::directory_insert` sets them (installing, the home its only replica).
pub fn bmv2_entries(rack: &P4Rack) -> Result<String> {
    rack.validate()?;
    let mut out = String::new();
    let all_servers = rack
        .ports
        .iter()
        .filter_map(|p| p.server)
        .fold(0u8, |set, id| set | 1 << id);
    let _ = writeln!(
        out,
        "table_set_default {I}.config {I}.set_config {} {} {} {all_servers}",
        rack.epoch,
        rack.policy()? as u8,
        rack.replication
    );
    for p in &rack.ports {
        let role = PortRole::parse(&p.role).expect("validated");
        let _ = writeln!(
            out,
            "table_add {I}.port_role {I}.set_role {} => {}",
            p.port, role as u8
        );
        let _ = writeln!(
            out,
            "table_add {I}.ipv4_forward {I}.forward {} => {} {:#x} {:#x}",
            p.ipv4,
            p.port,
            mac(&p.switch_mac)?,
            mac(&p.mac)?
        );
        if let Some(id) = p.server {
            let _ = writeln!(
                out,
                "register_write {I}.server_ip {id} {}",
                u32::from(p.ipv4)
            );
        }
    }
    for (index, hot) in rack.hot.iter().enumerate() {
        let keyhash = match (&hot.key, hot.keyhash) {
            (Some(key), _) => hash::key_hash(key.as_bytes()),
            (None, Some(h)) => h,
            (None, None) => unreachable!("validated"),
        };
        let _ = writeln!(
            out,
            "table_add {I}.directory {I}.hot_key {keyhash:#x} => {index} {} 0 0",
            hot.home
        );
        let entry = switch::DirEntry::new(keyhash, hot.home);
        let _ = writeln!(
            out,
            "register_write {I}.installing {index} {}",
            entry.installing
        );
        let _ = writeln!(out, "register_write {I}.rset {index} {}", entry.rset);
        let _ = writeln!(
            out,
            "register_write {I}.ver_completed {index} {}",
            entry.ver_completed
        );
        let _ = writeln!(
            out,
            "register_write {I}.mix_reads {index} {}",
            entry.mix_reads
        );
        let _ = writeln!(
            out,
            "register_write {I}.mix_writes {index} {}",
            entry.mix_writes
        );
    }
    Ok(out)
}

/// The TNA program's ingress, as bfrt_python names it (program `pegasus`, pipe `pipe`).
const TNA: &str = "bfrt.pegasus.pipe.TnaIngress";

/// The round-robin table of the TNA program: for every non-empty set of servers and every
/// cursor value (0..8), the server `directory::choose` picks in turn:
/// `nth_set_bit(set, cursor % popcount(set))`.
pub fn tna_round_robin() -> Vec<(u8, u8, u8)> {
    let mut entries = Vec::new();
    for set in 1..=u8::MAX {
        for cursor in 0..P4_SERVERS {
            let n = u32::from(cursor) % set.count_ones();
            let server = directory::nth_set_bit(u64::from(set), n).expect("n < popcount");
            entries.push((set, cursor, server));
        }
    }
    entries
}

/// The write-copies table of the TNA program: for every primary and replica target (0: the
/// configured replication), the servers after it that take copies
/// (`directory::successors`, `replication_in_effect`).
pub fn tna_write_copies(all_servers: u8, replication: u8) -> Vec<(u8, u8, u8)> {
    let mut entries = Vec::new();
    for primary in (0..P4_SERVERS).filter(|&id| all_servers & 1 << id != 0) {
        for target in 0..=P4_SERVERS {
            let copies = directory::replication_in_effect(target, replication).saturating_sub(1);
            let set = directory::successors(u64::from(all_servers), primary, copies);
            entries.push((primary, target, set as u8));
        }
    }
    entries
}

/// A bfrt_python script (run in the Tofino SDE's `bfshell -b`) that loads `rack` into the
/// TNA program: the configuration, port roles, routes, the servers' addresses, the choice
/// tables computed by the rules ([`tna_round_robin`], [`tna_write_copies`]) and each hot
/// key's directory entry and registers. Written for the SDE's bfrt_python; not run here (no
/// SDE on this machine kind).
pub fn tofino_entries(rack: &P4Rack) -> Result<String> {
    rack.validate()?;
    ensure!(
        rack.policy()? == Policy::RoundRobin,
        "the TNA program chooses by round robin only (docs/p4.md)"
    );
    let mut out = String::from("# Generated by `pegasus p4 entries --target tofino`.\n");
    let all_servers = rack
        .ports
        .iter()
        .filter_map(|p| p.server)
        .fold(0u8, |set, id| set | 1 << id);
    let _ = writeln!(
        out,
        "{TNA}.config.set_default_with_set_config(epoch={}, all_servers={all_servers}, \
         replication={})",
        rack.epoch, rack.replication
    );
    for p in &rack.ports {
        let role = PortRole::parse(&p.role).expect("validated");
        let _ = writeln!(
            out,
            "{TNA}.port_role.add_with_set_role(port={}, role={})",
            p.port, role as u8
        );
        let _ = writeln!(
            out,
            "{TNA}.ipv4_forward.add_with_forward(destination=\"{}\", port={}, src_mac={:#x}, \
             dst_mac={:#x})",
            p.ipv4,
            p.port,
            mac(&p.switch_mac)?,
            mac(&p.mac)?
        );
        if let Some(id) = p.server {
            let _ = writeln!(
                out,
                "{TNA}.server_address.add_with_address(server={id}, ipv4=\"{}\")",
                p.ipv4
            );
            let _ = writeln!(
                out,
                "{TNA}.reply_sender.add_with_believe(server={id}, source=\"{}\", me={})",
                p.ipv4,
                1u8 << id
            );
        }
    }
    for (set, cursor, server) in tna_round_robin() {
        let _ = writeln!(
            out,
            "{TNA}.round_robin.add_with_choose(candidates={set}, cursor={cursor}, server={server})"
        );
    }
    for (primary, target, copies) in tna_write_copies(all_servers, rack.replication) {
        let _ = writeln!(
            out,
            "{TNA}.write_copies.add_with_set_copies(primary={primary}, \
             replica_target={target}, copies={copies})"
        );
    }
    for (index, hot) in rack.hot.iter().enumerate() {
        let keyhash = hot
            .keyhash
            .unwrap_or_else(|| hash::key_hash(hot.key.as_deref().expect("validated").as_bytes()));
        let entry = switch::DirEntry::new(keyhash, hot.home);
        let _ = writeln!(
            out,
            "{TNA}.directory.add_with_hot_key(keyhash={keyhash:#x}, index={index}, home={}, \
             home_bit={}, evicting=0, replica_target=0)",
            hot.home, entry.rset
        );
        let _ = writeln!(
            out,
            "{TNA}.installing.mod(REGISTER_INDEX={index}, f1={})",
            entry.installing
        );
        // The entry's (counter of the newest complete version, replica set) pair; the
        // counter is the version's low 32 bits (the program compares within its epoch).
        let _ = writeln!(
            out,
            "{TNA}.completed.mod(REGISTER_INDEX={index}, counter={}, rset={})",
            entry.ver_completed as u32, entry.rset
        );
    }
    Ok(out)
}

/// `ReplicateAck` as `REPLICATE_ACK`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RACK: &str = r#"
        epoch = 3
        policy = "round-robin"
        replication = 2
        [[ports]]
        port = 0
        role = "server"
        server = 0
        ipv4 = "10.1.0.2"
        mac = "02:00:00:01:00:02"
        switch_mac = "02:00:00:01:00:01"
        [[ports]]
        port = 4
        role = "client"
        ipv4 = "10.2.0.2"
        mac = "02:00:00:02:00:02"
        switch_mac = "02:00:00:02:00:01"
        [[hot]]
        key = "hot"
        home = 0
    "#;

    #[test]
    fn a_rack_becomes_cli_commands() {
        let rack: P4Rack = toml::from_str(RACK).unwrap();
        let text = bmv2_entries(&rack).unwrap();
        assert!(
            text.starts_with(
                "table_set_default PegasusIngress.config PegasusIngress.set_config 3 1 2 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("table_add PegasusIngress.port_role PegasusIngress.set_role 0 => 1\n")
        );
        assert!(text.contains(
            "table_add PegasusIngress.ipv4_forward PegasusIngress.forward 10.2.0.2 => 4 0x20000020001 0x20000020002\n"
        ));
        assert!(text.contains(&format!(
            "table_add PegasusIngress.directory PegasusIngress.hot_key {:#x} => 0 0 0 0\n",
            hash::key_hash(b"hot")
        )));
        assert!(text.contains("register_write PegasusIngress.installing 0 1\n"));
        assert!(text.contains("register_write PegasusIngress.rset 0 1\n"));
    }

    #[test]
    fn the_tna_round_robin_table_is_the_rule_in_turn() {
        let table = tna_round_robin();
        assert_eq!(table.len(), 255 * P4_SERVERS as usize);
        let pick = |set: u8, cursor: u8| {
            table
                .iter()
                .find(|&&(s, c, _)| s == set && c == cursor)
                .unwrap()
                .2
        };
        // {1, 2}: 1, 2, 1, 2, ...
        assert_eq!(
            (0..4).map(|c| pick(0b110, c)).collect::<Vec<_>>(),
            vec![1, 2, 1, 2]
        );
        // Every pick is a member, and a set's members each come up.
        for set in 1..=u8::MAX {
            let picks: BTreeSet<u8> = (0..P4_SERVERS).map(|c| pick(set, c)).collect();
            assert!(picks.iter().all(|&s| set & 1 << s != 0));
            assert_eq!(
                picks.len(),
                (set.count_ones() as usize).min(P4_SERVERS as usize)
            );
        }
    }

    #[test]
    fn the_tna_copies_table_is_the_successor_rule() {
        let table = tna_write_copies(0b1111, 2);
        let copies = |primary: u8, target: u8| {
            table
                .iter()
                .find(|&&(p, t, _)| p == primary && t == target)
                .unwrap()
                .2
        };
        assert_eq!(
            copies(3, 0),
            0b0001,
            "replication 2: the next server, cyclically"
        );
        assert_eq!(copies(1, 1), 0, "a target of 1: no copies");
        assert_eq!(copies(1, 4), 0b1101, "all the others");
        assert_eq!(copies(1, 8), 0b1101, "no more than the rack has");
    }

    #[test]
    fn a_tofino_script_has_every_table() {
        let rack: P4Rack = toml::from_str(RACK).unwrap();
        assert!(tofino_entries(&rack).is_ok());
        let least_loaded: P4Rack =
            toml::from_str(&RACK.replace("round-robin", "least-loaded")).unwrap();
        assert!(
            tofino_entries(&least_loaded).is_err(),
            "round robin only on TNA"
        );
        let script = tofino_entries(&rack).unwrap();
        for table in [
            "config.set_default_with_set_config(epoch=3, all_servers=1, replication=2)",
            "port_role.add_with_set_role(port=4, role=0)",
            "round_robin.add_with_choose(candidates=6, cursor=1, server=2)",
            "write_copies.add_with_set_copies(primary=0, replica_target=0, copies=0)",
            "reply_sender.add_with_believe(server=0, source=\"10.1.0.2\", me=1)",
            "installing.mod(REGISTER_INDEX=0, f1=1)",
            "completed.mod(REGISTER_INDEX=0, counter=0, rset=1)",
        ] {
            assert!(script.contains(table), "{table}");
        }
    }

    #[test]
    fn the_tofino_script_names_only_what_the_tna_program_declares() {
        let program = include_str!("../../p4/tna/pegasus.p4");
        let rack: P4Rack = toml::from_str(RACK).unwrap();
        let script = tofino_entries(&rack).unwrap();
        for line in script.lines().filter(|l| l.starts_with(TNA)) {
            let name = line[TNA.len() + 1..].split('.').next().unwrap();
            let declared = [format!("table {name} {{"), format!(") {name};")];
            assert!(
                declared.iter().any(|d| program.contains(d.as_str())),
                "{name} (in `{line}`) is neither a table nor a register of p4/tna/pegasus.p4"
            );
        }
    }

    #[test]
    fn bad_racks_are_refused_with_reasons() {
        let with =
            |from: &str, to: &str| toml::from_str::<P4Rack>(&RACK.replace(from, to)).unwrap();
        for (from, to, why) in [
            ("epoch = 3", "epoch = 0", "epoch 0"),
            ("round-robin", "two-choices", "least load or round robin"),
            ("server = 0", "server = 9", "servers 0..8"),
            ("home = 0", "home = 5", "not a server here"),
            ("02:00:00:01:00:02", "02:00:00:01:00", "bad MAC"),
        ] {
            let err = bmv2_entries(&with(from, to)).unwrap_err().to_string();
            assert!(err.contains(why), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn op_names_become_p4_names() {
        assert_eq!(screaming("ReplicateAck"), "REPLICATE_ACK");
        assert_eq!(screaming("Get"), "GET");
    }

    #[test]
    fn every_op_and_flag_is_defined_once() {
        let text = constants();
        for op in Op::ALL {
            let name = format!("#define OP_{} ", screaming(&format!("{op:?}")));
            assert_eq!(text.matches(&name).count(), 1, "{name}");
        }
        assert!(text.contains("#define FLAG_STALE_EPOCH 8w0x10\n"));
        assert!(text.contains("#define PEGASUS_MAGIC 16w0x5047\n"));
    }
}
