//! `pegasus history`: record a client history of concurrent reads and writes against a rack,
//! and check recorded histories for linearizability.

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand};
use pegasus_client::Client;
use pegasus_linearizability::{
    Record, RecordKind, check_records, history::KeyVerdict, parse_lines,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use std::{
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::task::JoinSet;

#[derive(Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    command: HistoryCommand,
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// Run concurrent reads and writes of a few hot and many cold keys, recording each
    /// operation's call and return time, as JSON lines. Several clients may record at once
    /// (in other namespaces) and their files be checked together: times come from
    /// CLOCK_MONOTONIC, which every namespace of a host shares.
    Record(RecordArgs),
    /// Check recorded histories (JSON lines, one or more files) for linearizability, key by
    /// key. Exit status 0 if linearizable, 1 if not or if the search hit its step limit.
    Check(CheckArgs),
}

#[derive(Args)]
struct RecordArgs {
    /// Where to write the history (JSON lines).
    #[arg(long)]
    out: PathBuf,
    /// Key names start with it: keys are PREFIX-hot-I and PREFIX-cold-I. Use a fresh prefix per
    /// run: the checker assumes every key starts absent.
    #[arg(long)]
    prefix: String,
    /// Number of hot keys (PREFIX-hot-S ..., from S = --hot-start).
    #[arg(long, default_value_t = 4)]
    hot: u32,
    /// Index of the first hot key: recordings with the same prefix and another start shift
    /// the hot set (check their files together: a key's history spans them all).
    #[arg(long, default_value_t = 0)]
    hot_start: u32,
    /// Number of cold keys (PREFIX-cold-0 ...).
    #[arg(long, default_value_t = 100)]
    cold: u32,
    /// Fraction of operations on hot keys.
    #[arg(long, default_value_t = 0.5)]
    hot_share: f64,
    /// Fraction of operations that are writes.
    #[arg(long, default_value_t = 0.5)]
    write_share: f64,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent workers, each running one operation at a time.
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Instead of a timed mix, read every key once (its hot and cold keys), as the end of a
    /// run: checked with the run's files, each read must return the last acknowledged write
    /// (or one whose outcome was unknown).
    #[arg(long, conflicts_with_all = ["seconds", "hot_share", "write_share"])]
    read_back: bool,
    #[command(flatten)]
    client: crate::ClientArgs,
    /// Seed of the key and operation choices (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// History files (JSON lines), checked as one history.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Most search steps per key before giving up with "unknown".
    #[arg(long, default_value_t = 50_000_000)]
    step_limit: u64,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
}

/// Most workers of one recorder.
const WORKERS_MAX: u32 = 1024;
/// Longest recording.
const SECONDS_MAX: f64 = 3600.0;

/// Runs `pegasus history`.
pub fn run(args: HistoryArgs) -> Result<ExitCode> {
    match args.command {
        HistoryCommand::Record(args) => record(args),
        HistoryCommand::Check(args) => check(args),
    }
}

/// What a recording did.
#[derive(Debug, Serialize)]
struct RecordSummary {
    operations: usize,
    reads: usize,
    writes: usize,
    /// Operations with no reply after every attempt.
    unanswered: usize,
    seconds: f64,
    out: PathBuf,
}

fn record(args: RecordArgs) -> Result<ExitCode> {
    ensure!(args.hot + args.cold > 0, "need at least one key");
    ensure!(
        (0.0..=1.0).contains(&args.hot_share) && (0.0..=1.0).contains(&args.write_share),
        "--hot-share and --write-share are fractions in [0, 1]"
    );
    ensure!(
        args.seconds > 0.0 && args.seconds <= SECONDS_MAX,
        "--seconds must be in (0, {SECONDS_MAX}]"
    );
    ensure!(
        (1..=WORKERS_MAX).contains(&args.workers),
        "--workers must be in 1..={WORKERS_MAX}"
    );
    let cluster = args.client.cluster()?;
    let options = args.client.options();
    let mut out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let keys = Arc::new(Keys::new(&args));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let records = crate::block_on(2, async move {
        let client = Arc::new(Client::connect(cluster, options).await?);
        let mut workers = JoinSet::new();
        for worker in 0..args.workers {
            let (client, keys) = (client.clone(), keys.clone());
            if args.read_back {
                workers.spawn(read_back(client, keys, worker, args.workers));
                continue;
            }
            let rng = StdRng::seed_from_u64(seed ^ (worker as u64) << 32);
            let shares = (args.hot_share, args.write_share);
            workers.spawn(run_worker(client, keys, worker, rng, shares, deadline));
        }
        let mut records = Vec::new();
        while let Some(done) = workers.join_next().await {
            records.extend(done?);
        }
        anyhow::Ok(records)
    })?;
    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let summary = RecordSummary {
        operations: records.len(),
        reads: records
            .iter()
            .filter(|r| r.kind == RecordKind::Read)
            .count(),
        writes: records
            .iter()
            .filter(|r| r.kind == RecordKind::Write)
            .count(),
        unanswered: records.iter().filter(|r| r.return_ns.is_none()).count(),
        seconds: started.elapsed().as_secs_f64(),
        out: args.out,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "recorded {} operations ({} reads, {} writes, {} unanswered) in {:.1} s to {}",
            summary.operations,
            summary.reads,
            summary.writes,
            summary.unanswered,
            summary.seconds,
            summary.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The recorded keys.
struct Keys {
    hot: Vec<String>,
    cold: Vec<String>,
}

impl Keys {
    fn new(args: &RecordArgs) -> Keys {
        let names = |kind: &str, start: u32, n: u32| -> Vec<String> {
            (start..start.saturating_add(n))
                .map(|i| format!("{}-{kind}-{i}", args.prefix))
                .collect()
        };
        Keys {
            hot: names("hot", args.hot_start, args.hot),
            cold: names("cold", 0, args.cold),
        }
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.hot.iter().chain(&self.cold)
    }

    fn pick(&self, rng: &mut StdRng, hot_share: f64) -> &str {
        let hot = !self.hot.is_empty() && (self.cold.is_empty() || rng.random_bool(hot_share));
        let set = if hot { &self.hot } else { &self.cold };
        &set[rng.random_range(0..set.len())]
    }
}

/// One worker: one operation at a time until `deadline`, each recorded.
async fn run_worker(
    client: Arc<Client>,
    keys: Arc<Keys>,
    worker: u32,
    mut rng: StdRng,
    (hot_share, write_share): (f64, f64),
    deadline: Instant,
) -> Vec<Record> {
    let who = writer_name(&client, worker);
    let mut records = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let key = keys.pick(&mut rng, hot_share).to_string();
        let record = if rng.random_bool(write_share) {
            seq += 1;
            let value = format!("{who}.{seq}");
            write(&client, &who, key, value).await
        } else {
            read(&client, &who, key).await
        };
        records.push(record);
    }
    records
}

/// One of `workers` workers reading every key once: this one reads every `workers`-th key,
/// from its `worker`-th.
async fn read_back(client: Arc<Client>, keys: Arc<Keys>, worker: u32, workers: u32) -> Vec<Record> {
    let who = writer_name(&client, worker);
    let mut records = Vec::new();
    for key in keys.all().skip(worker as usize).step_by(workers as usize) {
        records.push(read(&client, &who, key.clone()).await);
    }
    records
}

/// A worker's name, unique across workers, clients (random id) and processes (pid): the
/// values it writes carry it.
fn writer_name(client: &Client, worker: u32) -> String {
    format!("{:04x}.{}.{worker}", client.client_id(), std::process::id())
}

async fn write(client: &Client, who: &str, key: String, value: String) -> Record {
    let call_ns = monotonic_ns();
    let result = client.put(key.as_bytes(), value.as_bytes()).await;
    let return_ns = monotonic_ns();
    Record {
        client: who.to_owned(),
        key,
        kind: RecordKind::Write,
        value: Some(value),
        call_ns,
        return_ns: result.is_ok().then_some(return_ns),
        server: result.as_ref().ok().map(|w| w.server_id),
        version: result.as_ref().ok().map(|w| w.version),
    }
}

async fn read(client: &Client, who: &str, key: String) -> Record {
    let call_ns = monotonic_ns();
    let result = client.get(key.as_bytes()).await;
    let return_ns = monotonic_ns();
    let answered = result.as_ref().ok();
    Record {
        client: who.to_owned(),
        key,
        kind: RecordKind::Read,
        value: answered
            .and_then(|r| r.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        call_ns,
        return_ns: answered.map(|_| return_ns),
        server: answered.map(|r| r.server_id),
        version: answered.map(|r| r.version),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process and namespace of the host.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let mut records = Vec::new();
    for file in &args.files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let parsed = parse_lines(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        records.extend(parsed);
    }
    if records.is_empty() {
        bail!("the history is empty");
    }
    let started = Instant::now();
    let report = check_records(&records, args.step_limit);
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} operations on {} keys, checked in {seconds:.2} s: {}",
            report.operations,
            report.keys,
            if report.linearizable() {
                "linearizable".to_string()
            } else {
                format!(
                    "NOT linearizable ({} keys violate, {} unknown, {} invalid)",
                    report.not_linearizable_keys, report.unknown_keys, report.invalid_keys
                )
            }
        );
        for key in &report.per_key {
            let servers: Vec<String> = key.read_servers.iter().map(u8::to_string).collect();
            let describe = match &key.verdict {
                KeyVerdict::Linearizable if key.read_servers.len() <= 1 => continue,
                KeyVerdict::Linearizable => "linearizable".to_string(),
                KeyVerdict::NotLinearizable {
                    stuck,
                    linearized,
                    tail,
                    value,
                } => {
                    let mut s = format!(
                        "NOT linearizable: after {linearized} operations (value {value:?}), \
                         no order places {}; the last ones placed:",
                        describe(stuck)
                    );
                    for r in tail {
                        s.push_str(&format!("\n      {}", describe(r)));
                    }
                    s
                }
                KeyVerdict::Unknown { steps } => format!("unknown after {steps} steps"),
                KeyVerdict::Invalid { reason } => format!("invalid: {reason}"),
            };
            println!(
                "  {}: {} reads, {} writes ({} unanswered), read from servers [{}]: {describe}",
                key.key,
                key.reads,
                key.writes,
                key.writes_unanswered,
                servers.join(",")
            );
        }
    }
    Ok(if report.linearizable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe(r: &Record) -> String {
    let returned = r
        .return_ns
        .map_or_else(|| "never".to_string(), |t| t.to_string());
    format!(
        "{} {:?} {:?} by {} [{} .. {returned}] (server {:?}, version {:?})",
        match r.kind {
            RecordKind::Read => "read",
            RecordKind::Write => "write",
        },
        r.key,
        r.value,
        r.client,
        r.call_ns,
        r.server,
        r.version
    )
}
