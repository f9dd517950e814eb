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
/// Shortest time constant of the utilisation's average.
pub const UTILISATION_TIME_MIN: Duration = Duration::from_millis(10);
/// Requests, at full capacity, that the utilisation's average spans at least: a slow server
/// (a few hundred requests a second) averages over a longer time than a fast one, so that its
/// reports are not a count of the last two or three requests.
pub const UTILISATION_REQUESTS: u32 = 32;

/// How busy a server with an emulated capacity has been: an exponentially decayed count of the
/// requests it served (time constant `tau`: [`UTILISATION_REQUESTS`] service times, at least
/// [`UTILISATION_TIME_MIN`]) over what it would count at full capacity. It separates servers
/// before they saturate, when every queue is empty and queue lengths say nothing: the switch's
/// least-loaded choice then prefers the replica with the most room. Decayed rather than counted
/// in windows, so that it moves by a small step with every request instead of jumping at
/// window boundaries.
pub struct Utilisation {
    tau: f64,
    /// The count at full capacity: `ops_per_second × tau`.
    full: f64,
    count: f64,
    at: Instant,
}

impl Utilisation {
    /// A meter for a server of `ops_per_second` (positive).
    pub fn new(ops_per_second: u32, now: Instant) -> Utilisation {
        assert!(ops_per_second > 0, "a service rate must be positive");
        let tau = (f64::from(UTILISATION_REQUESTS) / f64::from(ops_per_second))
            .max(UTILISATION_TIME_MIN.as_secs_f64());
        Utilisation {
            tau,
            full: f64::from(ops_per_second) * tau,
            count: 0.0,
            at: now,
        }
    }

    /// The time constant of the average.
    pub fn time_constant(&self) -> Duration {
        Duration::from_secs_f64(self.tau)
    }

    fn decay_to(&mut self, now: Instant) {
        // The store asks for the steps at the instant it counted a request: no time, no decay.
        if now <= self.at {
            return;
        }
        let elapsed = (now - self.at).as_secs_f64();
        self.count *= (-elapsed / self.tau).exp();
        self.at = now;
    }

    /// Counts one request served at `now`.
    pub fn served(&mut self, now: Instant) {
        self.decay_to(now);
        self.count += 1.0;
    }

    /// The utilisation in [`UTILISATION_STEPS`]ths, at most one less than a whole step.
    pub fn steps(&mut self, now: Instant) -> u16 {
        self.decay_to(now);
        let used = self.count / self.full;
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
        // 1,000 requests/s: a 32 ms average. One server at 80% of that, one at 20%.
        let mut busy = Utilisation::new(1000, t0);
        let mut idle = Utilisation::new(1000, t0);
        assert_eq!(busy.time_constant(), Duration::from_millis(32));
        let mut now = t0;
        for i in 0..400u64 {
            now = t0 + Duration::from_micros(i * 1_250);
            busy.served(now);
            if i % 4 == 0 {
                idle.served(now);
            }
        }
        assert!((12..=13).contains(&busy.steps(now)), "{}", busy.steps(now));
        assert!((3..=4).contains(&idle.steps(now)), "{}", idle.steps(now));
        // Idle for a few time constants: forgotten.
        assert_eq!(busy.steps(now + Duration::from_millis(200)), 0);
        // A fast server averages over at least UTILISATION_TIME_MIN.
        let fast = Utilisation::new(1_000_000, t0);
        assert_eq!(fast.time_constant(), UTILISATION_TIME_MIN);
        // One waiting request outweighs any utilisation.
        assert!(load(1, 0) > load(0, UTILISATION_STEPS - 1));
        assert_eq!(load(0, 99), UTILISATION_STEPS - 1);
        assert_eq!(
            load(usize::MAX, 15),
            (u16::MAX / UTILISATION_STEPS - 1) * 16 + 15,
            "saturates"
        );
    }

    #[test]
    fn saturation_reports_the_top_step() {
        let t0 = Instant::now();
        let mut u = Utilisation::new(250, t0);
        assert_eq!(u.time_constant(), Duration::from_millis(128));
        let mut now = t0;
        for i in 0..1_000u64 {
            now = t0 + Duration::from_millis(i * 4);
            u.served(now);
        }
        assert_eq!(u.steps(now), UTILISATION_STEPS - 1);
    }
}
