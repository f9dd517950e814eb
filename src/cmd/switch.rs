//! `pegasus switch`: run the XDP switch and its controller on a ToR's ports, or talk to a
//! running one (status, hot keys).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use pegasus_client::Cluster;
use pegasus_common::{
    directory::Policy,
    switch::{
        DIRECTORY_CAPACITY_DEFAULT, FIB_GENERATION_PERIOD_MS, REPLICATION_DEFAULT,
        SAMPLE_PERIOD_DEFAULT, SAMPLE_PERIOD_MAX,
    },
    wire::DEFAULT_PORT,
};
use pegasus_control::{
    controller::{Controller, Detection, HotKey},
    hotkeys::{EPOCH_MS_DEFAULT, HotSetRules, ONE_SAMPLE},
    state::StateFile,
    switch::{
        AttachMode, Switch, SwitchMode, SwitchSettings,
        admin::{self, Request},
        bench::{self, BenchOptions},
        metrics,
    },
};
use std::{net::IpAddr, path::PathBuf, process::ExitCode, sync::Arc};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SwitchArgs {
    #[command(subcommand)]
    command: Option<SwitchCommand>,
    #[command(flatten)]
    run: RunArgs,
}

/// Fewest (decayed) samples a key needs before detection makes it hot: one or two samples
/// are noise.
const HOT_KEY_MIN_SAMPLES: u64 = 3;

/// Server choice policies, as command-line values.
#[derive(Clone, Copy, ValueEnum)]
enum PolicyArg {
    /// The candidate with the lowest reported load.
    LeastLoaded,
    /// Candidates in turn.
    RoundRobin,
    /// The less loaded of two random candidates.
    TwoChoices,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::LeastLoaded => Policy::LeastLoaded,
            PolicyArg::RoundRobin => Policy::RoundRobin,
            PolicyArg::TwoChoices => Policy::TwoChoices,
        }
    }
}

/// Without a subcommand: load the program, attach it to --ports and run the controller until
/// Ctrl-C/SIGTERM, then detach.
#[derive(Args)]
struct RunArgs {
    /// The ToR's ports, comma-separated (e.g. s0,s1,c0). The program forwards between them.
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<String>,
    /// XDP attach mode: native (driver) or skb (generic, works everywhere, slower).
    #[arg(long, default_value = "native")]
    mode: AttachMode,
    /// The rack's cluster file (server ids and addresses). Without it the switch only forwards
    /// and stamps versions: the directory needs to know the servers.
    #[arg(long, env = "PEGASUS_CLUSTER")]
    cluster: Option<PathBuf>,
    /// The stores' UDP port: only packets to or from it are Pegasus packets.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    store_port: u16,
    /// The smallest epoch to stamp into the high 16 bits of every version; every start takes
    /// one larger than the last (see --state).
    #[arg(long, default_value_t = 1)]
    epoch: u16,
    /// Where the controller keeps the epoch and the hot keys across restarts: a restarted
    /// switch stamps with a larger epoch (else new writes would get versions below the stored
    /// ones) and brings the homes of the keys that were hot up to date before it forwards.
    #[arg(long, default_value = "/var/lib/pegasus/switch-state.json")]
    state: PathBuf,
    /// How the directory picks a server for a hot key's reads and writes.
    #[arg(long, value_enum, default_value = "least-loaded")]
    policy: PolicyArg,
    /// Copies of each hot key: a hot write goes to one server and is copied to this many minus
    /// one more; a key made hot is pushed from home to this many minus one servers.
    #[arg(long, default_value_t = REPLICATION_DEFAULT,
          value_parser = clap::value_parser!(u8).range(1..=32))]
    replication: u8,
    /// Most hot keys in the directory (fixed when the program is loaded).
    #[arg(long, default_value_t = DIRECTORY_CAPACITY_DEFAULT)]
    directory_capacity: u32,
    /// Hot keys the controller keeps in the directory, found from sampled requests (the most
    /// requested ones, with hysteresis). 0: none; only `switch hot add|del` changes the
    /// directory. At most --directory-capacity.
    #[arg(long, default_value_t = 16)]
    hot_keys: u32,
    /// Length of a statistics epoch: the controller reads the samples, updates its top-k and
    /// changes the directory this often; counts halve every epoch.
    #[arg(long, default_value_t = EPOCH_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    epoch_ms: u64,
    /// Sample one GET or PUT in this many for hot-key detection (0: no sampling).
    #[arg(long, default_value_t = SAMPLE_PERIOD_DEFAULT,
          value_parser = clap::value_parser!(u16).range(0..=SAMPLE_PERIOD_MAX as i64))]
    sample_rate: u16,
    /// Serve metrics in the Prometheus text format at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464): the XDP counters, server loads, the directory, detection.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Serve status, counters and hot-key control on this Unix socket.
    #[arg(long)]
    admin: Option<PathBuf>,
    /// Run the in-switch cache baseline (NetCache-style) instead of the directory: the switch
    /// answers reads of the hot keys from values it caches (up to 128 bytes; longer ones are
    /// read from home), writes go home and the cached copy follows them (docs/cache.md). Hot
    /// keys are found as for the directory; --replication and --policy do not apply.
    #[arg(long)]
    cache: bool,
}

/// Where to find a running switch.
#[derive(Args)]
struct Target {
    /// The switch's admin socket (`pegasus lab` puts it in the lab's directory).
    #[arg(long, conflicts_with = "lab", required_unless_present = "lab")]
    admin: Option<PathBuf>,
    /// Or: the lab whose switch to ask.
    #[arg(long)]
    lab: Option<String>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf> {
        match (&self.admin, &self.lab) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(name)) => pegasus_control::lab::load(name)?
                .admin_socket
                .with_context(|| format!("lab {name:?} runs no XDP switch")),
            (None, None) => bail!("give --admin PATH or --lab NAME"),
        }
    }
}

#[derive(Subcommand)]
enum SwitchCommand {
    /// Print a running switch's counters, ports, epoch, version counter and server loads.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage the directory of hot keys by hand.
    Hot {
        #[command(subcommand)]
        command: HotCommand,
    },
    /// Measure the program's cost per packet on each path (cold forward, cold write, hot read,
    /// hot write, retried hot write, reply update) through BPF_PROG_TEST_RUN, next to a
    /// minimal program (parse Ethernet/IPv4/UDP, swap addresses, XDP_TX) measured in the same
    /// rounds. Runs in a namespace of its own, attached to nothing. Needs root.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Packets per measurement of a path (run in batches of 250 per test-run call).
    #[arg(long, default_value_t = BenchOptions::default().packets)]
    packets: u32,
    /// Measurements of every path, interleaved with the baseline's; medians are reported.
    #[arg(long, default_value_t = BenchOptions::default().rounds)]
    rounds: u32,
    /// Sample one request in this many, as the running switch does (its --sample-rate);
    /// 0 measures the paths without sampling.
    #[arg(long, default_value_t = BenchOptions::default().sample_period,
          value_parser = clap::value_parser!(u16).range(0..=SAMPLE_PERIOD_MAX as i64))]
    sample_rate: u16,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum HotCommand {
    /// Make keys hot: install each with its home as the only replica, then replicate it.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Make keys cold: bring home up to date, then remove them from the directory.
    Del {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List the hot keys with their replica sets, versions and counters.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: SwitchArgs) -> Result<ExitCode> {
    let Some(command) = args.command else {
        super::init_logging("info");
        return serve(args.run);
    };
    super::init_logging("warn");
    match command {
        SwitchCommand::Status { target, json } => {
            let path = target.socket()?;
            let status = super::block_on(1, async move { admin::status(&path).await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        SwitchCommand::Hot { command } => {
            let (target, request, json) = match command {
                HotCommand::Add { target, keys } => (target, Request::HotAdd { keys }, false),
                HotCommand::Del { target, keys } => (target, Request::HotDel { keys }, false),
                HotCommand::List { target, json } => (target, Request::HotList, json),
            };
            let path = target.socket()?;
            let keys = super::block_on(1, async move { admin::hot(&path, &request).await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print_hot(&keys);
            }
        }
        SwitchCommand::Bench(args) => bench(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs) -> Result<()> {
    let options = BenchOptions {
        packets: args.packets,
        rounds: args.rounds,
        sample_period: args.sample_rate,
    };
    // The testbed moves its thread into a namespace of its own: not this one.
    let report = std::thread::spawn(move || bench::run(options))
        .join()
        .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<16} {:>9} {:>11} {:>7} {:>7} {:>12} {:>9}  what",
        "path", "ns/packet", "baseline ns", "ratio", "target", "forwarder ns", "vs fwd"
    );
    for p in &report.paths {
        println!(
            "{:<16} {:>9.1} {:>11.1} {:>7.2} {:>6.1}{} {:>12.1} {:>9.2}  {}",
            p.path,
            p.ns_per_packet,
            p.baseline_ns_per_packet,
            p.ratio,
            p.target_ratio,
            if p.meets_target { " " } else { "!" },
            p.forwarder_ns_per_packet,
            p.forwarder_ratio,
            p.what
        );
    }
    println!(
        "medians of {} rounds of {} packets per path; ratio = path / minimal program (parse, \
         swap, XDP_TX) in the same round, ! = above target; vs fwd = path / minimal forwarder \
         (the same, then a DEVMAP redirect, as every forwarded packet)",
        report.rounds, report.packets
    );
    Ok(())
}

fn serve(args: RunArgs) -> Result<ExitCode> {
    let cluster = match &args.cluster {
        Some(path) => Cluster::load(path)?,
        None => Cluster {
            servers: Vec::new(),
        },
    };
    let mut servers = Vec::new();
    for s in &cluster.servers {
        let IpAddr::V4(ip) = s.addr.ip() else {
            bail!(
                "server {} has an IPv6 address; the switch is IPv4 only",
                s.id
            );
        };
        if s.addr.port() != args.store_port {
            bail!(
                "server {} listens on port {}, not --store-port {}",
                s.id,
                s.addr.port(),
                args.store_port
            );
        }
        servers.push((s.id, ip));
    }
    let begun = StateFile::begin(&args.state, args.epoch)?;
    let (state, epoch, previously_hot) = (begun.file, begun.epoch, begun.previously_hot);
    let (mode, replication) = if args.cache {
        (SwitchMode::Cache, 1) // a cached key lives at home only
    } else {
        (SwitchMode::Directory, args.replication)
    };
    let settings = SwitchSettings {
        store_port: args.store_port,
        epoch,
        policy: args.policy.into(),
        replication,
        directory_capacity: args.directory_capacity,
        sample_period: args.sample_rate,
        servers,
        mode,
    };
    let detecting = args.hot_keys > 0 && !settings.servers.is_empty();
    if detecting {
        if args.hot_keys > args.directory_capacity {
            bail!(
                "--hot-keys {} exceeds --directory-capacity {}",
                args.hot_keys,
                args.directory_capacity
            );
        }
        if args.sample_rate == 0 {
            bail!("--hot-keys needs sampling: give --sample-rate N > 0, or --hot-keys 0");
        }
    }
    let mut switch = Switch::load(&settings)?;
    if begun.restarted {
        // Writes steered by the switch before this one may still be retried: drop those
        // retries for a retry window instead of sending them home (docs/controller.md).
        switch.fence_retries()?;
    }
    let samples = if detecting {
        Some(switch.take_samples()?)
    } else {
        None
    };
    let controller = Arc::new(
        Controller::new(switch, cluster, replication, args.store_port, epoch).with_state(state),
    );
    if !previously_hot.is_empty() {
        tracing::info!(
            keys = previously_hot.len(),
            "bringing home the keys that were hot when the switch stopped"
        );
        let recovering = controller.clone();
        super::block_on(1, async move { recovering.recover(&previously_hot).await })
            .context("recovering the keys that were hot (nothing was forwarded)")?;
    }
    {
        let mut switch = controller.switch();
        for port in &args.ports {
            switch.attach(port, args.mode)?;
        }
    }
    let admin_path = args.admin.clone();
    let served = controller.clone();
    let refreshed = controller.clone();
    let detector = controller.clone();
    let scraped = controller.clone();
    let detection = Detection {
        rules: HotSetRules {
            hot_keys: args.hot_keys as usize,
            min_count: HOT_KEY_MIN_SAMPLES * ONE_SAMPLE,
            capacity: args.directory_capacity as usize,
        },
        epoch: std::time::Duration::from_millis(args.epoch_ms),
    };
    super::block_on(1, async move {
        let admin_task = admin_path
            .clone()
            .map(|path| tokio::spawn(admin::serve(path, served)));
        tracing::info!(
            ports = ?args.ports,
            mode = ?args.mode,
            store_port = args.store_port,
            epoch,
            servers = settings.servers.len(),
            policy = settings.policy.name(),
            "switch running"
        );
        let admin_failed = async {
            match admin_task {
                Some(task) => match task.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow::anyhow!("admin socket closed"),
                    Err(e) => anyhow::anyhow!("admin task: {e}"),
                },
                None => std::future::pending().await,
            }
        };
        // Cached forwarding decisions are renewed every period (see FIB_CACHE).
        let fib_refresh = async move {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_millis(FIB_GENERATION_PERIOD_MS));
            loop {
                tick.tick().await;
                if let Err(e) = refreshed.switch().bump_fib_generation() {
                    return e;
                }
            }
        };
        let metrics_task = match args.metrics {
            Some(addr) => {
                let listener = metrics::bind(addr).await?;
                Some(tokio::spawn(metrics::serve(listener, move || {
                    Ok(metrics::render(&scraped.status()?))
                })))
            }
            None => None,
        };
        let metrics_failed = async {
            match metrics_task {
                Some(task) => match task.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow::anyhow!("metrics endpoint closed"),
                    Err(e) => anyhow::anyhow!("metrics task: {e}"),
                },
                None => std::future::pending().await,
            }
        };
        let detect = async move {
            match samples {
                Some(samples) => detector.detect_hot_keys(samples, detection).await,
                None => std::future::pending().await,
            }
        };
        if detecting {
            tracing::info!(
                hot_keys = args.hot_keys,
                epoch_ms = args.epoch_ms,
                sample_rate = args.sample_rate,
                "hot-key detection on"
            );
        }
        tokio::select! {
            _ = super::shutdown_signal() => {}
            e = detect => return Err(e.context("hot-key detection")),
            e = metrics_failed => return Err(e),
            e = admin_failed => return Err(e),
            e = fib_refresh => return Err(e.context("renewing the forwarding cache")),
        }
        Ok(())
    })?;
    let mut switch = controller.switch();
    let counters = switch.counters()?;
    tracing::info!(counters = %serde_json::to_string(&counters)?, "switch stopping");
    switch.detach_all()?;
    if let Some(path) = args.admin {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &admin::Status) {
    println!("ports:           {}", s.ports.join(", "));
    println!("store port:      {}", s.store_port);
    println!("epoch:           {}", s.epoch);
    println!("version counter: {}", s.version_counter);
    println!("hot keys:        {}", s.hot_keys);
    if !s.server_loads.is_empty() {
        let loads: Vec<String> = s
            .server_loads
            .iter()
            .map(|(id, l)| format!("{id}:{l}"))
            .collect();
        println!("server loads:    {}", loads.join(" "));
    }
    let d = &s.detection;
    println!(
        "detection:       {} samples, {} epochs, {} adds, {} evicts, {} failures, {} copies restored",
        d.samples, d.epochs, d.adds, d.evicts, d.failures, d.restored
    );
    println!("counters:");
    for (name, value) in &s.counters.0 {
        println!("  {name:<18} {value:>12}");
    }
    if !s.hot.is_empty() {
        println!();
        print_hot(&s.hot);
    }
}

fn print_hot(keys: &[HotKey]) {
    println!(
        "{:<24} {:>18} {:>5} {:<20} {:>16} {:>10} {:>10}",
        "key", "keyhash", "home", "replicas", "version", "reads", "writes"
    );
    for k in keys {
        let replicas: Vec<String> = k.replicas.iter().map(u8::to_string).collect();
        let name = k.key.clone().unwrap_or_else(|| "?".into());
        println!(
            "{:<24} {:>#18x} {:>5} {:<20} {:>16} {:>10} {:>10}{}",
            name,
            k.keyhash,
            k.home,
            replicas.join(","),
            k.ver_completed,
            k.reads,
            k.writes,
            match (k.evicting, k.cached, k.cache_hits) {
                (true, _, _) => "  (evicting)".to_owned(),
                (false, Some(cached), Some(hits)) => format!(
                    "  ({}, {hits} reads answered by the switch)",
                    if cached { "cached" } else { "not cached now" }
                ),
                _ => String::new(),
            }
        );
    }
}
