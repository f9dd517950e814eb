//! `pegasus bench`: a YCSB-style load generator. `load` writes every key of a key space once;
//! `run` drives a mix of reads and updates over it (workloads a, b, c or any read ratio;
//! uniform, Zipf or hotspot keys; closed or open loop) and reports throughput, latency
//! percentiles per operation, errors and each server's share of the replies.

mod drive;
mod report;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand, ValueEnum};
use drive::{Pace, Plan};
use indicatif::{ProgressBar, ProgressStyle};
use pegasus_client::{
    Client, ClientOptions, Cluster,
    workload::{HotSwap, KeyChooser, KeyNames, Popularity},
};
use pegasus_common::wire;
pub use report::{KeyOrder, Latency, OpSummary, PaceKind, Phase, Setup, Summary, Timeline};
use report::{OpKind, Recorder};
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};
use tokio::task::JoinSet;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    client: crate::ClientArgs,
    #[command(flatten)]
    keys: KeySpaceArgs,
    /// Also write the summary as JSON to FILE ('-': standard output, instead of the
    /// YCSB-like lines).
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: BenchCommand,
}

/// The key space, the same for `load` and `run`.
#[derive(Args)]
struct KeySpaceArgs {
    /// Keys in the key space, named by rank: user0 (the most popular) ... user{KEYS-1}.
    #[arg(long, global = true, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per key name (the rank zero-padded, as YCSB's keys); default: unpadded (user42).
    #[arg(long, global = true)]
    key_size: Option<usize>,
    /// Bytes per written value.
    #[arg(long, global = true, default_value_t = 64)]
    value_size: usize,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The load phase: write every key of the key space once.
    Load {
        /// Writes in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: u32,
    },
    /// The run phase: reads and updates of keys drawn from a popularity law.
    Run(RunArgs),
}

/// YCSB's core workloads.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    /// 50% reads, 50% updates.
    A,
    /// 95% reads, 5% updates.
    B,
    /// 100% reads.
    C,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Distribution {
    Uniform,
    /// Exact Zipf over the key ranks with exponent --theta (any theta > 0).
    Zipf,
    /// --hotspot-fraction of the keys get --hotspot-share of the requests.
    Hotspot,
}

#[derive(Args)]
struct RunArgs {
    /// YCSB core workload: a (50/50), b (95/5) or c (read only).
    #[arg(long, value_enum, default_value = "c")]
    workload: Workload,
    /// Fraction of reads, instead of a workload's (e.g. 0.75).
    #[arg(long)]
    read_ratio: Option<f64>,
    /// How key popularity is spread.
    #[arg(long, value_enum, default_value = "zipf")]
    distribution: Distribution,
    /// The Zipf exponent (0.99 is YCSB's; above 1 is more skewed).
    #[arg(long, default_value_t = 0.99)]
    theta: f64,
    /// Hotspot: the fraction of keys that are hot.
    #[arg(long, default_value_t = 0.2)]
    hotspot_fraction: f64,
    /// Hotspot: the fraction of requests that go to the hot keys.
    #[arg(long, default_value_t = 0.8)]
    hotspot_share: f64,
    /// Closed loop: requests outstanding (each worker waits for its reply).
    #[arg(long, default_value_t = 32, conflicts_with = "rate")]
    concurrency: u32,
    /// Open loop: send this many requests per second, whatever the replies; latency counts
    /// from each request's intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: most requests outstanding; past it the sender waits (and the wait counts
    /// in the latency).
    #[arg(long, default_value_t = 10_000)]
    max_outstanding: u32,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds run first and not measured (caches, the switch's controller settle).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seed of the key and operation choices (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Change the hot set abruptly this many seconds into the run (warm-up included): the
    /// --swap-count most popular keys trade popularity with as many cold keys from the middle
    /// of the key space (how fast does the controller follow?).
    #[arg(long)]
    swap_at: Option<f64>,
    /// Keys that trade places at --swap-at.
    #[arg(long, default_value_t = 16)]
    swap_count: u64,
    /// Also report replies per server in intervals of this many milliseconds (the JSON's
    /// `timeline`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    timeline_ms: Option<u64>,
    /// Clients the requests are spread over, each with a client id, a socket and a write
    /// window of its own (consecutive ids from a random one). A client sends a write only
    /// within 64 of its oldest write outstanding (the switch's at-most-once window,
    /// docs/protocol.md), so a single client's writes stall behind one slow write: with
    /// stores that serve a request in 4 ms, one client held a 64-server rack at 50% writes
    /// to about 6,900 requests/s.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=CLIENTS_MAX as i64))]
    clients: u16,
}

/// Most clients in one generator.
const CLIENTS_MAX: u16 = 256;

/// Most requests outstanding.
const CONCURRENCY_MAX: u32 = 65_536;
/// Longest phase.
const SECONDS_MAX: f64 = 3600.0;
/// Fastest open loop.
const RATE_MAX: f64 = 10_000_000.0;

/// Runs `pegasus bench`: the load or the run phase, then prints or writes its summary.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let names = KeyNames::new(args.keys.keys, args.keys.key_size)?;
    // Flags are checked before the cluster file is read.
    let rack = || -> Result<_> {
        let cluster = args.client.cluster()?;
        Ok((cluster.servers.len(), cluster, args.client.options()))
    };
    let value: Arc<[u8]> = vec![b'v'; args.keys.value_size].into();
    let summary = match args.command {
        BenchCommand::Load { concurrency } => {
            check_concurrency(concurrency)?;
            let keys = args.keys.keys;
            KeyChooser::new(keys, Popularity::Uniform)?;
            let setup = Setup {
                phase: Phase::Load,
                keys,
                key_size: args.keys.key_size,
                value_size: value.len(),
                read_ratio: 0.0,
                distribution: KeyOrder::Sequential,
                theta: None,
                hotspot_fraction: None,
                hotspot_share: None,
                pace: PaceKind::Closed,
                concurrency: Some(concurrency),
                target_rate: None,
                warmup_seconds: 0.0,
                swap_at_seconds: None,
                clients: Some(1),
                seed: 0,
            };
            let (servers, cluster, options) = rack()?;
            let (recorder, seconds) = crate::block_on(2, async move {
                let client = Arc::new(Client::connect(cluster, options).await?);
                load(client, keys, names, value, concurrency).await
            })?;
            let recorder = recorder.lock().expect("recorder poisoned");
            recorder.summarize(setup, seconds, servers)
        }
        BenchCommand::Run(run) => {
            let (plan, setup, timeline) = plan(&run, &args.keys, names, value)?;
            let clients = run.clients;
            let (servers, cluster, options) = rack()?;
            let total = plan.warmup + plan.measure;
            let seconds = plan.measure.as_secs_f64();
            let recorder = crate::block_on(2, async move {
                let clients = connect_clients(&cluster, &options, clients).await?;
                let start = Instant::now();
                let recorder = Arc::new(Mutex::new(Recorder::new(timeline.map(|t| (start, t)))));
                let bar = progress(total.as_secs(), "running (s)");
                let ticker = {
                    let bar = bar.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(Duration::from_secs(1));
                        loop {
                            tick.tick().await;
                            bar.set_position(start.elapsed().as_secs());
                        }
                    })
                };
                let driven = drive::run(clients, plan, start, recorder.clone()).await;
                ticker.abort();
                bar.finish_and_clear();
                driven?;
                anyhow::Ok(recorder)
            })?;
            let recorder = recorder.lock().expect("recorder poisoned");
            recorder.summarize(setup, seconds, servers)
        }
    };
    report(&summary, args.json.as_deref())?;
    // A load that left keys unwritten fails: a run over them would read nothing.
    if summary.setup.phase == Phase::Load && summary.errors > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects `count` clients with consecutive ids from a random one (distinct, so that no two
/// share a write window at the switch).
async fn connect_clients(
    cluster: &Cluster,
    options: &ClientOptions,
    count: u16,
) -> Result<Vec<Arc<Client>>> {
    let first = rand::random_range(0..wire::CONTROLLER_CLIENT_ID - count);
    let mut clients = Vec::with_capacity(count as usize);
    for id in first..first + count {
        let options = ClientOptions {
            client_id: Some(id),
            ..options.clone()
        };
        clients.push(Arc::new(Client::connect(cluster.clone(), options).await?));
    }
    Ok(clients)
}

fn check_concurrency(concurrency: u32) -> Result<()> {
    ensure!(
        (1..=CONCURRENCY_MAX).contains(&concurrency),
        "--concurrency must be in 1..={CONCURRENCY_MAX}"
    );
    Ok(())
}

/// The run's plan and setup from its flags, checked.
fn plan(
    run: &RunArgs,
    keys: &KeySpaceArgs,
    names: KeyNames,
    value: Arc<[u8]>,
) -> Result<(Plan, Setup, Option<Duration>)> {
    let read_ratio = run.read_ratio.unwrap_or(match run.workload {
        Workload::A => 0.5,
        Workload::B => 0.95,
        Workload::C => 1.0,
    });
    ensure!(
        (0.0..=1.0).contains(&read_ratio),
        "--read-ratio is a fraction in [0, 1]"
    );
    ensure!(
        run.seconds > 0.0 && run.seconds <= SECONDS_MAX,
        "--seconds must be in (0, {SECONDS_MAX}]"
    );
    ensure!(
        run.warmup >= 0.0 && run.warmup <= SECONDS_MAX,
        "--warmup must be in [0, {SECONDS_MAX}]"
    );
    let popularity = match run.distribution {
        Distribution::Uniform => Popularity::Uniform,
        Distribution::Zipf => Popularity::Zipf(run.theta),
        Distribution::Hotspot => Popularity::Hotspot {
            hot_fraction: run.hotspot_fraction,
            hot_share: run.hotspot_share,
        },
    };
    let chooser = KeyChooser::new(keys.keys, popularity)?;
    let pace = match run.rate {
        Some(rate) => {
            ensure!(
                rate > 0.0 && rate <= RATE_MAX,
                "--rate must be in (0, {RATE_MAX}]"
            );
            ensure!(
                (1..=CONCURRENCY_MAX).contains(&run.max_outstanding),
                "--max-outstanding must be in 1..={CONCURRENCY_MAX}"
            );
            Pace::Open {
                rate,
                max_outstanding: run.max_outstanding,
            }
        }
        None => {
            check_concurrency(run.concurrency)?;
            Pace::Closed {
                concurrency: run.concurrency,
            }
        }
    };
    let swap = match run.swap_at {
        Some(at) => {
            if !(at >= 0.0 && at < run.warmup + run.seconds) {
                bail!("--swap-at must fall within the run (warm-up included)");
            }
            ensure!(
                run.swap_count >= 1 && run.swap_count <= keys.keys / 4,
                "--swap-count must be in 1..={} for {} keys",
                keys.keys / 4,
                keys.keys
            );
            Some((
                Duration::from_secs_f64(at),
                HotSwap {
                    count: run.swap_count,
                    offset: keys.keys / 2,
                },
            ))
        }
        None => None,
    };
    let seed = run.seed.unwrap_or_else(rand::random);
    let (distribution, theta, hotspot) = match popularity {
        Popularity::Uniform => (KeyOrder::Uniform, None, None),
        Popularity::Zipf(theta) => (KeyOrder::Zipf, Some(theta), None),
        Popularity::Hotspot {
            hot_fraction,
            hot_share,
        } => (KeyOrder::Hotspot, None, Some((hot_fraction, hot_share))),
    };
    let setup = Setup {
        phase: Phase::Run,
        keys: keys.keys,
        key_size: keys.key_size,
        value_size: value.len(),
        read_ratio,
        distribution,
        theta,
        hotspot_fraction: hotspot.map(|h| h.0),
        hotspot_share: hotspot.map(|h| h.1),
        pace: match pace {
            Pace::Closed { .. } => PaceKind::Closed,
            Pace::Open { .. } => PaceKind::Open,
        },
        concurrency: match pace {
            Pace::Closed { concurrency } => Some(concurrency),
            Pace::Open { .. } => None,
        },
        target_rate: run.rate,
        warmup_seconds: run.warmup,
        swap_at_seconds: run.swap_at,
        clients: Some(run.clients),
        seed,
    };
    let plan = Plan {
        chooser,
        names,
        swap,
        read_ratio,
        value,
        warmup: Duration::from_secs_f64(run.warmup),
        measure: Duration::from_secs_f64(run.seconds),
        seed,
        pace,
    };
    Ok((plan, setup, run.timeline_ms.map(Duration::from_millis)))
}

/// Prints the summary (YCSB-like lines) and writes its JSON where asked.
fn report(summary: &Summary, json: Option<&std::path::Path>) -> Result<()> {
    let text = serde_json::to_string_pretty(summary)?;
    match json {
        Some(path) if path.as_os_str() == "-" => println!("{text}"),
        Some(path) => {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            print!("{}", summary.ycsb_lines());
        }
        None => print!("{}", summary.ycsb_lines()),
    }
    Ok(())
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

/// Writes every key once, `concurrency` at a time; returns the tally and how long it took.
async fn load(
    client: Arc<Client>,
    keys: u64,
    names: KeyNames,
    value: Arc<[u8]>,
    concurrency: u32,
) -> Result<(Arc<Mutex<Recorder>>, f64)> {
    let bar = progress(keys, "loading");
    let next = Arc::new(AtomicU64::new(0));
    let recorder = Arc::new(Mutex::new(Recorder::new(None)));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, value, bar, recorder) = (
            client.clone(),
            next.clone(),
            value.clone(),
            bar.clone(),
            recorder.clone(),
        );
        workers.spawn(async move {
            loop {
                let rank = next.fetch_add(1, Relaxed);
                if rank >= keys {
                    return;
                }
                let sent = Instant::now();
                let outcome =
                    drive::execute(&client, OpKind::Update, &names.name(rank), &value).await;
                recorder.lock().expect("recorder poisoned").record(
                    OpKind::Update,
                    sent.elapsed(),
                    outcome,
                );
                bar.inc(1);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done?;
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    Ok((recorder, seconds))
}
