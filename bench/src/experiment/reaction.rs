//! `pegasus experiment reaction`: how fast the controller follows an abrupt change of the hot
//! set. A rack of stores with an emulated capacity under a read-only Zipf closed loop; at
//! `--swap-at` seconds the most popular keys trade popularity with as many cold ones. Replies
//! per server are counted every 10 ms; the reaction time is when busiest/mean over a sliding
//! window falls to the bound and stays there for a second. One JSON line.

use super::{
    print_json,
    rack::{self, BenchRun, Rack, SkewedRack},
};
use crate::loadgen::Timeline;
use anyhow::{Context, Result, ensure};
use clap::Args;
use pegasus_control::lab::Dataplane;
use serde::Serialize;
use std::process::ExitCode;

/// Replies per server are counted in intervals of this many milliseconds.
const INTERVAL_MS: u64 = 10;
/// Busiest over mean at or under which the rack counts as balanced.
const BALANCED_MAX_OVER_MEAN: f64 = 1.2;
/// How long the rack must stay balanced for the reaction to count.
const HOLD_MS: u64 = 1000;
/// Balance before the change is measured from this far into the run (the start settles).
const SETTLED_FROM_MS: u64 = 2000;
/// The peak after the change is looked for within this long.
const PEAK_WITHIN_MS: u64 = 2000;

#[derive(Args)]
pub struct ReactionArgs {
    #[command(flatten)]
    rack: SkewedRack,
    /// Copies of each hot key.
    #[arg(long, default_value_t = pegasus_common::switch::REPLICATION_DEFAULT)]
    replication: u8,
    /// How the directory picks a server for a hot key.
    #[arg(long, value_enum, default_value_t = pegasus_control::service::config::DaemonConfig::default().policy)]
    policy: pegasus_control::service::config::PolicyName,
    /// The switch's statistics interval, in milliseconds.
    #[arg(long, alias = "epoch-ms", default_value_t = pegasus_control::controller::hotkeys::STATS_INTERVAL_MS_DEFAULT)]
    stats_interval_ms: u64,
    /// The switch samples one request in this many (at most; see --sample-target).
    #[arg(long, alias = "sample-rate", default_value_t = pegasus_common::switch::SAMPLE_PERIOD_DEFAULT)]
    sample_period: u16,
    /// Samples a second the switch's controller aims for (0: always one in --sample-period).
    #[arg(long, default_value_t = pegasus_control::controller::hotkeys::SAMPLES_PER_SECOND_DEFAULT)]
    sample_target: u32,
    /// Hot keys the controller keeps; as many keys trade places at the change.
    #[arg(long, default_value_t = 16)]
    hot_keys: u32,
    /// Seconds of the run, and when in it the hot set changes.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 5.0)]
    swap_at: f64,
    /// The sliding window over which busiest/mean is computed, in milliseconds.
    #[arg(long, default_value_t = 50)]
    window_ms: u64,
    /// Keys in the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
}

/// The run's line.
#[derive(Debug, Serialize)]
struct ReactionRun {
    theta: f64,
    capacity_ops: u32,
    replication: u8,
    policy: pegasus_control::service::config::PolicyName,
    stats_interval_ms: u64,
    sample_period: u16,
    sample_target: u32,
    window_ms: u64,
    #[serde(flatten)]
    reaction: Reaction,
    ops_per_second: f64,
    errors: u64,
}

/// What the timeline says about the change.
#[derive(Debug, PartialEq, Serialize)]
pub struct Reaction {
    /// Median busiest/mean over the settled part before the change.
    pub before_median: f64,
    /// Highest busiest/mean shortly after the change.
    pub peak_after_swap: f64,
    /// From the change until busiest/mean fell to the bound and stayed there; `None`: never.
    pub reaction_ms: Option<u64>,
}

pub fn run(args: ReactionArgs) -> Result<ExitCode> {
    ensure!(
        args.swap_at > 0.0 && args.swap_at < args.seconds,
        "--swap-at must fall within the run"
    );
    ensure!(
        args.window_ms >= INTERVAL_MS,
        "--window-ms must be at least {INTERVAL_MS}"
    );
    let mut spec = rack::spec(
        "react",
        args.rack.servers,
        Some(args.rack.capacity_ops),
        Dataplane::Xdp,
        Some(args.hot_keys),
    );
    spec.replication = args.replication;
    spec.policy = args.policy;
    spec.stats_interval_ms = args.stats_interval_ms;
    spec.sample_period = args.sample_period;
    spec.sample_target = args.sample_target;
    let rack = Rack::up(spec)?;
    rack.load(args.keys)?;
    let run = BenchRun {
        swap_at: Some(args.swap_at),
        timeline_ms: Some(INTERVAL_MS),
        ..BenchRun::closed(Some(args.rack.theta), args.seconds)
    };
    let s = rack.run(0, args.keys, &run)?;
    let timeline = s
        .timeline
        .as_ref()
        .context("the bench summary has no timeline")?;
    print_json(&ReactionRun {
        theta: args.rack.theta,
        capacity_ops: args.rack.capacity_ops,
        replication: args.replication,
        policy: args.policy,
        stats_interval_ms: args.stats_interval_ms,
        sample_period: args.sample_period,
        sample_target: args.sample_target,
        window_ms: args.window_ms,
        reaction: reaction(timeline, args.window_ms)?,
        ops_per_second: s.ops_per_second,
        errors: s.errors,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the reaction off a timeline of replies per server.
pub fn reaction(t: &Timeline, window_ms: u64) -> Result<Reaction> {
    let step = t.interval_ms;
    let swap = t
        .swap_at_ms
        .context("the timeline has no change of the hot set")?;
    // The last interval is cut short by the end of the run.
    let intervals = &t.intervals[..t.intervals.len().saturating_sub(1)];
    let window = (window_ms / step).max(1) as usize;
    let first_after = (swap / step) as usize;
    ensure!(
        intervals.len() > first_after + window,
        "the run ends too soon after the change"
    );
    // Busiest over mean of the window of intervals ending before `end`.
    let ratio = |end: usize| -> f64 {
        let servers = intervals[end - window..end]
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let totals: Vec<u64> = (0..servers)
            .map(|s| {
                intervals[end - window..end]
                    .iter()
                    .map(|i| i.get(s).copied().unwrap_or(0))
                    .sum()
            })
            .collect();
        let mean = totals.iter().sum::<u64>() as f64 / totals.len().max(1) as f64;
        let max = totals.iter().copied().max().unwrap_or(0) as f64;
        if mean > 0.0 {
            max / mean
        } else {
            f64::INFINITY
        }
    };
    let settled_from = (SETTLED_FROM_MS / step) as usize;
    let mut before: Vec<f64> = (window.max(settled_from)..=first_after)
        .map(ratio)
        .collect();
    before.sort_by(f64::total_cmp);
    let before_median = before.get(before.len() / 2).copied().unwrap_or(f64::NAN);
    let peak_end = (first_after + (PEAK_WITHIN_MS / step) as usize).min(intervals.len());
    let peak_after_swap = (first_after + 1..=peak_end).map(ratio).fold(0.0, f64::max);
    let hold = (HOLD_MS / step) as usize;
    let reaction_ms = (first_after + 1..(intervals.len() + 1).saturating_sub(hold))
        .find(|&i| (i..i + hold).all(|j| ratio(j) <= BALANCED_MAX_OVER_MEAN))
        .map(|i| i as u64 * step - swap);
    Ok(Reaction {
        before_median,
        peak_after_swap,
        reaction_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 servers; balanced, then server 0 takes 4x the others at the change for 100 ms.
    fn timeline(imbalance_ms: u64) -> Timeline {
        let swap_at_ms = 3000;
        let intervals = (0..600u64)
            .map(|i| {
                let t = i * 10;
                if t >= swap_at_ms && t < swap_at_ms + imbalance_ms {
                    vec![40, 10, 10, 10]
                } else {
                    vec![10, 10, 10, 10]
                }
            })
            .collect();
        Timeline {
            interval_ms: 10,
            swap_at_ms: Some(swap_at_ms),
            intervals,
        }
    }

    #[test]
    fn the_reaction_is_when_the_rack_is_balanced_again() {
        let r = reaction(&timeline(100), 50).unwrap();
        assert_eq!(r.before_median, 1.0);
        assert!((r.peak_after_swap - 40.0 / 17.5).abs() < 1e-9, "{r:?}");
        // The 50 ms window ending at 3,150 ms is the first without the imbalance.
        assert_eq!(r.reaction_ms, Some(150));
    }

    #[test]
    fn a_rack_that_stays_unbalanced_never_reacts() {
        let r = reaction(&timeline(10_000), 50).unwrap();
        assert_eq!(r.reaction_ms, None);
    }
}
