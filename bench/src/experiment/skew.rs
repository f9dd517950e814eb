//! `pegasus experiment skew`: the skew experiment. For each system (kernel forwarding, the XDP
//! switch with no directory, Pegasus) it builds a lab rack whose stores have an emulated
//! capacity, loads the key space, and for each point of a sweep over key popularity and write
//! ratio finds the throughput the rack sustains with its p99 latency under a bound (a binary
//! search over the offered open-loop rate: `search`), several times (`--trials`): a point's
//! figure is the median of its trials, with their range. Writes `results.csv` (one line per
//! trial), `summary.md` (medians, ranges, and where two systems' ranges overlap) and PNG plots
//! with the ranges as error bars (`plot`).

use super::{
    plot,
    rack::{self, BenchRun, Rack},
    search::{self, Found, Probe},
};
use anyhow::{Context, Result, ensure};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pegasus_control::lab::Dataplane;
use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

/// The systems compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    /// Plain kernel IPv4 forwarding on the ToR: no switch at all.
    Kernel,
    /// The XDP switch forwarding and stamping versions, with no directory (--hot-keys 0).
    Xdp,
    /// The XDP switch with its directory and controller (Pegasus).
    Pegasus,
    /// The in-switch cache baseline (NetCache-style): the XDP switch answers the hot keys'
    /// reads from values it caches; writes go home (`pegasus switch --cache`).
    Cache,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Kernel => "kernel",
            System::Xdp => "xdp",
            System::Pegasus => "pegasus",
            System::Cache => "cache",
        }
    }
}

/// `pegasus experiment skew`.
#[derive(Args)]
pub struct SkewArgs {
    /// Where to write results.csv, summary.md and the plots (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// A reduced sweep that runs in a few minutes: uniform and Zipf 0.99 and 1.2, 0% and 50%
    /// writes, shorter runs and a coarser search (flags given explicitly still win).
    #[arg(long)]
    quick: bool,
    /// Systems to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    systems: Option<Vec<System>>,
    /// Key popularity points, comma-separated: `uniform` or a Zipf theta.
    #[arg(long, value_delimiter = ',')]
    skews: Option<Vec<String>>,
    /// Write ratios, comma-separated fractions.
    #[arg(long, value_delimiter = ',')]
    write_ratios: Option<Vec<f64>>,
    /// Storage servers in each rack.
    #[arg(long, default_value_t = 8)]
    servers: u8,
    /// Racks in a chain (docs/chain.md): writes cross every rack, reads are served by the
    /// tail; only the XDP systems (xdp, pegasus) run in a chain.
    #[arg(long, default_value_t = 1)]
    racks: u8,
    /// In a chain, where the clients read: `tail`, or `any` rack (each answers what it knows
    /// committed; the search then covers the capacity of every rack).
    #[arg(long, default_value = "tail")]
    read_from: pegasus_client::ReadFrom,
    /// How the switch picks a server for a hot key (the switch's --policy; default its own).
    #[arg(long, value_enum)]
    policy: Option<pegasus_control::service::config::PolicyName>,
    /// Emulated capacity of every store, requests/s (a hot server saturates as a real one).
    #[arg(long, default_value_t = 2000)]
    capacity_ops: u32,
    /// Keys in the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// The latency bound: a rate passes only with p99 under it, in milliseconds.
    #[arg(long, default_value_t = 20.0)]
    p99_ms: f64,
    /// Seconds measured at each rate (default 3; 1 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds of warm-up before each measurement (default 2; 1 with --quick).
    #[arg(long)]
    warmup: Option<f64>,
    /// Times each point is measured (each a whole search); its figure is the median, with
    /// the range of the trials.
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// The search's resolution: it halves the range of rates (0 to 1.25x the rack's
    /// capacity) until its step is at most this share of the capacity.
    #[arg(long, default_value_t = 0.02)]
    resolution: f64,
    /// Halvings of the rate search, instead of what --resolution gives.
    #[arg(long)]
    steps: Option<u32>,
}

/// The rate search covers 0 to this many times the rack's capacity.
const SEARCH_TOP: f64 = 1.25;

/// Halvings until the search's step is at most `resolution` of the capacity.
fn steps_for(resolution: f64) -> u32 {
    (SEARCH_TOP / resolution).log2().ceil().max(1.0) as u32
}

/// A point of popularity.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Skew {
    Uniform,
    Zipf(f64),
}

impl Skew {
    fn parse(s: &str) -> Result<Skew> {
        if s == "uniform" {
            return Ok(Skew::Uniform);
        }
        let theta: f64 = s
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && *t > 0.0)
            .with_context(|| format!("a skew is `uniform` or a Zipf theta > 0, not {s:?}"))?;
        Ok(Skew::Zipf(theta))
    }

    /// Zipf's theta; uniform is theta 0.
    fn theta(self) -> f64 {
        match self {
            Skew::Uniform => 0.0,
            Skew::Zipf(t) => t,
        }
    }

    fn label(self) -> String {
        match self {
            Skew::Uniform => "uniform".into(),
            Skew::Zipf(t) => format!("zipf-{t}"),
        }
    }
}

/// The sweep, with every default settled.
struct Sweep {
    systems: Vec<System>,
    skews: Vec<Skew>,
    write_ratios: Vec<f64>,
    servers: u8,
    racks: u8,
    read_from: pegasus_client::ReadFrom,
    policy: Option<pegasus_control::service::config::PolicyName>,
    capacity_ops: u32,
    keys: u64,
    p99_bound_us: u64,
    seconds: f64,
    warmup: f64,
    steps: u32,
    trials: u32,
}

/// One point of the sweep: a system at a popularity and write ratio, measured `trials` times.
struct Row {
    system: System,
    skew: Skew,
    write_ratio: f64,
    trials: Vec<Found>,
}

impl Row {
    /// Each trial's sustained throughput (0 when no rate passed).
    fn throughputs(&self) -> Vec<f64> {
        self.trials
            .iter()
            .map(|f| f.best.as_ref().map_or(0.0, |b| b.throughput))
            .collect()
    }

    /// (median, min, max) of the trials' throughputs.
    fn spread(&self) -> Spread {
        Spread::of(&self.throughputs())
    }

    /// The trial whose throughput is the median (the one the plots of shares show).
    fn median_trial(&self) -> &Found {
        let mut by_throughput: Vec<(f64, &Found)> =
            self.throughputs().into_iter().zip(&self.trials).collect();
        by_throughput.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_throughput[by_throughput.len() / 2].1
    }
}

/// The median of a point's trials and their range.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        assert!(!values.is_empty(), "a point has at least one trial");
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }

    fn overlaps(self, other: Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// "12,500 (11,875-13,125)", or the one figure of a single trial.
    fn text(self) -> String {
        if self.min == self.max {
            format!("{:.0}", self.median)
        } else {
            format!("{:.0} ({:.0}-{:.0})", self.median, self.min, self.max)
        }
    }
}

const CSV_HEADER: &str = "system,distribution,theta,write_ratio,trial,throughput_ops,\
                          offered_ops,p99_us,max_over_mean,errors,server_shares,switch_share,\
                          probes";

/// Runs the sweep and writes its results.
pub fn run(args: SkewArgs) -> Result<ExitCode> {
    let sweep = Sweep {
        systems: args.systems.unwrap_or_else(|| match args.racks {
            1 => vec![System::Kernel, System::Xdp, System::Pegasus, System::Cache],
            _ => vec![System::Xdp, System::Pegasus],
        }),
        skews: match args.skews {
            Some(list) => list.iter().map(|s| Skew::parse(s)).collect::<Result<_>>()?,
            None if args.quick => vec![Skew::Uniform, Skew::Zipf(0.99), Skew::Zipf(1.2)],
            None => vec![
                Skew::Uniform,
                Skew::Zipf(0.9),
                Skew::Zipf(0.99),
                Skew::Zipf(1.2),
            ],
        },
        write_ratios: match args.write_ratios {
            Some(list) => list,
            None if args.quick => vec![0.0, 0.5],
            None => vec![0.0, 0.05, 0.25, 0.5, 1.0],
        },
        servers: args.servers,
        racks: args.racks,
        read_from: args.read_from,
        policy: args.policy,
        capacity_ops: args.capacity_ops,
        keys: args.keys,
        p99_bound_us: (args.p99_ms * 1000.0) as u64,
        seconds: args.seconds.unwrap_or(if args.quick { 1.0 } else { 3.0 }),
        warmup: args.warmup.unwrap_or(if args.quick { 1.0 } else { 2.0 }),
        steps: args.steps.unwrap_or(steps_for(args.resolution)),
        trials: args.trials,
    };
    ensure!(
        args.resolution > 0.0 && args.resolution < SEARCH_TOP,
        "--resolution is a share of the capacity, above 0"
    );
    ensure!(
        (1..=20).contains(&sweep.trials),
        "--trials must be in 1..=20"
    );
    ensure!(!sweep.systems.is_empty(), "--systems is empty");
    ensure!(
        sweep.racks == 1
            || sweep
                .systems
                .iter()
                .all(|s| matches!(s, System::Xdp | System::Pegasus)),
        "a chain of racks (--racks > 1) runs the XDP switch: --systems xdp,pegasus"
    );
    ensure!(
        !sweep.skews.is_empty() && !sweep.write_ratios.is_empty(),
        "the sweep is empty"
    );
    ensure!(
        sweep.write_ratios.iter().all(|w| (0.0..=1.0).contains(w)),
        "write ratios are fractions in [0, 1]"
    );
    ensure!((1..=16).contains(&sweep.steps), "--steps must be in 1..=16");
    ensure!(
        sweep.seconds > 0.0 && sweep.warmup >= 0.0,
        "--seconds must be positive and --warmup not negative"
    );
    ensure!(sweep.p99_bound_us > 0, "--p99-ms must be positive");
    ensure!(
        pegasus_control::lab::netns::is_root(),
        "the experiment builds lab racks: it needs root"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let csv_path = args.out.join("results.csv");
    let mut csv = std::fs::File::create(&csv_path)
        .with_context(|| format!("creating {}", csv_path.display()))?;
    writeln!(csv, "{CSV_HEADER}")?;

    let points = sweep.systems.len() * sweep.skews.len() * sweep.write_ratios.len();
    let bar = ProgressBar::new((points as u64) * u64::from(sweep.steps * sweep.trials));
    bar.set_style(
        ProgressStyle::with_template("{msg:32} [{bar:40}] {pos}/{len} rates ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    for &system in &sweep.systems {
        let hot_keys = match system {
            System::Pegasus | System::Cache => HOT_KEYS,
            System::Kernel | System::Xdp => Some(0),
        };
        let dataplane = match system {
            System::Kernel => Dataplane::Kernel,
            System::Xdp | System::Pegasus => Dataplane::Xdp,
            System::Cache => Dataplane::Cache,
        };
        let name = format!("skew-{}", system.name());
        let mut spec = rack::spec(
            &name,
            sweep.servers,
            Some(sweep.capacity_ops),
            dataplane,
            hot_keys,
        );
        if let Some(policy) = sweep.policy {
            spec.policy = policy;
        }
        spec.racks = sweep.racks;
        let rack = Rack::up(spec)?;
        rack.load(sweep.keys)?;
        for &skew in &sweep.skews {
            for &write_ratio in &sweep.write_ratios {
                // Reads from every rack: every rack's capacity serves them.
                let serving_racks = match sweep.read_from {
                    pegasus_client::ReadFrom::Tail => 1.0,
                    pegasus_client::ReadFrom::Any => f64::from(sweep.racks),
                };
                let max_rate = SEARCH_TOP
                    * serving_racks
                    * f64::from(sweep.servers)
                    * f64::from(sweep.capacity_ops);
                let mut row = Row {
                    system,
                    skew,
                    write_ratio,
                    trials: Vec::new(),
                };
                for trial in 0..sweep.trials {
                    bar.set_message(format!(
                        "{} {} w{write_ratio} #{}",
                        system.name(),
                        skew.label(),
                        trial + 1
                    ));
                    let found = search::sustained_throughput(
                        max_rate,
                        sweep.steps,
                        sweep.p99_bound_us,
                        |rate| {
                            ensure!(
                                !rack::interrupted(),
                                "interrupted; the results so far are in {}",
                                csv_path.display()
                            );
                            let probe = measure(&rack, &sweep, skew, write_ratio, rate);
                            bar.inc(1);
                            probe
                        },
                    )?;
                    writeln!(csv, "{}", csv_line(&row, trial, &found, sweep.servers))?;
                    csv.flush()?;
                    row.trials.push(found);
                }
                rows.push(row);
            }
        }
    }
    bar.finish_and_clear();
    let summary = summary_md(&sweep, &rows);
    std::fs::write(args.out.join("summary.md"), &summary)?;
    let plots = draw(&args.out, &sweep, &rows)?;
    print!("{summary}");
    println!("\nresults: {}", csv_path.display());
    for p in plots {
        println!("plot: {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Offers `rate` requests/s of the point's mix and measures what the rack did.
fn measure(rack: &Rack, sweep: &Sweep, skew: Skew, write_ratio: f64, rate: f64) -> Result<Probe> {
    let run = BenchRun {
        rate: Some(rate),
        warmup: sweep.warmup,
        read_ratio: 1.0 - write_ratio,
        theta: match skew {
            Skew::Uniform => None,
            Skew::Zipf(theta) => Some(theta),
        },
        read_from: sweep.read_from,
        ..BenchRun::closed(None, sweep.seconds)
    };
    let s = rack.run(0, sweep.keys, &run)?;
    let probe = Probe {
        offered: rate,
        throughput: s.ops_per_second,
        p99_us: s.latency_us.p99,
        errors: s.errors,
        operations: s.operations,
        per_server: s.per_server,
        switch_answered: s.switch_answered,
        max_over_mean: s.max_over_mean,
    };
    tracing::debug!(
        rate,
        throughput = probe.throughput,
        p99_us = probe.p99_us,
        errors = probe.errors,
        max_over_mean = probe.max_over_mean,
        passes = probe.passes(sweep.p99_bound_us),
        "probe"
    );
    if !probe.passes(sweep.p99_bound_us) {
        // A rate the rack could not sustain leaves its queues full: the next rate starts
        // once they are empty (at most a full queue at the service rate).
        let queue = pegasus_store::server::QUEUE_MAX_DEFAULT as f64;
        rack.drain(Duration::from_secs_f64(
            queue / f64::from(sweep.capacity_ops) + DRAIN_SLACK_SECONDS,
        ))?;
    }
    Ok(probe)
}

/// The issues' targets: under Zipf theta with this write ratio, Pegasus sustains at least
/// this share of its uniform throughput, on a rack of up to 16 servers.
const TARGETS: [(f64, f64, f64); 4] = [
    (0.99, 0.0, 0.95),
    (1.2, 0.0, 0.95),
    (0.99, 0.5, 0.9),
    (1.2, 0.5, 0.9),
];

/// The target at the paper's scale, for every skew and write ratio: 0.9x on racks of 17 to
/// 32 servers, 0.85x beyond.
fn target_for(servers: u8, table_target: f64) -> f64 {
    match servers {
        0..=16 => table_target,
        17..=32 => 0.9,
        _ => 0.85,
    }
}

/// Keys Pegasus's controller keeps hot: the switch's default for the rack's size.
const HOT_KEYS: Option<u32> = None;
/// Beyond a full queue's service time, how long a drain may wait.
const DRAIN_SLACK_SECONDS: f64 = 0.5;

fn csv_line(row: &Row, trial: u32, found: &Found, servers: u8) -> String {
    let best = found.best.clone().unwrap_or_default();
    let total: u64 = best.per_server.values().sum();
    let shares: Vec<String> = (0..servers)
        .map(|s| {
            let n = best.per_server.get(&s).copied().unwrap_or(0);
            format!("{:.4}", n as f64 / total.max(1) as f64)
        })
        .collect();
    let (distribution, theta) = match row.skew {
        Skew::Uniform => ("uniform", String::new()),
        Skew::Zipf(t) => ("zipf", t.to_string()),
    };
    let switch_share = best.switch_answered as f64 / (total + best.switch_answered).max(1) as f64;
    format!(
        "{},{distribution},{theta},{},{trial},{:.0},{:.0},{},{:.3},{},{},{switch_share:.4},{}",
        row.system.name(),
        row.write_ratio,
        best.throughput,
        best.offered,
        best.p99_us,
        best.max_over_mean,
        best.errors,
        shares.join(";"),
        found.probes.len()
    )
}

/// The sustained throughput of a point across its trials (0 for a trial where no rate
/// passed).
fn spread(rows: &[Row], system: System, skew: Skew, write_ratio: f64) -> Option<Spread> {
    rows.iter()
        .find(|r| r.system == system && r.skew == skew && r.write_ratio == write_ratio)
        .map(Row::spread)
}

/// The median sustained throughput of a point.
fn throughput(rows: &[Row], system: System, skew: Skew, write_ratio: f64) -> Option<f64> {
    spread(rows, system, skew, write_ratio).map(|s| s.median)
}

fn summary_md(sweep: &Sweep, rows: &[Row]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Skew experiment\n");
    let _ = writeln!(
        md,
        "{} servers at {} requests/s each (rack capacity {}), {} keys; throughput is the best \
         rate the rack sustained with p99 under {} ms ({} halvings of the offered open-loop \
         rate, {} s measured after {} s of warm-up), the median of {} trials with their range \
         in parentheses.\n",
        sweep.servers,
        sweep.capacity_ops,
        u32::from(sweep.servers) * sweep.capacity_ops,
        sweep.keys,
        sweep.p99_bound_us as f64 / 1000.0,
        sweep.steps,
        sweep.seconds,
        sweep.warmup,
        sweep.trials
    );
    if sweep.racks > 1 {
        let _ = writeln!(
            md,
            "A chain of {} such racks: every write crosses them all; reads go to {}.\n",
            sweep.racks,
            match sweep.read_from {
                pegasus_client::ReadFrom::Tail => "the tail (its capacity is the figure above)",
                pegasus_client::ReadFrom::Any =>
                    "any rack (each answers what it knows committed, else the tail)",
            }
        );
    }
    if let Some(policy) = sweep.policy {
        let name = policy.to_possible_value().map(|v| v.get_name().to_owned());
        let _ = writeln!(
            md,
            "The switch picks a hot key's server by {}.\n",
            name.unwrap_or_default()
        );
    }
    let _ = write!(md, "| popularity | writes |");
    for s in &sweep.systems {
        let _ = write!(md, " {} |", s.name());
    }
    let pegasus = sweep.systems.contains(&System::Pegasus) && sweep.skews.contains(&Skew::Uniform);
    if pegasus {
        let _ = write!(md, " pegasus / uniform |");
    }
    let _ = write!(md, "\n| --- | --- |");
    for _ in 0..sweep.systems.len() + usize::from(pegasus) {
        let _ = write!(md, " --- |");
    }
    md.push('\n');
    for &skew in &sweep.skews {
        for &w in &sweep.write_ratios {
            let _ = write!(md, "| {} | {:.0}% |", skew.label(), w * 100.0);
            for &s in &sweep.systems {
                let text = spread(rows, s, skew, w).map_or("-".into(), Spread::text);
                let _ = write!(md, " {text} |");
            }
            if pegasus {
                let at = throughput(rows, System::Pegasus, skew, w).unwrap_or(0.0);
                let uniform = throughput(rows, System::Pegasus, Skew::Uniform, w).unwrap_or(0.0);
                let _ = write!(md, " {:.2}x |", at / uniform.max(1.0));
            }
            md.push('\n');
        }
    }
    let overlaps = overlaps(sweep, rows);
    if !overlaps.is_empty() {
        let _ = write!(
            md,
            "\n## Within the noise\n\nThese systems' ranges overlap: their difference at \
             these points is within what the trials measure.\n\n{overlaps}"
        );
    }
    if pegasus {
        let mut targets = String::new();
        for &(theta, write_ratio, target) in &TARGETS {
            let skew = Skew::Zipf(theta);
            let (Some(at), Some(uniform)) = (
                throughput(rows, System::Pegasus, skew, write_ratio),
                throughput(rows, System::Pegasus, Skew::Uniform, write_ratio),
            ) else {
                continue;
            };
            let ratio = at / uniform.max(1.0);
            let target = target_for(sweep.servers, target);
            let _ = writeln!(
                targets,
                "- Pegasus, Zipf {theta}, {:.0}% writes: {ratio:.2}x its uniform throughput \
                 (target at least {target}x on {} servers): {}",
                write_ratio * 100.0,
                sweep.servers,
                if ratio >= target { "met" } else { "NOT met" }
            );
        }
        if !targets.is_empty() {
            let _ = write!(md, "\n## Targets\n\n{targets}");
        }
    }
    md
}

/// A line per point where two systems' trial ranges overlap (only with several trials).
fn overlaps(sweep: &Sweep, rows: &[Row]) -> String {
    let mut out = String::new();
    if sweep.trials < 2 {
        return out;
    }
    for &skew in &sweep.skews {
        for &w in &sweep.write_ratios {
            for (i, &a) in sweep.systems.iter().enumerate() {
                for &b in &sweep.systems[i + 1..] {
                    if let (Some(x), Some(y)) = (spread(rows, a, skew, w), spread(rows, b, skew, w))
                        && x.overlaps(y)
                        && x.max > 0.0
                    {
                        let _ = writeln!(
                            out,
                            "- {} {:.0}% writes: {} {} and {} {}",
                            skew.label(),
                            w * 100.0,
                            a.name(),
                            x.text(),
                            b.name(),
                            y.text()
                        );
                    }
                }
            }
        }
    }
    out
}

/// A line per system through the points `at` gives for each of `xs` (where it has one), with
/// each point's range as an error bar.
fn per_system<X: Copy>(
    sweep: &Sweep,
    xs: &[X],
    at: impl Fn(System, X) -> Option<(f64, Spread)>,
) -> Vec<plot::Series> {
    sweep
        .systems
        .iter()
        .map(|&s| {
            let points: Vec<(f64, Spread)> = xs.iter().filter_map(|&x| at(s, x)).collect();
            plot::Series {
                name: s.name().into(),
                points: points.iter().map(|&(x, t)| (x, t.median)).collect(),
                ranges: points
                    .iter()
                    .map(|&(x, t)| (x, t.median, t.min, t.max))
                    .collect(),
            }
        })
        .collect()
}

/// Draws the plots that the sweep has points for; returns their paths.
fn draw(out: &Path, sweep: &Sweep, rows: &[Row]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let fewest_writes = sweep
        .write_ratios
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let theta_max = sweep.skews.iter().map(|s| s.theta()).fold(0.0, f64::max);
    if sweep.skews.len() > 1 {
        let path = out.join("throughput_vs_skew.png");
        let series = per_system(sweep, &sweep.skews, |s, k| {
            spread(rows, s, k, fewest_writes).map(|t| (k.theta(), t))
        });
        plot::lines(
            &path,
            &format!(
                "Throughput with p99 under {} ms, {:.0}% writes",
                sweep.p99_bound_us as f64 / 1000.0,
                fewest_writes * 100.0
            ),
            ("Zipf theta (0: uniform)", "requests/s"),
            (0.0, theta_max.max(0.1) * 1.05),
            &series,
        )?;
        written.push(path);
    }
    // The most skewed point's picture: throughput against writes, and the servers' shares.
    let skewed =
        sweep.skews.iter().copied().fold(
            Skew::Uniform,
            |a, b| if b.theta() > a.theta() { b } else { a },
        );
    if sweep.write_ratios.len() > 1 {
        let write_ratio_high = sweep.write_ratios.iter().copied().fold(0.0, f64::max);
        let path = out.join("throughput_vs_write_ratio.png");
        let series = per_system(sweep, &sweep.write_ratios, |s, w| {
            spread(rows, s, skewed, w).map(|t| (w * 100.0, t))
        });
        plot::lines(
            &path,
            &format!(
                "Throughput with p99 under {} ms, {}",
                sweep.p99_bound_us as f64 / 1000.0,
                skewed.label()
            ),
            ("writes (%)", "requests/s"),
            (0.0, write_ratio_high * 105.0),
            &series,
        )?;
        written.push(path);
    }
    let groups: Vec<(String, Vec<f64>)> = sweep
        .systems
        .iter()
        .filter_map(|&s| {
            let row = rows
                .iter()
                .find(|r| r.system == s && r.skew == skewed && r.write_ratio == fewest_writes)?;
            // The shares at the highest rate measured: where imbalance shows.
            let probe = row
                .median_trial()
                .probes
                .iter()
                .max_by(|a, b| a.offered.total_cmp(&b.offered))?;
            let total: u64 = probe.per_server.values().sum();
            let shares = (0..sweep.servers)
                .map(|i| {
                    probe.per_server.get(&i).copied().unwrap_or(0) as f64 / total.max(1) as f64
                })
                .collect();
            Some((s.name().to_owned(), shares))
        })
        .collect();
    if !groups.is_empty() {
        let path = out.join("server_load.png");
        plot::server_shares(
            &path,
            &format!(
                "Each server's share of the replies, {}, {:.0}% writes",
                skewed.label(),
                fewest_writes * 100.0
            ),
            &groups,
        )?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_the_racks_size() {
        // Up to 16 servers, the table's (8 servers: 0.95x read-only, 0.9x with writes).
        assert_eq!(target_for(8, 0.95), 0.95);
        assert_eq!(target_for(16, 0.9), 0.9);
        // The paper's scale: 0.9x at 32 servers, 0.85x at 64, whatever the mix.
        assert_eq!(target_for(32, 0.95), 0.9);
        assert_eq!(target_for(64, 0.95), 0.85);
        assert_eq!(target_for(64, 0.9), 0.85);
    }

    #[test]
    fn the_default_search_resolves_two_percent_of_the_capacity() {
        let steps = steps_for(0.02);
        assert!(SEARCH_TOP / f64::from(1u32 << steps) <= 0.02);
        assert!(
            SEARCH_TOP / f64::from(1u32 << (steps - 1)) > 0.02,
            "no more than needed"
        );
        assert_eq!(steps_for(1.0), 1);
    }

    #[test]
    fn a_spread_is_the_median_and_range_of_the_trials() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0]).median, 2.5);
        assert_eq!(Spread::of(&[7.0]).text(), "7");
        assert_eq!(s.text(), "2 (1-3)");
        assert!(s.overlaps(Spread::of(&[3.0, 5.0])));
        assert!(!s.overlaps(Spread::of(&[3.5, 5.0])));
    }
}
