//! A lab rack for an experiment: built from a [`LabSpec`], driven by `pegasus bench` in its
//! client namespaces (whose summary comes back typed), and brought down when dropped, also on
//! Ctrl-C.

use crate::loadgen::Summary;
use anyhow::{Context, Result, bail, ensure};
use pegasus_control::lab::{self, Dataplane, LabSpec};
use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// The rack and popularity of the single-rack experiments (`balance`, `reaction`).
#[derive(clap::Args)]
pub struct SkewedRack {
    /// The Zipf exponent of the keys' popularity.
    #[arg(long, default_value_t = 1.2)]
    pub theta: f64,
    /// Storage servers.
    #[arg(long, default_value_t = 8)]
    pub servers: u8,
    /// Emulated capacity of every store, requests/s.
    #[arg(long, default_value_t = 2000)]
    pub capacity_ops: u32,
}

/// How often [`Rack::drain`] asks the switch for the stores' loads.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Requests outstanding while loading the keys.
const LOAD_CONCURRENCY: u32 = 64;

/// A lab rack, brought down when dropped.
pub struct Rack {
    pub spec: LabSpec,
    exe: PathBuf,
}

/// A lab rack's specification with the experiments' defaults: `servers` stores with an
/// emulated capacity of `capacity_ops` requests/s each, one client namespace, the switch's
/// defaults, and `hot_keys` found by its controller (`None`: the switch's default for the
/// rack's size).
pub fn spec(
    name: &str,
    servers: u8,
    capacity_ops: Option<u32>,
    dataplane: Dataplane,
    hot_keys: Option<u32>,
) -> LabSpec {
    LabSpec {
        name: format!("{name}-{}", std::process::id()),
        servers,
        clients: 1,
        racks: 1,
        capacity_ops,
        dataplane,
        mode: pegasus_control::switch::AttachMode::Native,
        port: pegasus_common::wire::DEFAULT_PORT,
        store_threads: 1,
        replication: pegasus_common::switch::REPLICATION_DEFAULT,
        policy: pegasus_control::service::config::DaemonConfig::default().policy,
        directory_capacity: None,
        hot_keys,
        stats_interval_ms: pegasus_control::controller::hotkeys::STATS_INTERVAL_MS_DEFAULT,
        sample_period: pegasus_common::switch::SAMPLE_PERIOD_DEFAULT,
        sample_target: pegasus_control::controller::hotkeys::SAMPLES_PER_SECOND_DEFAULT,
        lease_ttl_secs: pegasus_control::service::config::LEASE_TTL_SECS_DEFAULT,
    }
}

impl Rack {
    /// Builds the rack (with this very `pegasus` binary as its processes).
    pub fn up(spec: LabSpec) -> Result<Rack> {
        ensure!(
            lab::netns::is_root(),
            "experiments build lab racks: they need root"
        );
        let exe = std::env::current_exe()?;
        lab::up(&spec, &exe)?;
        Ok(Rack { spec, exe })
    }

    /// Writes every key of a key space of `keys` once.
    pub fn load(&self, keys: u64) -> Result<()> {
        let concurrency = LOAD_CONCURRENCY.to_string();
        let load = self.bench(0, keys, &["load", "--concurrency", &concurrency])?;
        ensure!(
            load.errors == 0,
            "loading the keys into rack {} failed: {} errors, {} timeouts",
            self.spec.name,
            load.errors,
            load.timeouts
        );
        Ok(())
    }

    /// Waits until the stores have worked their queues off after a rate they could not
    /// sustain: until every store's last reply, as the switch saw it, reported an empty
    /// queue (then polled every 100 ms; in a chain, every rack's stores), or `limit`. A rack without a switch (kernel
    /// forwarding) cannot be asked: it waits the whole `limit`.
    pub fn drain(&self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        let state = lab::load(&self.spec.name)?;
        // Every rack's switch in a chain; the one switch of a rack (none: kernel forwarding).
        let sockets = match state.rack_admin_sockets.is_empty() {
            true => state.admin_socket.into_iter().collect(),
            false => state.rack_admin_sockets,
        };
        while started.elapsed() < limit {
            std::thread::sleep(DRAIN_POLL.min(limit.saturating_sub(started.elapsed())));
            if sockets.is_empty() {
                continue;
            }
            // A load below one step's worth of waiting requests: an empty queue (what is
            // left is how busy the store was, which its last reply keeps saying).
            let waiting = |load: u16| load >= pegasus_store::capacity::UTILISATION_STEPS;
            let mut busy = false;
            for socket in &sockets {
                let status = pegasus_control::service::admin::probe(socket, DRAIN_POLL)?;
                busy |= status.server_loads.iter().any(|&(_, load)| waiting(load));
            }
            if !busy {
                break;
            }
        }
        Ok(())
    }

    /// `pegasus bench --keys KEYS --json - ARGS` in client namespace `client`.
    pub fn bench(&self, client: u8, keys: u64, args: &[&str]) -> Result<Summary> {
        let out = lab::client_command(&self.spec.name, client, &self.exe)?
            .args(["bench", "--keys", &keys.to_string(), "--json", "-"])
            .args(args)
            .output()
            .context("running pegasus bench")?;
        ensure!(!interrupted(), "interrupted");
        if !out.status.success() {
            bail!(
                "pegasus bench {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("pegasus bench printed no summary")
    }

    /// `pegasus switch hot add KEYS` on the rack's switch.
    pub fn hot_add(&self, keys: &[String]) -> Result<()> {
        let out = std::process::Command::new(&self.exe)
            .args(["switch", "hot", "add", "--lab", &self.spec.name])
            .args(keys)
            .output()
            .context("running pegasus switch hot add")?;
        ensure!(
            out.status.success(),
            "pegasus switch hot add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.spec.name) {
            tracing::warn!("removing lab {}: {e:#}", self.spec.name);
        }
    }
}

/// The arguments of a `pegasus bench run`, typed.
#[derive(Clone, Debug)]
pub struct BenchRun {
    /// Open loop at this rate; closed loop with `concurrency` otherwise.
    pub rate: Option<f64>,
    pub concurrency: u32,
    pub seconds: f64,
    pub warmup: f64,
    pub read_ratio: f64,
    /// Zipf theta; uniform when `None`.
    pub theta: Option<f64>,
    pub swap_at: Option<f64>,
    pub timeline_ms: Option<u64>,
    /// In a chain of racks, where reads go.
    pub read_from: pegasus_client::ReadFrom,
}

impl BenchRun {
    /// A closed loop with 64 requests outstanding, read-only, `seconds` long.
    pub fn closed(theta: Option<f64>, seconds: f64) -> BenchRun {
        BenchRun {
            rate: None,
            concurrency: 64,
            seconds,
            warmup: 0.0,
            read_ratio: 1.0,
            theta,
            swap_at: None,
            timeline_ms: None,
            read_from: pegasus_client::ReadFrom::Tail,
        }
    }

    /// Its `pegasus bench` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "run".to_owned(),
            "--seconds".to_owned(),
            self.seconds.to_string(),
            "--warmup".to_owned(),
            self.warmup.to_string(),
            "--read-ratio".to_owned(),
            self.read_ratio.to_string(),
        ];
        match self.rate {
            Some(rate) => args.extend(["--rate".to_owned(), format!("{rate:.0}")]),
            None => args.extend(["--concurrency".to_owned(), self.concurrency.to_string()]),
        }
        match self.theta {
            None => args.extend(["--distribution".into(), "uniform".into()]),
            Some(theta) => args.extend([
                "--distribution".into(),
                "zipf".into(),
                "--theta".into(),
                theta.to_string(),
            ]),
        }
        if let Some(at) = self.swap_at {
            args.extend(["--swap-at".to_owned(), at.to_string()]);
        }
        if let Some(ms) = self.timeline_ms {
            args.extend(["--timeline-ms".to_owned(), ms.to_string()]);
        }
        if self.read_from == pegasus_client::ReadFrom::Any {
            args.extend(["--read-from".to_owned(), "any".to_owned()]);
        }
        args
    }
}

impl Rack {
    /// Runs `run` from client namespace `client` over a key space of `keys`.
    pub fn run(&self, client: u8, keys: u64, run: &BenchRun) -> Result<Summary> {
        let args = run.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.bench(client, keys, &args)
    }
}

/// True once Ctrl-C or SIGTERM arrived (see [`catch_interrupts`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Set by Ctrl-C (SIGINT) or SIGTERM: the sweep stops at the next rate and its racks are
/// brought down.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turns SIGINT and SIGTERM into [`INTERRUPTED`] instead of an exit that would leave the labs
/// behind. A handler (not SIG_IGN) so that the `pegasus bench` children, which get the same
/// Ctrl-C, still stop by it: exec resets handled signals to their default.
pub fn catch_interrupts() {
    extern "C" fn interrupted(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    let handler = interrupted as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}
