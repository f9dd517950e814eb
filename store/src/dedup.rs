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
//! Bounds, for any mix of clients, honest or not: at most [`PER_CLIENT_MAX`] entries per
//! client and [`ENTRIES_MAX`] in all (beyond either, the oldest writes of the client that
//! holds the most go first, counted in `evicted_early`: a retry of an evicted write would be
//! applied again). Each lock shard is swept at least every [`SWEEP_PERIOD`] as writes arrive:
//! expired entries go, and so do the windows of clients that went idle, so memory follows
//! the recent write rate, not the number of client ids ever seen.

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
/// Most writes remembered in all: about 60 MiB, and ten times what a store serving 100,000
/// writes per second holds for [`RETENTION`].
pub const ENTRIES_MAX: usize = 1 << 22;
/// Each shard's share of [`ENTRIES_MAX`].
const SHARD_ENTRIES_MAX: usize = ENTRIES_MAX / SHARDS;
/// How often a shard drops expired entries and idle clients.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(1);

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

/// The windows of the clients of one lock shard, with their total size.
#[derive(Default)]
struct Shard {
    clients: HashMap<u16, Window>,
    entries: usize,
    last_sweep: Option<Instant>,
}

impl Shard {
    /// Drops every expired entry and every window left empty.
    fn sweep(&mut self, now: Instant) {
        let mut entries = 0;
        self.clients.retain(|_, window| {
            while let Some(&(at, old)) = window.arrivals.front() {
                if now.saturating_duration_since(at) <= RETENTION {
                    break;
                }
                window.arrivals.pop_front();
                window.by_request.remove(&old);
            }
            entries += window.arrivals.len();
            !window.arrivals.is_empty()
        });
        self.entries = entries;
        self.last_sweep = Some(now);
    }

    /// Forgets the oldest write of the client that holds the most.
    fn evict_from_largest(&mut self) {
        let largest = self
            .clients
            .iter_mut()
            .max_by_key(|(_, w)| w.arrivals.len())
            .map(|(_, w)| w);
        if let Some(window) = largest
            && let Some((_, old)) = window.arrivals.pop_front()
        {
            window.by_request.remove(&old);
            self.entries -= 1;
        }
    }
}

/// The per-client tables.
pub struct Dedup {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl Dedup {
    /// Writes remembered now, over every client (a consistent count per shard).
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("dedup shard poisoned").entries)
            .sum()
    }

    /// Clients with a window now.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("dedup shard poisoned").clients.len())
            .sum()
    }
}

/// A locked view of one client's shard: hold it across "look up, apply, record" so that two
/// copies of one retried write cannot both be applied.
pub struct ClientGuard<'a> {
    shard: MutexGuard<'a, Shard>,
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
            .clients
            .get(&self.client_id)?
            .by_request
            .get(&request_id)?;
        (seen.keyhash == keyhash).then_some(seen.version)
    }

    /// Remembers that a write got `version`, at `now`; forgets this client's writes older
    /// than [`RETENTION`], and sweeps the shard when its period is up or it is full. Returns
    /// how many writes were forgotten before their time (over [`PER_CLIENT_MAX`] or
    /// [`ENTRIES_MAX`]).
    pub fn record(&mut self, request_id: u32, keyhash: u64, version: u64, now: Instant) -> u64 {
        let shard = &mut *self.shard;
        // A full shard is swept sooner, but not on every write: a sweep visits every client.
        let since_sweep = shard
            .last_sweep
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        if since_sweep >= SWEEP_PERIOD
            || (shard.entries >= SHARD_ENTRIES_MAX && since_sweep >= SWEEP_PERIOD / 100)
        {
            shard.sweep(now);
        }
        let window = shard.clients.entry(self.client_id).or_default();
        let mut evicted_early = 0;
        while let Some(&(at, old)) = window.arrivals.front() {
            let expired = now.saturating_duration_since(at) > RETENTION;
            if !expired && window.arrivals.len() < PER_CLIENT_MAX {
                break;
            }
            evicted_early += u64::from(!expired);
            window.arrivals.pop_front();
            window.by_request.remove(&old);
            shard.entries -= 1;
        }
        if window
            .by_request
            .insert(request_id, Seen { keyhash, version })
            .is_none()
        {
            window.arrivals.push_back((now, request_id));
            shard.entries += 1;
        }
        debug_assert_eq!(window.arrivals.len(), window.by_request.len());
        while shard.entries > SHARD_ENTRIES_MAX {
            shard.evict_from_largest();
            evicted_early += 1;
        }
        assert!(shard.entries <= SHARD_ENTRIES_MAX);
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
    fn idle_clients_are_forgotten_by_the_sweep() {
        let d = Dedup::default();
        let t0 = Instant::now();
        for client in 0..1000u16 {
            d.lock(client).record(1, 1, 1, t0);
        }
        assert_eq!((d.clients(), d.entries()), (1000, 1000));
        // Past the retention, one write per shard sweeps it: only the writers remain.
        let later = t0 + RETENTION + SWEEP_PERIOD;
        for client in 0..SHARDS as u16 {
            d.lock(client).record(2, 1, 1, later);
        }
        assert_eq!((d.clients(), d.entries()), (SHARDS, SHARDS));
    }

    #[test]
    fn memory_is_bounded_over_all_clients() {
        let d = Dedup::default();
        let t0 = Instant::now();
        // Every client id of one shard writing within the retention, more than its share.
        let per_client = (SHARD_ENTRIES_MAX / 4000) as u32 + 1;
        let mut early = 0;
        for client in (0..u16::MAX)
            .filter(|c| *c as usize % SHARDS == 3)
            .take(4096)
        {
            for r in 0..per_client {
                early += d.lock(client).record(r, 1, 1, t0);
            }
        }
        assert!(d.entries() <= SHARD_ENTRIES_MAX);
        assert_eq!(
            early as usize,
            4096 * per_client as usize - SHARD_ENTRIES_MAX,
            "each write beyond the bound forgot exactly one"
        );
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
