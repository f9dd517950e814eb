//! `pegasus experiment faults`: a campaign of seeded fault runs. Each run builds a lab rack,
//! records concurrent reads and writes of hot and cold keys from every client while a schedule
//! drawn from the run's seed injects faults (loss, duplication with copies up to 10 s late,
//! delay with jitter, reordering, on links and directions of its choice; switch crashes; store
//! crashes; keys made hot and cold), waits until every late copy has landed, reads every key
//! back, and checks the history for linearizability. A lost acknowledged write shows as a read
//! back that is not linearizable.
//!
//! With `--racks 2` or more each run is a chain of racks, and a rack chosen at random is
//! killed mid-run: nothing acknowledged may be lost, so every key is checked.
//!
//! In a single rack, a store that crashes loses its keys (no other rack has them): the keys it
//! could hold (cold keys it is home of, and every hot key) are checked apart and counted as
//! *exposed*, and those among them that are not linearizable as *lost to a store crash*, never
//! as violations. A failed run prints its seed; `--replay SEED` runs it again.

use super::rack::{self, Rack};
use anyhow::{Context, Result, ensure};
use clap::Args;
use pegasus_client::placement::Placement;
use pegasus_common::{fault::splitmix64, hash::key_hash};
use pegasus_control::lab::{
    self, Dataplane, Host,
    fault::{DirectionFaults, Injector, LinkPlan},
};
use pegasus_linearizability::history::{KeyVerdict, Record, check_records, parse_lines};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use std::{
    fmt::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

/// Hot and cold keys of a run.
const HOT: usize = 4;
const COLD: usize = 40;
/// Steps the checker may take per key before it calls the key unknown.
const STEP_LIMIT: u64 = 20_000_000;

#[derive(Args)]
pub struct FaultsArgs {
    /// Runs in the campaign.
    #[arg(long, default_value_t = 20)]
    runs: u32,
    /// The campaign's seed (each run's seed derives from it; default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Run only the run with this seed (as a failed run printed it).
    #[arg(long, conflicts_with_all = ["runs", "seed"])]
    replay: Option<u64>,
    /// Storage servers per rack.
    #[arg(long, default_value_t = 4)]
    servers: u8,
    /// Client namespaces per rack, each recording a history.
    #[arg(long, default_value_t = 2)]
    clients: u8,
    /// Racks in a chain (docs/chain.md, at most 8). With 2 or more, every run kills a rack chosen at
    /// random mid-run (its switch, controller and stores: `lab kill-rack`), faults go on the
    /// clients' links and the racks' links to the fabric, and no single switch or store
    /// crashes (in a chain, a rack fails whole).
    #[arg(long, default_value_t = 1)]
    racks: u8,
    /// Seconds of reads and writes per run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// The latest a duplicate may arrive, in milliseconds (each run draws its own bound, up
    /// to this).
    #[arg(long, default_value_t = 10_000)]
    max_dup_delay_ms: u64,
    /// Where runs.csv and summary.md go.
    #[arg(long, default_value = "faults-campaign")]
    out: PathBuf,
}

/// The faults of one run, drawn from its seed.
#[derive(Clone, Debug, Serialize)]
struct Schedule {
    /// (link, faults to the switch, faults from it).
    #[serde(skip)]
    links: Vec<(FaultyLink, DirectionFaults, DirectionFaults)>,
    /// A readable summary of the link faults.
    link_faults: String,
    /// When, from the start of the workload, the switch crashes (and how long it stays down).
    switch_crash: Option<(Duration, Duration)>,
    /// When a store crashes, which, and for how long.
    store_crash: Option<(Duration, u8, Duration)>,
    /// In a chain: when a rack is killed, and which.
    rack_kill: Option<(Duration, u8)>,
    /// The latest a duplicate arrives.
    max_dup_delay: Duration,
}

/// A link faults may go on: a host's (a rack's server or client), or, in a chain, a rack's
/// link to the fabric between racks.
#[derive(Clone, Copy, Debug)]
enum FaultyLink {
    Host(Host),
    Chain(u8),
}

impl FaultyLink {
    fn label(self) -> String {
        match self {
            FaultyLink::Host(host) => host.addressing().tor_port,
            FaultyLink::Chain(rack) => format!("l{rack}"),
        }
    }

    fn endpoints(self, lab: &str, chain: bool) -> lab::fault::Link {
        match self {
            FaultyLink::Host(Host::Client(j)) if chain => lab::chain::client_link(lab, j),
            FaultyLink::Host(host) => host.link(lab),
            FaultyLink::Chain(rack) => lab::chain::chain_link(lab, rack),
        }
    }
}

impl Schedule {
    fn draw(seed: u64, args: &FaultsArgs) -> Self {
        let (servers, clients, seconds) = (args.servers, args.clients, args.seconds);
        let chain = args.racks > 1;
        let mut rng = StdRng::seed_from_u64(seed);
        let bounds = [100, 1_000, 3_000, args.max_dup_delay_ms];
        let max_dup_delay_ms = bounds[rng.random_range(0..bounds.len())].min(args.max_dup_delay_ms);
        let max_dup_delay = Duration::from_millis(max_dup_delay_ms);
        let hosts: Vec<FaultyLink> = if chain {
            (0..clients)
                .map(|c| FaultyLink::Host(Host::Client(c)))
                .chain((0..args.racks).map(FaultyLink::Chain))
                .collect()
        } else {
            (0..servers)
                .map(Host::Server)
                .chain((0..clients).map(Host::Client))
                .map(FaultyLink::Host)
                .collect()
        };
        let mut links = Vec::new();
        let mut text = String::new();
        for host in hosts {
            if !rng.random_bool(0.6) {
                continue;
            }
            let direction = |rng: &mut StdRng| {
                let delay = if rng.random_bool(0.3) {
                    Duration::from_micros(rng.random_range(500..20_000))
                } else {
                    Duration::ZERO
                };
                DirectionFaults {
                    drop: rng.random_range(0.0..0.03),
                    duplicate: rng.random_range(0.0..0.08),
                    duplicate_delay: (Duration::from_millis(1), max_dup_delay),
                    delay,
                    jitter: delay.mul_f64(rng.random_range(0.0..1.0)),
                    reorder: if delay.is_zero() {
                        0.0
                    } else {
                        rng.random_range(0.0..0.5)
                    },
                }
            };
            let (to, from) = (direction(&mut rng), direction(&mut rng));
            let _ = write!(
                text,
                "{}:drop{:.1}/{:.1}%,dup{:.1}/{:.1}%,delay{:.0}/{:.0}ms ",
                host.label(),
                to.drop * 100.0,
                from.drop * 100.0,
                to.duplicate * 100.0,
                from.duplicate * 100.0,
                to.delay.as_secs_f64() * 1000.0,
                from.delay.as_secs_f64() * 1000.0
            );
            links.push((host, to, from));
        }
        let at = |rng: &mut StdRng| Duration::from_secs_f64(rng.random_range(0.3..seconds * 0.8));
        let rack_kill = chain.then(|| (at(&mut rng), rng.random_range(0..args.racks)));
        let switch_crash = (!chain && rng.random_bool(0.3)).then(|| {
            (
                at(&mut rng),
                Duration::from_millis(rng.random_range(50..500)),
            )
        });
        let store_crash = (!chain && rng.random_bool(0.3)).then(|| {
            (
                at(&mut rng),
                rng.random_range(0..servers),
                Duration::from_millis(rng.random_range(50..500)),
            )
        });
        Schedule {
            links,
            link_faults: text.trim_end().to_owned(),
            switch_crash,
            store_crash,
            rack_kill,
            max_dup_delay,
        }
    }
}

/// One run's outcome.
#[derive(Debug, Serialize)]
struct RunOutcome {
    run: u32,
    seed: u64,
    faulty_links: usize,
    link_faults: String,
    max_dup_delay_ms: u64,
    switch_crash: bool,
    store_crash: Option<u8>,
    /// In a chain: the rack killed, and how long the chain took to go on without it.
    rack_killed: Option<u8>,
    reconfigured_ms: Option<u64>,
    operations: usize,
    duplicates: u64,
    dropped: u64,
    /// Keys checked (not exposed to a store crash) that are not linearizable.
    violations: usize,
    /// Keys a crashed store could hold.
    exposed: usize,
    /// Exposed keys that are not linearizable: writes lost with the store.
    lost_to_store_crash: usize,
    /// Keys whose check gave up (step limit) or whose history was invalid.
    unknown: usize,
    seconds: f64,
    /// Why the run could not complete (the rack failed to start or to restart a process).
    error: Option<String>,
}

impl RunOutcome {
    fn passed(&self) -> bool {
        self.violations == 0 && self.unknown == 0 && self.error.is_none()
    }

    /// A run that could not complete: counted, never passed.
    fn errored(run: u32, seed: u64, error: &anyhow::Error) -> RunOutcome {
        RunOutcome {
            run,
            seed,
            faulty_links: 0,
            link_faults: String::new(),
            max_dup_delay_ms: 0,
            switch_crash: false,
            store_crash: None,
            rack_killed: None,
            reconfigured_ms: None,
            operations: 0,
            duplicates: 0,
            dropped: 0,
            violations: 0,
            exposed: 0,
            lost_to_store_crash: 0,
            unknown: 0,
            seconds: 0.0,
            error: Some(format!("{error:#}")),
        }
    }
}

pub fn run(args: FaultsArgs) -> Result<ExitCode> {
    ensure!(
        args.servers >= 1 && args.clients >= 1,
        "a rack needs servers and clients"
    );
    ensure!(
        args.seconds > 0.5 && args.seconds <= 600.0,
        "--seconds is from 0.5 to 600"
    );
    ensure!(
        args.max_dup_delay_ms <= pegasus_control::lab::fault::DELAY_MAX.as_millis() as u64,
        "--max-dup-delay-ms is at most {:?}",
        pegasus_control::lab::fault::DELAY_MAX
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let campaign = args.seed.unwrap_or_else(rand::random);
    let seeds: Vec<(u32, u64)> = match args.replay {
        Some(seed) => vec![(0, seed)],
        None => {
            eprintln!("campaign seed {campaign}: {} runs", args.runs);
            (0..args.runs)
                .map(|i| (i, splitmix64(campaign ^ i as u64)))
                .collect()
        }
    };
    let progress = indicatif::ProgressBar::new(seeds.len() as u64);
    let replay = |seed: u64| match args.racks {
        1 => format!("pegasus experiment faults --replay {seed}"),
        racks => format!("pegasus experiment faults --racks {racks} --replay {seed}"),
    };
    let mut outcomes = Vec::new();
    for (run, seed) in seeds {
        ensure!(!rack::interrupted(), "interrupted");
        let outcome = match one_run(&args, run, seed) {
            Ok(outcome) => outcome,
            Err(e) => RunOutcome::errored(run, seed, &e),
        };
        if let Some(error) = &outcome.error {
            progress.println(format!(
                "run {run} could not complete: {error}; rerun with `{}`",
                replay(seed)
            ));
        } else if !outcome.passed() {
            progress.println(format!(
                "run {run} FAILED: {} keys not linearizable, {} unknown; rerun with `{}`",
                outcome.violations,
                outcome.unknown,
                replay(seed)
            ));
        }
        outcomes.push(outcome);
        progress.inc(1);
        write_results(&args, campaign, &outcomes)?;
    }
    progress.finish_and_clear();
    let failed: Vec<&RunOutcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    print!("{}", summary(campaign, &outcomes));
    for o in &failed {
        println!("FAILED run {} seed {}: {}", o.run, o.seed, replay(o.seed));
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn one_run(args: &FaultsArgs, run: u32, seed: u64) -> Result<RunOutcome> {
    let started = Instant::now();
    let schedule = Schedule::draw(seed, args);
    let mut spec = rack::spec(
        &format!("fx{run}"),
        args.servers,
        None,
        Dataplane::Xdp,
        Some(0),
    );
    spec.clients = args.clients;
    spec.racks = args.racks;
    let rack = Rack::up(spec)?;
    let name = rack.spec.name.clone();
    let exe = std::env::current_exe()?;
    let injectors = schedule
        .links
        .iter()
        .enumerate()
        .map(|(i, (host, to, from))| {
            let plan = LinkPlan {
                to_switch: to.clone(),
                from_switch: from.clone(),
                seed: splitmix64(seed ^ (i as u64 + 1)),
            };
            Injector::start(&host.endpoints(&name, args.racks > 1), &plan)
        })
        .collect::<Result<Vec<_>>>()?;
    let dir = tempdir(&args.out, run)?;
    let prefix = format!("r{run}s{}", seed % 100_000);
    let hot: Vec<String> = (0..HOT).map(|i| format!("{prefix}-hot-{i}")).collect();
    let files: Vec<PathBuf> = (0..args.clients)
        .map(|j| dir.join(format!("client{j}.jsonl")))
        .collect();

    let reconfigured_ms = std::thread::scope(|s| -> Result<Option<u64>> {
        let recorders: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(j, file)| {
                let (name, exe, prefix) = (&name, &exe, &prefix);
                s.spawn(move || -> Result<()> {
                    let out = lab::client_command(name, j as u8, exe)?
                        .args(["history", "record", "--prefix", prefix, "--out"])
                        .arg(file)
                        .args(["--hot", &HOT.to_string(), "--cold", &COLD.to_string()])
                        .args(["--hot-share", "0.6", "--write-share", "0.3"])
                        .args(["--workers", "4", "--json", "--seed"])
                        .arg((seed ^ j as u64).to_string())
                        .args(["--seconds", &args.seconds.to_string()])
                        .output()?;
                    ensure!(
                        out.status.success(),
                        "history record failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    Ok(())
                })
            })
            .collect();
        // The schedule's events, in time order, while the clients run.
        let t0 = Instant::now();
        let hot_cmd = |verb: &str, keys: &[String]| -> Result<()> {
            let out = std::process::Command::new(&exe)
                .args(["switch", "hot", verb, "--lab", &name])
                .args(keys)
                .output()?;
            ensure!(
                out.status.success(),
                "switch hot {verb}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let mut events: Vec<(Duration, u8)> = vec![(Duration::from_millis(200), 0)];
        events.push((Duration::from_secs_f64(args.seconds * 0.5), 1));
        if let Some((at, _)) = schedule.switch_crash {
            events.push((at, 2));
        }
        if let Some((at, _, _)) = schedule.store_crash {
            events.push((at, 3));
        }
        if let Some((at, _)) = schedule.rack_kill {
            events.push((at, 4));
        }
        events.sort();
        let mut reconfigured = None;
        for (at, event) in events {
            std::thread::sleep(at.saturating_sub(t0.elapsed()));
            match event {
                0 => hot_cmd("add", &hot)?,
                // Hot keys come and go; after a switch crash they may be gone already.
                1 => {
                    let _ = hot_cmd("del", &hot[..1]);
                    let _ = hot_cmd("add", &hot[..1]);
                }
                2 => {
                    let (_, down) = schedule.switch_crash.expect("scheduled");
                    lab::restart_switch(&name, down, &exe)?;
                }
                3 => {
                    let (_, server, down) = schedule.store_crash.expect("scheduled");
                    lab::restart_store(&name, server, down, &exe)?;
                }
                _ => {
                    let (_, victim) = schedule.rack_kill.expect("scheduled");
                    reconfigured = Some(lab::chain::kill_rack(&name, victim)?.reconfigured_ms);
                }
            }
        }
        for r in recorders {
            r.join()
                .map_err(|_| anyhow::anyhow!("a recorder panicked"))??;
        }
        Ok(reconfigured)
    })?;

    // Every late copy lands before the read-back (held frames are sent when due, not early).
    std::thread::sleep(schedule.max_dup_delay + Duration::from_millis(300));
    let read_back = dir.join("read-back.jsonl");
    let out = lab::client_command(&name, 0, &exe)?
        .args(["history", "record", "--prefix", &prefix, "--out"])
        .arg(&read_back)
        .args(["--hot", &HOT.to_string(), "--cold", &COLD.to_string()])
        .args(["--read-back", "--json"])
        .output()?;
    ensure!(
        out.status.success(),
        "read-back failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut duplicates, mut dropped) = (0, 0);
    for injector in injectors {
        let r = injector.stop()?;
        duplicates += r.to_switch.duplicated + r.from_switch.duplicated;
        dropped += r.to_switch.dropped + r.from_switch.dropped;
    }
    drop(rack);

    let mut records: Vec<Record> = Vec::new();
    for file in files.iter().chain([&read_back]) {
        let text = std::fs::read_to_string(file)?;
        records.extend(parse_lines(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?);
    }
    let placement = Placement::new(0..args.servers);
    let exposed = |key: &str| match schedule.store_crash {
        Some((_, server, _)) => {
            key.contains("-hot-") || placement.home(key_hash(key.as_bytes())) == server
        }
        None => false,
    };
    let report = check_records(&records, STEP_LIMIT);
    let (mut violations, mut exposed_keys, mut lost, mut unknown) = (0, 0, 0, 0);
    for key in &report.per_key {
        let bad = matches!(key.verdict, KeyVerdict::NotLinearizable { .. });
        let undecided = matches!(
            key.verdict,
            KeyVerdict::Unknown { .. } | KeyVerdict::Invalid { .. }
        );
        if exposed(&key.key) {
            exposed_keys += 1;
            lost += (bad || undecided) as usize;
        } else {
            violations += bad as usize;
            unknown += undecided as usize;
        }
    }
    if violations == 0 && unknown == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(RunOutcome {
        run,
        seed,
        faulty_links: schedule.links.len(),
        link_faults: schedule.link_faults,
        max_dup_delay_ms: schedule.max_dup_delay.as_millis() as u64,
        switch_crash: schedule.switch_crash.is_some(),
        store_crash: schedule.store_crash.map(|(_, s, _)| s),
        rack_killed: schedule.rack_kill.map(|(_, r)| r),
        reconfigured_ms,
        operations: records.len(),
        duplicates,
        dropped,
        violations,
        exposed: exposed_keys,
        lost_to_store_crash: lost,
        unknown,
        seconds: started.elapsed().as_secs_f64(),
        error: None,
    })
}

/// The run's scratch directory (kept when the run fails, for inspection).
fn tempdir(out: &std::path::Path, run: u32) -> Result<PathBuf> {
    let dir = out.join(format!("run{run}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn write_results(args: &FaultsArgs, campaign: u64, outcomes: &[RunOutcome]) -> Result<()> {
    let mut csv = String::from(
        "run,seed,faulty_links,max_dup_delay_ms,switch_crash,store_crash,rack_killed,\
         reconfigured_ms,operations,duplicates,dropped,violations,exposed,lost_to_store_crash,\
         unknown,seconds,error,link_faults\n",
    );
    for o in outcomes {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.1},\"{}\",\"{}\"",
            o.run,
            o.seed,
            o.faulty_links,
            o.max_dup_delay_ms,
            o.switch_crash,
            o.store_crash.map_or(String::new(), |s| s.to_string()),
            o.rack_killed.map_or(String::new(), |s| s.to_string()),
            o.reconfigured_ms.map_or(String::new(), |s| s.to_string()),
            o.operations,
            o.duplicates,
            o.dropped,
            o.violations,
            o.exposed,
            o.lost_to_store_crash,
            o.unknown,
            o.seconds,
            o.error.as_deref().unwrap_or("").replace('"', "'"),
            o.link_faults
        );
    }
    std::fs::write(args.out.join("runs.csv"), csv)?;
    std::fs::write(args.out.join("summary.md"), summary(campaign, outcomes))?;
    Ok(())
}

/// The campaign's table: runs, fault mix and verdicts.
fn summary(campaign: u64, outcomes: &[RunOutcome]) -> String {
    let n = outcomes.len();
    let count = |f: &dyn Fn(&RunOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let sum = |f: &dyn Fn(&RunOutcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let late = count(&|o| o.max_dup_delay_ms > 3_000);
    let mut s = String::new();
    let _ = writeln!(s, "Fault campaign, seed {campaign}: {n} runs\n");
    let _ = writeln!(s, "| | runs |");
    let _ = writeln!(s, "| --- | --- |");
    let _ = writeln!(
        s,
        "| with faulty links | {} |",
        count(&|o| o.faulty_links > 0)
    );
    let _ = writeln!(s, "| with duplicates up to more than 3 s late | {late} |");
    let _ = writeln!(
        s,
        "| with a switch crash | {} |",
        count(&|o| o.switch_crash)
    );
    let _ = writeln!(
        s,
        "| with a store crash | {} |",
        count(&|o| o.store_crash.is_some())
    );
    let _ = writeln!(
        s,
        "| with a rack of the chain killed | {} |",
        count(&|o| o.rack_killed.is_some())
    );
    let _ = writeln!(
        s,
        "| **passed** (0 violations, 0 unknown) | **{}** |",
        count(&|o| o.passed())
    );
    let mut reconfigured: Vec<u64> = outcomes.iter().filter_map(|o| o.reconfigured_ms).collect();
    reconfigured.sort_unstable();
    if !reconfigured.is_empty() {
        let _ = writeln!(
            s,
            "| rack kill to the chain going on without it: median, max | {} ms, {} ms |",
            reconfigured[reconfigured.len() / 2],
            reconfigured[reconfigured.len() - 1]
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Operations {}, duplicates injected {}, packets dropped {}; keys not linearizable {} \
         (of keys no crashed store held); keys exposed to a store crash {}, of which lost {} \
         (not violations: a single rack's crashed store loses its keys).",
        sum(&|o| o.operations as u64),
        sum(&|o| o.duplicates),
        sum(&|o| o.dropped),
        sum(&|o| o.violations as u64),
        sum(&|o| o.exposed as u64),
        sum(&|o| o.lost_to_store_crash as u64)
    );
    s
}
