//! `pegasus workload`: fill a rack with a key space, then drive it with reads and writes of
//! uniformly or Zipf-distributed keys, and report throughput, latency and how the load spread
//! over the servers.

use anyhow::{Result, ensure};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pegasus_client::{
    Client,
    workload::{HotSwap, KeyChooser, Popularity, key_name},
};
use pegasus_common::directory::SERVERS_MAX;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};
use tokio::task::JoinSet;

#[derive(Args)]
pub struct WorkloadArgs {
    #[command(flatten)]
    client: super::ClientArgs,
    /// Requests in flight at once (closed loop: each worker waits for its reply).
    #[arg(long, global = true, default_value_t = 32)]
    concurrency: u32,
    /// Print the summary as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: WorkloadCommand,
}

#[derive(Subcommand)]
enum WorkloadCommand {
    /// Write every key of the key space once (user0 ... user{KEYS-1}).
    Load {
        /// Keys in the key space.
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 64)]
        value_size: usize,
    },
    /// Run reads and writes for a while and report what happened.
    Run {
        /// Keys in the key space (as loaded).
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Zipf exponent of key popularity; 0 for uniform.
        #[arg(long, default_value_t = 0.99)]
        zipf: f64,
        /// Fraction of requests that are reads.
        #[arg(long, default_value_t = 1.0)]
        read_share: f64,
        /// Bytes per written value.
        #[arg(long, default_value_t = 64)]
        value_size: usize,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seed of the key and operation choices (default: random).
        #[arg(long)]
        seed: Option<u64>,
        /// Change the hot set abruptly this many seconds into the run: the --swap-count most
        /// popular keys trade popularity with as many cold keys from the middle of the key
        /// space (to measure how fast the controller follows).
        #[arg(long)]
        swap_at: Option<f64>,
        /// Keys that trade places at --swap-at.
        #[arg(long, default_value_t = 16)]
        swap_count: u64,
        /// Also report replies per server in intervals of this many milliseconds (the
        /// summary's `timeline`).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
        timeline_ms: Option<u64>,
    },
}

/// Most workers.
const CONCURRENCY_MAX: u32 = 4096;
/// Longest run.
const SECONDS_MAX: f64 = 3600.0;

pub fn run(args: WorkloadArgs) -> Result<ExitCode> {
    super::init_logging("warn");
    ensure!(
        (1..=CONCURRENCY_MAX).contains(&args.concurrency),
        "--concurrency must be in 1..={CONCURRENCY_MAX}"
    );
    let cluster = args.client.cluster()?;
    let options = args.client.options();
    let (concurrency, json) = (args.concurrency, args.json);
    let summary = super::block_on(2, async move {
        let client = Arc::new(Client::connect(cluster, options).await?);
        match args.command {
            WorkloadCommand::Load { keys, value_size } => {
                load(client, keys, value_size, concurrency).await
            }
            WorkloadCommand::Run {
                keys,
                zipf,
                read_share,
                value_size,
                seconds,
                seed,
                swap_at,
                swap_count,
                timeline_ms,
            } => {
                ensure!(
                    (0.0..=1.0).contains(&read_share),
                    "--read-share is a fraction in [0, 1]"
                );
                ensure!(
                    seconds > 0.0 && seconds <= SECONDS_MAX,
                    "--seconds must be in (0, {SECONDS_MAX}]"
                );
                let popularity = if zipf == 0.0 {
                    Popularity::Uniform
                } else {
                    Popularity::Zipf(zipf)
                };
                let swap = match swap_at {
                    Some(at) => {
                        ensure!(
                            at >= 0.0 && at < seconds,
                            "--swap-at must fall within the run"
                        );
                        ensure!(
                            swap_count >= 1 && swap_count <= keys / 4,
                            "--swap-count must be in 1..={} for {keys} keys",
                            keys / 4
                        );
                        Some((
                            Duration::from_secs_f64(at),
                            HotSwap {
                                count: swap_count,
                                offset: keys / 2,
                            },
                        ))
                    }
                    None => None,
                };
                let spec = RunSpec {
                    chooser: KeyChooser::new(keys, popularity)?,
                    swap,
                    timeline: timeline_ms.map(Duration::from_millis),
                    read_share,
                    value_size,
                    duration: Duration::from_secs_f64(seconds),
                    seed: seed.unwrap_or_else(rand::random),
                };
                drive(client, spec, concurrency).await
            }
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        summary.print();
    }
    Ok(if summary.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a phase did.
#[derive(Debug, Default, Serialize)]
struct Summary {
    reads: u64,
    writes: u64,
    /// Requests with no reply after every attempt, or refused.
    errors: u64,
    seconds: f64,
    ops_per_second: f64,
    /// Replies per answering server.
    per_server: BTreeMap<u8, u64>,
    /// Busiest server's replies over the mean per server (servers that answered nothing
    /// count, if the cluster has them).
    max_over_mean: f64,
    latency_us: Latency,
    /// Replies per server in consecutive intervals (with --timeline-ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<Timeline>,
}

/// Replies per server per interval, from the start of the run.
#[derive(Debug, Default, Serialize)]
struct Timeline {
    interval_ms: u64,
    /// When the hot set changed (with --swap-at), in ms from the start.
    swap_at_ms: Option<u64>,
    /// `intervals[i][server]`: replies from `server` received in interval i.
    intervals: Vec<Vec<u64>>,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Summary {
    fn print(&self) {
        println!(
            "{} reads, {} writes, {} errors in {:.1} s: {:.0} ops/s; latency p50 {} us, p99 {} \
             us, p99.9 {} us",
            self.reads,
            self.writes,
            self.errors,
            self.seconds,
            self.ops_per_second,
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.p999
        );
        println!(
            "replies per server: {:?}; busiest / mean = {:.2}",
            self.per_server, self.max_over_mean
        );
    }
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    reads: u64,
    writes: u64,
    errors: u64,
    per_server: BTreeMap<u8, u64>,
    latencies_us: Vec<u32>,
    /// Replies per (interval, server), with a timeline.
    timeline: Vec<[u64; SERVERS_MAX as usize]>,
}

impl Tally {
    /// Counts a reply from `server` in its interval of a timeline that began at `run_start`.
    fn record_interval(&mut self, run_start: Instant, interval: Duration, server: u8) {
        let i = (run_start.elapsed().as_nanos() / interval.as_nanos().max(1)) as usize;
        if i >= self.timeline.len() {
            self.timeline.resize(i + 1, [0; SERVERS_MAX as usize]);
        }
        self.timeline[i][(server as u32 % SERVERS_MAX) as usize] += 1;
    }

    fn record(&mut self, started: Instant, server: Result<u8, ()>, is_read: bool) {
        match server {
            Ok(server) => {
                *self.per_server.entry(server).or_default() += 1;
                let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                self.latencies_us.push(us);
                if is_read {
                    self.reads += 1;
                } else {
                    self.writes += 1;
                }
            }
            Err(()) => self.errors += 1,
        }
    }
}

fn summarize(tallies: Vec<Tally>, seconds: f64, servers: usize) -> Summary {
    let mut s = Summary {
        seconds,
        ..Summary::default()
    };
    let mut latencies = Vec::new();
    let mut timeline: Vec<[u64; SERVERS_MAX as usize]> = Vec::new();
    for t in &tallies {
        if t.timeline.len() > timeline.len() {
            timeline.resize(t.timeline.len(), [0; SERVERS_MAX as usize]);
        }
        for (i, interval) in t.timeline.iter().enumerate() {
            for (server, n) in interval.iter().enumerate() {
                timeline[i][server] += n;
            }
        }
    }
    let width = timeline
        .iter()
        .filter_map(|iv| iv.iter().rposition(|&n| n > 0))
        .max()
        .map_or(0, |last| last + 1)
        .max(servers);
    if !timeline.is_empty() {
        s.timeline = Some(Timeline {
            intervals: timeline.iter().map(|iv| iv[..width].to_vec()).collect(),
            ..Timeline::default()
        });
    }
    for t in tallies {
        s.reads += t.reads;
        s.writes += t.writes;
        s.errors += t.errors;
        for (server, n) in t.per_server {
            *s.per_server.entry(server).or_default() += n;
        }
        latencies.extend(t.latencies_us);
    }
    s.ops_per_second = (s.reads + s.writes) as f64 / seconds.max(1e-9);
    let total: u64 = s.per_server.values().sum();
    let mean = total as f64 / servers.max(s.per_server.len()).max(1) as f64;
    let max = s.per_server.values().copied().max().unwrap_or(0);
    s.max_over_mean = if mean > 0.0 { max as f64 / mean } else { 0.0 };
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0, |&v| v as u64)
    };
    s.latency_us = Latency {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: latencies.last().map_or(0, |&v| v as u64),
    };
    s
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

async fn load(
    client: Arc<Client>,
    keys: u64,
    value_size: usize,
    concurrency: u32,
) -> Result<Summary> {
    let bar = progress(keys, "loading");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let value: Arc<[u8]> = vec![b'v'; value_size].into();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, value, bar) = (client.clone(), next.clone(), value.clone(), bar.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let rank = next.fetch_add(1, Relaxed);
                if rank >= keys {
                    return tally;
                }
                let t = Instant::now();
                let result = client.put(key_name(rank).as_bytes(), &value).await;
                tally.record(t, result.map(|w| w.server_id).map_err(|_| ()), false);
                bar.inc(1);
            }
        });
    }
    let mut tallies = Vec::new();
    while let Some(t) = workers.join_next().await {
        tallies.push(t?);
    }
    bar.finish_and_clear();
    Ok(summarize(
        tallies,
        started.elapsed().as_secs_f64(),
        client.cluster().servers.len(),
    ))
}

struct RunSpec {
    chooser: KeyChooser,
    /// When and how the hot set changes.
    swap: Option<(Duration, HotSwap)>,
    /// Interval of the per-server timeline.
    timeline: Option<Duration>,
    read_share: f64,
    value_size: usize,
    duration: Duration,
    seed: u64,
}

async fn drive(client: Arc<Client>, spec: RunSpec, concurrency: u32) -> Result<Summary> {
    let spec = Arc::new(spec);
    let bar = progress(spec.duration.as_secs(), "running (s)");
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let (client, spec) = (client.clone(), spec.clone());
        workers.spawn(async move {
            let mut rng = StdRng::seed_from_u64(spec.seed ^ (worker as u64) << 40);
            let value = vec![b'w'; spec.value_size];
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let mut rank = spec.chooser.sample(&mut rng);
                if let Some((at, swap)) = spec.swap
                    && started.elapsed() >= at
                {
                    rank = swap.apply(rank);
                }
                let key = key_name(rank);
                let is_read = rng.random_bool(spec.read_share);
                let t = Instant::now();
                let server = if is_read {
                    client.get(key.as_bytes()).await.map(|r| r.server_id)
                } else {
                    client
                        .put(key.as_bytes(), &value)
                        .await
                        .map(|w| w.server_id)
                };
                if let (Some(interval), Ok(server)) = (spec.timeline, &server) {
                    tally.record_interval(started, interval, *server);
                }
                tally.record(t, server.map_err(|_| ()), is_read);
            }
            tally
        });
    }
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                bar.set_position(started.elapsed().as_secs());
            }
        })
    };
    let mut tallies = Vec::new();
    while let Some(t) = workers.join_next().await {
        tallies.push(t?);
    }
    ticker.abort();
    bar.finish_and_clear();
    let mut summary = summarize(
        tallies,
        started.elapsed().as_secs_f64(),
        client.cluster().servers.len(),
    );
    if let (Some(timeline), Some(interval)) = (summary.timeline.as_mut(), spec.timeline) {
        timeline.interval_ms = interval.as_millis() as u64;
        timeline.swap_at_ms = spec.swap.map(|(at, _)| at.as_millis() as u64);
    }
    Ok(summary)
}
