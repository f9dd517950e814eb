//! Write deduplication: a bounded window of recent writes per client, so that a retried write
//! (same client id and request id) is answered with the version it got the first time instead
//! of being applied again at a later position.
//!
//! Bounds: [`WINDOW`] writes per client, and client ids are 16 bits, so the table can never
//! exceed 65,536 windows (about 27 MiB at the worst).

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

/// Recent writes remembered per client; a client retries only its outstanding requests, so
/// this must exceed the number of writes one client keeps in flight.
pub const WINDOW: usize = 32;
/// Lock shards, by client id.
const SHARDS: usize = 16;

#[derive(Clone, Copy, Default)]
struct Slot {
    request_id: u32,
    keyhash: u64,
    version: u64,
    used: bool,
}

/// One client's recent writes, oldest overwritten first.
struct Window {
    slots: [Slot; WINDOW],
    next: usize,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            slots: [Slot::default(); WINDOW],
            next: 0,
        }
    }
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
        let window = self.shard.get(&self.client_id)?;
        window
            .slots
            .iter()
            .find(|s| s.used && s.request_id == request_id && s.keyhash == keyhash)
            .map(|s| s.version)
    }

    /// Remembers that a write got `version`.
    pub fn record(&mut self, request_id: u32, keyhash: u64, version: u64) {
        let window = self.shard.entry(self.client_id).or_default();
        window.slots[window.next] = Slot {
            request_id,
            keyhash,
            version,
            used: true,
        };
        window.next = (window.next + 1) % WINDOW;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_recognised_and_others_are_not() {
        let d = Dedup::default();
        d.lock(7).record(100, 1, 55);
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
    fn the_window_is_bounded() {
        let d = Dedup::default();
        for r in 0..(WINDOW as u32 + 5) {
            d.lock(1).record(r, 9, r as u64);
        }
        let g = d.lock(1);
        for r in 0..5 {
            assert_eq!(g.lookup(r, 9), None, "request {r} should have been evicted");
        }
        for r in 5..(WINDOW as u32 + 5) {
            assert_eq!(g.lookup(r, 9), Some(r as u64));
        }
    }
}
