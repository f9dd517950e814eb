//! An emulated service rate: a store given `--capacity-ops N` serves at most N requests per
//! second, however fast the machine is, so that in a lab rack a hot server saturates (its queue
//! grows, its latency climbs, it drops what overflows) as a real one would.

use std::time::{Duration, Instant};

/// Admits requests at a fixed rate, with bursts of at most [`BURST`] worth of requests.
pub struct ServiceRate {
    per_request: Duration,
    /// When the next request may be served.
    next: Instant,
}

/// How far the schedule may lag behind real time: an idle server does not bank more than
/// this much capacity for a later burst.
pub const BURST: Duration = Duration::from_millis(2);

impl ServiceRate {
    /// A gate for `ops_per_second` requests per second (positive).
    pub fn new(ops_per_second: u32) -> ServiceRate {
        assert!(ops_per_second > 0, "a service rate must be positive");
        ServiceRate {
            per_request: Duration::from_secs(1) / ops_per_second,
            next: Instant::now(),
        }
    }

    /// Takes one request's slot; returns when it may be served (now, or later).
    pub fn admit(&mut self, now: Instant) -> Instant {
        if self.next + BURST < now {
            self.next = now - BURST;
        }
        let at = self.next;
        self.next += self.per_request;
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_at_the_rate() {
        let start = Instant::now();
        let mut gate = ServiceRate::new(1000);
        let mut last = start;
        for _ in 0..1000 {
            last = gate.admit(start);
        }
        // 1000 requests at 1 ms each, the first ones out of the banked burst.
        let span = last.saturating_duration_since(start);
        assert!(
            span >= Duration::from_millis(990) && span <= Duration::from_millis(1000),
            "{span:?}"
        );
    }

    #[test]
    fn idle_time_banks_at_most_one_burst() {
        let start = Instant::now();
        let mut gate = ServiceRate::new(1000);
        let later = start + Duration::from_secs(10);
        let first = gate.admit(later);
        assert_eq!(first, later - BURST);
        // After the burst is used up, requests are spaced again.
        let mut at = first;
        for _ in 0..10 {
            at = gate.admit(later);
        }
        assert!(at > later);
    }
}
