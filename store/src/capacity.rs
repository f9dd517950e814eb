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

/// Steps of utilisation a load report carries below one waiting request: a server with a
/// request waiting always reports more than any server with none.
pub const UTILISATION_STEPS: u16 = 16;
/// The window utilisation is measured over.
pub const UTILISATION_WINDOW: Duration = Duration::from_millis(10);

/// How busy a server with an emulated capacity has been: requests served in the last whole
/// [`UTILISATION_WINDOW`] over what it could serve in one. It separates servers before they
/// saturate, when every queue is empty and queue lengths say nothing: the switch's
/// least-loaded choice then prefers the replica with the most room.
pub struct Utilisation {
    capacity_per_window: f64,
    window_start: Instant,
    current: u32,
    previous: u32,
}

impl Utilisation {
    /// A meter for a server of `ops_per_second` (positive).
    pub fn new(ops_per_second: u32, now: Instant) -> Utilisation {
        assert!(ops_per_second > 0, "a service rate must be positive");
        Utilisation {
            capacity_per_window: ops_per_second as f64 * UTILISATION_WINDOW.as_secs_f64(),
            window_start: now,
            current: 0,
            previous: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= UTILISATION_WINDOW {
            // A window with no request in it leaves nothing for the next.
            self.previous = if elapsed < 2 * UTILISATION_WINDOW {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.window_start = now;
        }
    }

    /// Counts one request served at `now`.
    pub fn served(&mut self, now: Instant) {
        self.roll(now);
        self.current = self.current.saturating_add(1);
    }

    /// The last window's utilisation in [`UTILISATION_STEPS`]ths, at most one less than a
    /// whole step.
    pub fn steps(&mut self, now: Instant) -> u16 {
        self.roll(now);
        let used = self.previous as f64 / self.capacity_per_window;
        ((used * UTILISATION_STEPS as f64) as u16).min(UTILISATION_STEPS - 1)
    }
}

/// The load a reply reports: requests waiting, in whole steps, plus the utilisation below.
pub fn load(waiting: usize, utilisation_steps: u16) -> u16 {
    let waiting = waiting.min((u16::MAX / UTILISATION_STEPS) as usize - 1) as u16;
    waiting * UTILISATION_STEPS + utilisation_steps.min(UTILISATION_STEPS - 1)
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

    #[test]
    fn utilisation_separates_servers_before_they_queue() {
        let t0 = Instant::now();
        let mut busy = Utilisation::new(1000, t0); // 10 requests per window
        let mut idle = Utilisation::new(1000, t0);
        for i in 0..8 {
            busy.served(t0 + Duration::from_millis(i));
        }
        idle.served(t0);
        let next = t0 + UTILISATION_WINDOW + Duration::from_millis(1);
        assert_eq!(busy.steps(next), 12, "8 of 10: 12.8 sixteenths");
        assert_eq!(idle.steps(next), 1);
        // A window with nothing in it forgets.
        assert_eq!(busy.steps(next + 3 * UTILISATION_WINDOW), 0);
        // One waiting request outweighs any utilisation.
        assert!(load(1, 0) > load(0, UTILISATION_STEPS - 1));
        assert_eq!(load(0, 99), UTILISATION_STEPS - 1);
        assert_eq!(
            load(usize::MAX, 15),
            (u16::MAX / UTILISATION_STEPS - 1) * 16 + 15,
            "saturates"
        );
    }
}
