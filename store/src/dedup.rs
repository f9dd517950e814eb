//! Write deduplication: the writes each client made recently, so that a retried write (same
//! client id and request id) is answered with the version it got the first time instead of
//! being applied again at a later position.
//!
//! "Recently" is a time, not a count: a client retries a write for at most the switch's retry
//! window ([`RETRY_WINDOW_NS`], enforced by the client library), and in that time it may make
//! any number of other writes (a count-based window of 32 once let a retry through after 640
//! newer writes of the same client: the lab's linearizability test caught it). Entries are
//! kept for [`RETENTION`] (the window with a margin), then dropped as new ones arrive.
//!
//! Bounds: at most [`PER_CLIENT_MAX`] entries per client (beyond it the oldest go first,
//! counted in `evicted_early`, and a retry of an evicted write would be applied again), and
//! client ids are 16 bits.

use pegasus_common::switch::RETRY_WINDOW_NS;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// How long a write is remembered: the retry window and a second of margin.
pub const RETENTION: Duration = Duration::from_nanos(RETRY_WINDOW_NS + 1_000_000_000);
/// Most writes remembered per client: three seconds at 87,000 writes per second.
pub const PER_CLIENT_MAX: usize = 262_144;
/// Lock shards, by client id.
const SHARDS: usize = 16;

/// What a write got.
#[derive(Clone, Copy)]
struct Seen {
    keyhash: u64,
    version: u64,
}

/// One client's recent writes, by request id, and their order of arrival.
#[derive(Default)]
struct Window {
    by_request: HashMap<u32, Seen>,
    arrivals: VecDeque<(Instant, u32)>,
}

/// The per-client tables.
pub struct Dedup {
    shards: Box<[Mutex<HashMap<u16, Window>>]>,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// A locked view of one client's shard: hold it across "look up, apply, record" so that two
/// copies of one retried write cannot both be applied.
pub struct ClientGuard<'a> {
    shard: MutexGuard<'a, HashMap<u16, Window>>,
    client_id: u16,
}

impl Dedup {
    /// Locks the shard of `client_id`.
    pub fn lock(&self, client_id: u16) -> ClientGuard<'_> {
        ClientGuard {
            shard: self.shards[client_id as usize % SHARDS]
                .lock()
                .expect("dedup shard poisoned"),
            client_id,
        }
    }
}

impl ClientGuard<'_> {
    /// The version a write with this request id got, if it was seen. The key hash must match
    /// too: the same request id on another key is another request.
    pub fn lookup(&self, request_id: u32, keyhash: u64) -> Option<u64> {
        let seen = self
            .shard
            .get(&self.client_id)?
            .by_request
            .get(&request_id)?;
        (seen.keyhash == keyhash).then_some(seen.version)
    }

    /// Remembers that a write got `version`, at `now`; forgets this client's writes older
    /// than [`RETENTION`]. Returns how many were forgotten before their time (over
    /// [`PER_CLIENT_MAX`]).
    pub fn record(&mut self, request_id: u32, keyhash: u64, version: u64, now: Instant) -> u64 {
        let window = self.shard.entry(self.client_id).or_default();
        let mut evicted_early = 0;
        while let Some(&(at, old)) = window.arrivals.front() {
            let expired = now.saturating_duration_since(at) > RETENTION;
            if !expired && window.arrivals.len() < PER_CLIENT_MAX {
                break;
            }
            evicted_early += u64::from(!expired);
            window.arrivals.pop_front();
            window.by_request.remove(&old);
        }
        if window
            .by_request
            .insert(request_id, Seen { keyhash, version })
            .is_none()
        {
            window.arrivals.push_back((now, request_id));
        }
        debug_assert_eq!(window.arrivals.len(), window.by_request.len());
        evicted_early
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_recognised_and_others_are_not() {
        let d = Dedup::default();
        let now = Instant::now();
        d.lock(7).record(100, 1, 55, now);
        assert_eq!(d.lock(7).lookup(100, 1), Some(55));
        assert_eq!(d.lock(7).lookup(100, 2), None, "other key");
        assert_eq!(d.lock(8).lookup(100, 1), None, "other client");
        assert_eq!(
            d.lock(7 + SHARDS as u16).lookup(100, 1),
            None,
            "same shard, other client"
        );
    }

    #[test]
    fn writes_are_remembered_for_the_retention_however_many_follow() {
        let d = Dedup::default();
        let t0 = Instant::now();
        d.lock(1).record(0, 9, 1, t0);
        // Ten thousand newer writes of the same client within the retention.
        for r in 1..10_000u32 {
            d.lock(1)
                .record(r, 9, r as u64, t0 + Duration::from_micros(r as u64));
        }
        assert_eq!(
            d.lock(1).lookup(0, 9),
            Some(1),
            "still within the retention"
        );
        // Past the retention, the next write forgets it.
        let later = t0 + RETENTION + Duration::from_millis(1);
        assert_eq!(
            d.lock(1).record(20_000, 9, 7, later),
            0,
            "none forgotten early"
        );
        assert_eq!(d.lock(1).lookup(0, 9), None);
        assert_eq!(d.lock(1).lookup(20_000, 9), Some(7));
    }

    #[test]
    fn a_client_over_its_bound_loses_its_oldest_writes_first() {
        let d = Dedup::default();
        let t0 = Instant::now();
        let mut early = 0;
        for r in 0..(PER_CLIENT_MAX as u32 + 3) {
            early += d.lock(2).record(r, 1, 1, t0);
        }
        assert_eq!(early, 3);
        assert_eq!(d.lock(2).lookup(2, 1), None);
        assert_eq!(d.lock(2).lookup(3, 1), Some(1));
    }
}
