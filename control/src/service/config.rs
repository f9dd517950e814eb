//! The switch daemon's configuration: one type that `pegasus switch`'s flags and a
//! configuration file (`pegasus switch --config FILE`, TOML) both produce. The lab writes this
//! file instead of building a command line, so the two cannot drift apart; a test in the
//! binary checks that every flag has a field here and every field a flag.

use crate::{
    controller::hotkeys::{
        SAMPLE_TARGET_MAX, SAMPLES_PER_SECOND_DEFAULT, STATS_INTERVAL_MS_DEFAULT,
    },
    switch::{AttachMode, SwitchMode},
};
use anyhow::{Context, Result, ensure};
use pegasus_common::{
    directory::{Policy, SERVERS_MAX, directory_capacity_for_rack, hot_keys_for_rack},
    roles::PortRole,
    switch::{
        DIRECTORY_CAPACITY_MAX, REPLICATION_DEFAULT, SAMPLE_PERIOD_DEFAULT, SAMPLE_PERIOD_MAX,
    },
    wire::DEFAULT_PORT,
};
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Where the controller keeps its epoch and hot keys by default.
pub const STATE_PATH_DEFAULT: &str = "/var/lib/pegasus/switch-state.json";
/// Longest configuration file read.
const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// A switch port and its role: `NAME:ROLE` (`client`, `server`, `upstream`, `downstream`),
/// or a bare `NAME`, a client port. The role decides what the switch admits from the port
/// (docs/security.md): a port the switch does not trust is a client port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortSpec {
    pub name: String,
    pub role: PortRole,
}

impl PortSpec {
    /// Port `name` with `role`.
    pub fn new(name: impl Into<String>, role: PortRole) -> PortSpec {
        PortSpec {
            name: name.into(),
            role,
        }
    }
}

impl std::str::FromStr for PortSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<PortSpec> {
        let (name, role) = match s.split_once(':') {
            Some((name, role)) => (
                name,
                PortRole::parse(role).with_context(|| {
                    format!("unknown port role {role:?} (client, server, upstream or downstream)")
                })?,
            ),
            None => (s, PortRole::Client),
        };
        ensure!(
            !name.is_empty() && name.len() < libc::IFNAMSIZ,
            "{name:?} is not an interface name"
        );
        Ok(PortSpec::new(name, role))
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.role.name())
    }
}

impl TryFrom<String> for PortSpec {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<PortSpec> {
        s.parse()
    }
}

impl From<PortSpec> for String {
    fn from(p: PortSpec) -> String {
        p.to_string()
    }
}

/// Server choice policies, as configuration values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// By the rack's size: least loaded up to [`AUTO_LEAST_LOADED_MAX`] servers, two choices
    /// beyond (docs/measurements.md: least loaded balances 8 and 16 servers better, two
    /// choices 32 and 64, where least loaded's herd of reads to one server grows).
    Auto,
    /// The candidate with the lowest reported load.
    LeastLoaded,
    /// Candidates in turn.
    RoundRobin,
    /// The less loaded of two random candidates.
    TwoChoices,
}

/// Most servers in a rack for which `auto` picks least loaded.
pub const AUTO_LEAST_LOADED_MAX: usize = 16;

impl PolicyName {
    /// The policy in effect for a rack of `servers`.
    pub fn resolve(self, servers: usize) -> Policy {
        match self {
            PolicyName::Auto if servers <= AUTO_LEAST_LOADED_MAX => Policy::LeastLoaded,
            PolicyName::Auto => Policy::TwoChoices,
            PolicyName::LeastLoaded => Policy::LeastLoaded,
            PolicyName::RoundRobin => Policy::RoundRobin,
            PolicyName::TwoChoices => Policy::TwoChoices,
        }
    }
}

/// Everything `pegasus switch` needs to run: load the program, attach it to `ports`, run the
/// controller until Ctrl-C/SIGTERM, then detach. Field names are the flags' names with `_`
/// for `-`; a configuration file may leave out any field but `ports`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// The ToR's ports with their roles, comma-separated: NAME:server for a port towards
    /// storage servers, NAME:client (or just NAME) towards clients, NAME:chain towards the
    /// other racks of a chain (e.g.
    /// s0:server,s1:server,c0:client). The program forwards between them and admits from each
    /// only what its role may send (docs/security.md).
    #[arg(long, value_delimiter = ',', required_unless_present = "config")]
    pub ports: Vec<PortSpec>,
    /// XDP attach mode: native (driver) or skb (generic, works everywhere, slower).
    #[arg(long, default_value = "native")]
    pub mode: AttachMode,
    /// The rack's cluster file (server ids and addresses); default: the file PEGASUS_CLUSTER
    /// names, if set. Without one the switch only forwards and stamps versions: the
    /// directory needs to know the servers.
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// The stores' UDP port: only packets to or from it are Pegasus packets.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub store_port: u16,
    /// The smallest version epoch to stamp into the high 16 bits of every version; every
    /// start takes one larger than the last (see --state).
    #[arg(long, default_value_t = 1)]
    pub epoch: u16,
    /// Where the controller keeps the version epoch and the hot keys across restarts: a
    /// restarted switch stamps with a larger epoch (else new writes would get versions below
    /// the stored ones) and brings the homes of the keys that were hot up to date before it
    /// forwards.
    #[arg(long, default_value = STATE_PATH_DEFAULT)]
    pub state: PathBuf,
    /// How the directory picks a server for a hot key's reads and writes. auto (the default):
    /// least loaded for racks of up to 16 servers, two choices beyond; least loaded sends
    /// every read that arrives before a server's next reply to that same server, which costs
    /// balance on large racks, and two choices leaves small ones less balanced
    /// (docs/measurements.md).
    #[arg(long, value_enum, default_value = "auto")]
    pub policy: PolicyName,
    /// Copies of each hot key, at least: a key made hot is pushed from home to this many
    /// minus one servers, and a read-mostly hot key's writes go to at least this many (more
    /// as its share of the load needs). A key written more than a quarter as often as it is
    /// read gets only the copies its reads need (docs/directory.md).
    #[arg(long, default_value_t = REPLICATION_DEFAULT,
          value_parser = clap::value_parser!(u8).range(1..=SERVERS_MAX as i64))]
    pub replication: u8,
    /// Most hot keys in the directory (fixed when the program is loaded). Default: twice
    /// the default hot keys for the rack's size, a power of two, at least 64. Leave room
    /// above --hot-keys: an evicted key's entry waits 100 ms before a new key gets it.
    #[arg(long)]
    pub directory_capacity: Option<u32>,
    /// Hot keys the controller keeps in the directory, found from sampled requests (the most
    /// requested ones, with hysteresis). 0: none; only `switch hot add|del` changes the
    /// directory. At most --directory-capacity. Default: n·log2(n) for a rack of n servers
    /// (the theory behind Pegasus), at least 16.
    #[arg(long)]
    pub hot_keys: Option<u32>,
    /// Length of a statistics interval: the controller reads the samples, updates its top-k
    /// and changes the directory this often; counts halve every 5 intervals.
    #[arg(long, alias = "epoch-ms", default_value_t = STATS_INTERVAL_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    #[serde(alias = "epoch_ms")]
    pub stats_interval_ms: u64,
    /// Sample one GET or PUT in this many for hot-key detection (0: no sampling). With
    /// --sample-target, the sparsest the controller samples: it samples more often while the
    /// rack is quiet.
    #[arg(long, alias = "sample-rate", default_value_t = SAMPLE_PERIOD_DEFAULT,
          value_parser = clap::value_parser!(u16).range(0..=SAMPLE_PERIOD_MAX as i64))]
    #[serde(alias = "sample_rate")]
    pub sample_period: u16,
    /// Samples a second the controller aims for: it samples every request of a quiet rack,
    /// and fewer (down to one in --sample-period) as the rate grows, so that even a rack of
    /// 64 servers at a few thousand requests a second has enough samples to rank its hot keys.
    /// 0: always one in --sample-period.
    #[arg(long, default_value_t = SAMPLES_PER_SECOND_DEFAULT,
          value_parser = clap::value_parser!(u32).range(0..=SAMPLE_TARGET_MAX as i64))]
    pub sample_target: u32,
    /// Serve metrics in the Prometheus text format at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464): the XDP counters, server loads, the directory, detection.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Serve status, counters and hot-key control on this Unix socket.
    #[arg(long)]
    pub admin: Option<PathBuf>,
    /// Run the in-switch cache baseline (NetCache-style) instead of the directory: the switch
    /// answers reads of the hot keys from values it caches (up to 128 bytes; longer ones are
    /// read from home), writes go home and the cached copy follows them (docs/cache.md). Hot
    /// keys are found as for the directory; --replication and --policy do not apply.
    #[arg(long)]
    pub cache: bool,
    /// In a chain of racks, for every rack but the tail: mark each hot read the directory
    /// steers with the version this rack knows committed (learned from the CHAIN_ACKs crossing
    /// it), so that its store may answer it: reads served by every rack (docs/chain.md).
    #[arg(long)]
    pub mark_committed: bool,
    /// A chain whose membership lives in etcd (its client URL, e.g. http://127.0.0.1:2379):
    /// the controller holds a lease for its rack (--rack-id), takes failed racks out of the
    /// chain's configuration and, in the head, keeps the version epoch newer than any before
    /// (docs/chain.md, "Membership").
    #[arg(long, requires = "rack_id")]
    pub etcd: Option<String>,
    /// The chain's name in etcd.
    #[arg(long, default_value = CHAIN_NAME_DEFAULT)]
    pub chain: String,
    /// This rack's id in the chain's configuration (with --etcd).
    #[arg(long)]
    pub rack_id: Option<u8>,
    /// The controller's lease in etcd, in seconds: a rack whose controller has not renewed
    /// it for this long is taken out of the chain.
    #[arg(long, default_value_t = LEASE_TTL_SECS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub lease_ttl_secs: u64,
}

/// The chain's name in etcd when none is given.
pub const CHAIN_NAME_DEFAULT: &str = "pegasus";
/// The controllers' lease TTL by default.
pub const LEASE_TTL_SECS_DEFAULT: u64 = 1;

impl Default for DaemonConfig {
    /// The same values as the flags' defaults (a test checks it), with no ports.
    fn default() -> Self {
        DaemonConfig {
            ports: Vec::new(),
            mode: AttachMode::Native,
            cluster: None,
            store_port: DEFAULT_PORT,
            epoch: 1,
            state: PathBuf::from(STATE_PATH_DEFAULT),
            policy: PolicyName::Auto,
            replication: REPLICATION_DEFAULT,
            directory_capacity: None,
            hot_keys: None,
            stats_interval_ms: STATS_INTERVAL_MS_DEFAULT,
            sample_period: SAMPLE_PERIOD_DEFAULT,
            sample_target: SAMPLES_PER_SECOND_DEFAULT,
            metrics: None,
            admin: None,
            cache: false,
            mark_committed: false,
            etcd: None,
            chain: CHAIN_NAME_DEFAULT.to_owned(),
            rack_id: None,
            lease_ttl_secs: LEASE_TTL_SECS_DEFAULT,
        }
    }
}

impl DaemonConfig {
    /// Reads a configuration file (TOML).
    pub fn load(path: &Path) -> Result<DaemonConfig> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .with_context(|| format!("opening {}", path.display()))?
            .take(CONFIG_FILE_BYTES_MAX)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        let config: DaemonConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(config)
    }

    /// Writes it as a configuration file (TOML) that [`DaemonConfig::load`] reads back.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The cluster file: `cluster`, or else the file PEGASUS_CLUSTER names. (Read here, not
    /// by the flag's parser, so that the environment never conflicts with `--config`.)
    pub fn cluster_file(&self) -> Option<PathBuf> {
        self.cluster
            .clone()
            .or_else(|| std::env::var_os(pegasus_client::cluster::ENV_VAR).map(PathBuf::from))
    }

    /// The directory or the cache baseline.
    pub fn switch_mode(&self) -> SwitchMode {
        if self.cache {
            SwitchMode::Cache
        } else {
            SwitchMode::Directory
        }
    }

    /// Copies of each hot key in effect: a cached key lives at home only.
    pub fn replication_in_effect(&self) -> u8 {
        match self.switch_mode() {
            SwitchMode::Cache => 1,
            SwitchMode::Directory => self.replication,
        }
    }

    /// Hot keys the controller keeps on a rack of `servers`: the configured number, or
    /// n·log2(n) (`directory::hot_keys_for_rack`).
    pub fn hot_keys_for(&self, servers: usize) -> u32 {
        self.hot_keys
            .unwrap_or_else(|| hot_keys_for_rack(servers as u32))
    }

    /// The directory's capacity on a rack of `servers`: the configured one, or
    /// `directory::directory_capacity_for_rack`, and never below the hot keys it must hold.
    pub fn directory_capacity_for(&self, servers: usize) -> u32 {
        self.directory_capacity.unwrap_or_else(|| {
            directory_capacity_for_rack(servers as u32).max(self.hot_keys_for(servers))
        })
    }

    /// Checks what the flags' parsers check, for values that come from a file, and the
    /// relations between fields, for a rack of `servers`. `detecting`: whether the controller
    /// will detect hot keys (it needs servers to place them).
    pub fn validate(&self, servers: usize, detecting: bool) -> Result<()> {
        ensure!(
            !self.ports.is_empty(),
            "no ports given (--ports or `ports` in the file)"
        );
        for (i, p) in self.ports.iter().enumerate() {
            ensure!(
                self.ports[..i].iter().all(|q| q.name != p.name),
                "port {} is given twice",
                p.name
            );
        }
        ensure!(self.store_port != 0, "the store port must not be 0");
        ensure!(
            (1..=SERVERS_MAX).contains(&(self.replication as u32)),
            "replication must be between 1 and {SERVERS_MAX}"
        );
        ensure!(
            (1..=60_000).contains(&self.stats_interval_ms),
            "the statistics interval must be between 1 and 60,000 ms"
        );
        ensure!(
            self.sample_period <= SAMPLE_PERIOD_MAX,
            "the sample period must be at most {SAMPLE_PERIOD_MAX}"
        );
        ensure!(
            self.sample_target <= SAMPLE_TARGET_MAX,
            "the sample target must be at most {SAMPLE_TARGET_MAX} samples a second"
        );
        let capacity = self.directory_capacity_for(servers);
        ensure!(
            (1..=DIRECTORY_CAPACITY_MAX).contains(&capacity),
            "the directory capacity must be between 1 and {DIRECTORY_CAPACITY_MAX}"
        );
        if detecting {
            let hot_keys = self.hot_keys_for(servers);
            ensure!(
                hot_keys <= capacity,
                "--hot-keys {hot_keys} exceeds --directory-capacity {capacity}",
            );
            ensure!(
                self.sample_period > 0,
                "--hot-keys needs sampling: give --sample-period N > 0, or --hot-keys 0"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn parse(args: &[&str]) -> DaemonConfig {
        let command = DaemonConfig::augment_args(
            clap::Command::new("switch").arg(clap::Arg::new("config").long("config")),
        );
        let matches = command
            .try_get_matches_from(std::iter::once("switch").chain(args.iter().copied()))
            .unwrap();
        DaemonConfig::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn the_flags_defaults_are_the_types_defaults() {
        let parsed = parse(&["--ports", "s0:server,c0"]);
        let expected = DaemonConfig {
            ports: vec![
                PortSpec::new("s0", PortRole::Server),
                PortSpec::new("c0", PortRole::Client),
            ],
            ..DaemonConfig::default()
        };
        assert_eq!(parsed, expected);
    }

    #[test]
    fn auto_picks_least_loaded_for_small_racks_and_two_choices_for_large_ones() {
        assert_eq!(PolicyName::Auto.resolve(8), Policy::LeastLoaded);
        assert_eq!(PolicyName::Auto.resolve(16), Policy::LeastLoaded);
        assert_eq!(PolicyName::Auto.resolve(17), Policy::TwoChoices);
        assert_eq!(PolicyName::Auto.resolve(64), Policy::TwoChoices);
        assert_eq!(PolicyName::RoundRobin.resolve(64), Policy::RoundRobin);
        assert_eq!(PolicyName::TwoChoices.resolve(4), Policy::TwoChoices);
        assert_eq!(DaemonConfig::default().policy, PolicyName::Auto);
    }

    #[test]
    fn a_file_and_flags_give_the_same_value() {
        let flags = parse(&[
            "--ports",
            "s0:server,s1:server,c0:client,fabric:chain",
            "--mode",
            "skb",
            "--cluster",
            "/tmp/c.toml",
            "--store-port",
            "7500",
            "--policy",
            "least-loaded",
            "--replication",
            "3",
            "--stats-interval-ms",
            "20",
            "--sample-period",
            "16",
            "--sample-target",
            "5000",
            "--metrics",
            "127.0.0.1:9464",
            "--admin",
            "/tmp/a.sock",
            "--cache",
        ]);
        let dir = std::env::temp_dir().join(format!("pegasus-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switch.toml");
        flags.save(&path).unwrap();
        assert_eq!(DaemonConfig::load(&path).unwrap(), flags);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn old_spellings_still_parse() {
        let old = parse(&["--ports", "s0", "--epoch-ms", "25", "--sample-rate", "4"]);
        assert_eq!((old.stats_interval_ms, old.sample_period), (25, 4));
        let file: DaemonConfig =
            toml::from_str("ports = [\"s0\"]\nepoch_ms = 25\nsample_rate = 4\n").unwrap();
        assert_eq!(file.ports, vec![PortSpec::new("s0", PortRole::Client)]);
        assert_eq!((file.stats_interval_ms, file.sample_period), (25, 4));
    }

    #[test]
    fn port_specs_are_checked() {
        assert_eq!(
            "eth1:server".parse::<PortSpec>().unwrap(),
            PortSpec::new("eth1", PortRole::Server)
        );
        assert!("eth1:trusted".parse::<PortSpec>().is_err());
        assert!(":server".parse::<PortSpec>().is_err());
        assert!(
            "a-name-far-too-long-for-linux:server"
                .parse::<PortSpec>()
                .is_err()
        );
        let twice = DaemonConfig {
            ports: vec![PortSpec::new("s0", PortRole::Server); 2],
            ..DaemonConfig::default()
        };
        assert!(twice.validate(8, false).is_err());
    }

    #[test]
    fn files_are_checked() {
        assert!(toml::from_str::<DaemonConfig>("ports = [\"s0\"]\nbogus = 1\n").is_err());
        let no_ports = DaemonConfig::default();
        assert!(no_ports.validate(8, false).is_err());
        let too_many_hot = DaemonConfig {
            ports: vec![PortSpec::new("s0", PortRole::Server)],
            hot_keys: Some(100),
            directory_capacity: Some(10),
            ..DaemonConfig::default()
        };
        assert!(too_many_hot.validate(8, false).is_ok());
        assert!(too_many_hot.validate(8, true).is_err());
        let zero_replication = DaemonConfig {
            ports: vec![PortSpec::new("s0", PortRole::Server)],
            replication: 0,
            ..DaemonConfig::default()
        };
        assert!(zero_replication.validate(8, false).is_err());
    }
}
