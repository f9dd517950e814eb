//! `pegasus experiment failover`: how long a chain's writes stop when a rack fails, for the
//! head, a middle rack and the tail (docs/chain.md, "Failures").
//!
//! Each trial builds a chain of racks, loads its keys and runs the load generator's open
//! loop of writes (a fixed rate, replies counted per interval: `--timeline-ms`); two seconds
//! in, `lab kill-rack` kills the rack under test (switch, controller and stores). The
//! failover time is the longest stretch of intervals in which no write completed: from the
//! kill to writes flowing again, through the lease's expiry, the new configuration, the
//! stores' repair and the clients' move to the new head. Writes that were in flight to the
//! failed rack end as timeouts; they are counted, never retried into a second application.

use super::rack::{self, Rack};
use anyhow::{Context, Result, ensure};
use clap::Args;
use pegasus_control::lab::{self, Dataplane};
use serde::Serialize;
use std::{fmt::Write as _, path::PathBuf, process::ExitCode, time::Duration};

/// Keys written.
const KEYS: u64 = 10_000;
/// Replies are counted per interval of this length.
const INTERVAL_MS: u64 = 10;
/// When the rack is killed, after the writes begin.
const KILL_AT: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct FailoverArgs {
    /// Racks in the chain (at least 3: a head, a middle rack and a tail).
    #[arg(long, default_value_t = 3)]
    racks: u8,
    /// Storage servers per rack.
    #[arg(long, default_value_t = 2)]
    servers: u8,
    /// Trials per failed role.
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// Writes per second offered (open loop).
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// The controllers' lease in etcd, in seconds.
    #[arg(long, default_value_t = 1)]
    lease_ttl_secs: u64,
    /// Where results.csv and summary.md go.
    #[arg(long, default_value = "failover")]
    out: PathBuf,
}

/// One trial.
#[derive(Clone, Debug, Serialize)]
struct Trial {
    role: &'static str,
    rack: u8,
    trial: u32,
    /// From the kill until etcd's configuration went on without the rack (`lab kill-rack`).
    reconfigured_ms: u64,
    /// The longest stretch without a completed write.
    writes_stopped_ms: u64,
    writes: u64,
    timeouts: u64,
    errors: u64,
}

pub fn run(args: FailoverArgs) -> Result<ExitCode> {
    ensure!(
        (3..=lab::chain::RACKS_MAX).contains(&args.racks),
        "--racks is from 3 to {}",
        lab::chain::RACKS_MAX
    );
    ensure!(args.trials >= 1, "--trials is at least 1");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let roles: [(&'static str, u8); 3] = [("head", 0), ("middle", 1), ("tail", args.racks - 1)];
    let progress = indicatif::ProgressBar::new(roles.len() as u64 * u64::from(args.trials));
    let mut trials = Vec::new();
    for (role, rack) in roles {
        for trial in 0..args.trials {
            ensure!(!rack::interrupted(), "interrupted");
            let t = one_trial(&args, role, rack, trial)
                .with_context(|| format!("killing the {role}, trial {trial}"))?;
            progress.println(format!(
                "{role} (rack {rack}) trial {trial}: reconfigured after {} ms, writes stopped \
                 for {} ms",
                t.reconfigured_ms, t.writes_stopped_ms
            ));
            trials.push(t);
            progress.inc(1);
            write_results(&args, &trials)?;
        }
    }
    progress.finish_and_clear();
    print!("{}", summary(&args, &trials));
    Ok(ExitCode::SUCCESS)
}

fn one_trial(args: &FailoverArgs, role: &'static str, victim: u8, trial: u32) -> Result<Trial> {
    let mut spec = rack::spec(
        &format!("fo{victim}{trial}"),
        args.servers,
        None,
        Dataplane::Xdp,
        None,
    );
    spec.racks = args.racks;
    spec.lease_ttl_secs = args.lease_ttl_secs;
    let rack = Rack::up(spec)?;
    rack.load(KEYS)?;
    let name = rack.spec.name.clone();
    let seconds = KILL_AT.as_secs_f64() + 2.0 * args.lease_ttl_secs as f64 + 3.0;
    let (summary, killed) = std::thread::scope(|s| -> Result<_> {
        let writer = s.spawn(|| {
            rack.bench(
                0,
                KEYS,
                &[
                    "run",
                    "--read-ratio",
                    "0",
                    "--rate",
                    &args.rate.to_string(),
                    "--seconds",
                    &seconds.to_string(),
                    "--warmup",
                    "0",
                    "--timeline-ms",
                    &INTERVAL_MS.to_string(),
                ],
            )
        });
        std::thread::sleep(KILL_AT);
        let killed = lab::chain::kill_rack(&name, victim);
        let summary = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        Ok((summary, killed?))
    })?;
    let timeline = summary
        .timeline
        .as_ref()
        .context("the load generator kept no timeline")?;
    Ok(Trial {
        role,
        rack: victim,
        trial,
        reconfigured_ms: killed.reconfigured_ms,
        writes_stopped_ms: longest_silence(&timeline.intervals) * timeline.interval_ms,
        writes: summary.update.operations,
        timeouts: summary.timeouts,
        errors: summary.errors,
    })
}

/// The longest run of intervals in which nothing was answered, between the first and the
/// last answer.
fn longest_silence(intervals: &[Vec<u64>]) -> u64 {
    let answered: Vec<bool> = intervals
        .iter()
        .map(|i| i.iter().sum::<u64>() > 0)
        .collect();
    let (Some(first), Some(last)) = (
        answered.iter().position(|&a| a),
        answered.iter().rposition(|&a| a),
    ) else {
        return 0;
    };
    let (mut longest, mut run) = (0u64, 0u64);
    for &a in &answered[first..=last] {
        run = if a { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    longest
}

fn write_results(args: &FailoverArgs, trials: &[Trial]) -> Result<()> {
    let mut csv =
        String::from("role,rack,trial,reconfigured_ms,writes_stopped_ms,writes,timeouts,errors\n");
    for t in trials {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{}",
            t.role,
            t.rack,
            t.trial,
            t.reconfigured_ms,
            t.writes_stopped_ms,
            t.writes,
            t.timeouts,
            t.errors
        );
    }
    std::fs::write(args.out.join("results.csv"), csv)?;
    std::fs::write(args.out.join("summary.md"), summary(args, trials))?;
    Ok(())
}

/// The table: per failed role, the worst and median of each time.
fn summary(args: &FailoverArgs, trials: &[Trial]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Failover of a chain of {} racks of {} servers, lease {} s, {} writes/s offered, {} \
         trials per role\n",
        args.racks, args.servers, args.lease_ttl_secs, args.rate, args.trials
    );
    let _ = writeln!(
        s,
        "| rack killed | reconfigured (median, max) | writes stopped (median, max) | timeouts |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- |");
    for role in ["head", "middle", "tail"] {
        let of: Vec<&Trial> = trials.iter().filter(|t| t.role == role).collect();
        if of.is_empty() {
            continue;
        }
        let stats = |f: &dyn Fn(&Trial) -> u64| {
            let mut v: Vec<u64> = of.iter().map(|t| f(t)).collect();
            v.sort_unstable();
            (v[v.len() / 2], v[v.len() - 1])
        };
        let (rm, rx) = stats(&|t| t.reconfigured_ms);
        let (wm, wx) = stats(&|t| t.writes_stopped_ms);
        let timeouts: u64 = of.iter().map(|t| t.timeouts).sum();
        let _ = writeln!(
            s,
            "| {role} | {rm} ms, {rx} ms | {wm} ms, {wx} ms | {timeouts} |"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::longest_silence;

    #[test]
    fn silence_is_counted_between_the_first_and_last_answer() {
        let t = |v: &[u64]| v.iter().map(|&n| vec![n, 0]).collect::<Vec<_>>();
        assert_eq!(longest_silence(&t(&[0, 0, 3, 0, 0, 0, 2, 0, 1, 0, 0])), 3);
        assert_eq!(longest_silence(&t(&[1, 1, 1])), 0);
        assert_eq!(longest_silence(&t(&[0, 0])), 0);
    }
}
