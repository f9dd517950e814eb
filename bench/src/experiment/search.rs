//! The throughput a rack sustains under a latency bound: a binary search over the offered
//! (open-loop) rate, as the Pegasus paper measures it. A rate passes when the rack keeps up
//! with it (answers at least [`KEPT_UP`] of it), fails almost nothing and keeps its p99 under
//! the bound; the result is the best throughput among the rates that passed.

use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// Share of the offered rate the rack must answer for a rate to pass.
pub const KEPT_UP: f64 = 0.95;
/// Share of requests that may fail (time out) at a passing rate.
pub const ERRORS_MAX: f64 = 0.001;

/// One measured rate.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Probe {
    pub offered: f64,
    pub throughput: f64,
    pub p99_us: u64,
    pub errors: u64,
    pub operations: u64,
    /// Replies per server id.
    pub per_server: BTreeMap<u8, u64>,
    /// Replies the switch answered from its cache (the cache baseline).
    pub switch_answered: u64,
    pub max_over_mean: f64,
}

impl Probe {
    /// Whether the rack sustained this rate within `p99_bound_us`.
    pub fn passes(&self, p99_bound_us: u64) -> bool {
        let sent = (self.operations + self.errors).max(1) as f64;
        self.p99_us <= p99_bound_us
            && self.errors as f64 / sent <= ERRORS_MAX
            && self.throughput >= KEPT_UP * self.offered
    }
}

/// What the search found: the best passing probe (none when even the lowest rate failed) and
/// every probe, in order.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    pub best: Option<Probe>,
    pub probes: Vec<Probe>,
}

/// Searches `(0, max_rate]` in `steps` halvings, measuring a rate with `measure`.
pub fn sustained_throughput(
    max_rate: f64,
    steps: u32,
    p99_bound_us: u64,
    mut measure: impl FnMut(f64) -> Result<Probe>,
) -> Result<Found> {
    assert!(max_rate > 0.0 && steps >= 1, "an empty search");
    let (mut passed, mut failed) = (0.0, max_rate);
    let mut best: Option<Probe> = None;
    let mut probes = Vec::new();
    for _ in 0..steps {
        let rate = (passed + failed) / 2.0;
        let probe = measure(rate)?;
        if probe.passes(p99_bound_us) {
            passed = rate;
            if best
                .as_ref()
                .is_none_or(|b| probe.throughput > b.throughput)
            {
                best = Some(probe.clone());
            }
        } else {
            failed = rate;
        }
        probes.push(probe);
    }
    Ok(Found { best, probes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rack that serves up to `capacity` requests/s with p99 `base_us`, and past it falls
    /// behind with a p99 that explodes.
    fn rack(capacity: f64, base_us: u64) -> impl FnMut(f64) -> Result<Probe> {
        move |rate| {
            let throughput = rate.min(capacity);
            Ok(Probe {
                offered: rate,
                throughput,
                p99_us: if rate <= capacity { base_us } else { 1_000_000 },
                operations: throughput as u64,
                ..Probe::default()
            })
        }
    }

    #[test]
    fn the_search_finds_the_capacity_within_its_resolution() {
        let found = sustained_throughput(20_000.0, 7, 5_000, rack(13_000.0, 800)).unwrap();
        let best = found.best.unwrap().throughput;
        // 7 halvings of 20,000: within 20,000 / 128 = 156 below the capacity.
        assert!((13_000.0 - 157.0..=13_000.0).contains(&best), "{best}");
        assert_eq!(found.probes.len(), 7);
        assert_eq!(found.probes[0].offered, 10_000.0);
    }

    #[test]
    fn a_latency_bound_below_the_rack_s_floor_fails_every_rate() {
        let found = sustained_throughput(20_000.0, 4, 500, rack(13_000.0, 800)).unwrap();
        assert!(found.best.is_none());
        // It kept halving towards zero.
        assert_eq!(found.probes.last().unwrap().offered, 20_000.0 / 16.0);
    }

    #[test]
    fn falling_behind_or_failing_requests_fails_a_rate() {
        let p = |throughput, errors, p99_us| Probe {
            offered: 1000.0,
            throughput,
            p99_us,
            errors,
            operations: throughput as u64,
            ..Probe::default()
        };
        assert!(p(1000.0, 0, 100).passes(100));
        assert!(!p(1000.0, 0, 101).passes(100), "p99 over the bound");
        assert!(!p(940.0, 0, 100).passes(100), "fell behind");
        assert!(p(1000.0, 1, 100).passes(100), "one in a thousand may fail");
        assert!(!p(1000.0, 2, 100).passes(100));
    }
}
