//! The versioned map. Keys are sharded by key hash over mutex-protected hash tables; each entry
//! keeps key and value in one allocation, which keeps a store of a million small values under
//! twice its raw key and value bytes (docs/measurements.md, "Store memory", measured by `tests/memory_footprint.rs`).

use hashbrown::HashTable;
use pegasus_common::version;
use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

/// Shards: enough that threads rarely meet on one lock.
pub const SHARDS: usize = 64;

/// One key.
struct Entry {
    keyhash: u64,
    version: u64,
    key_len: u16,
    /// The key bytes followed by the value bytes.
    data: Box<[u8]>,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    fn new(keyhash: u64, version: u64, key: &[u8], value: &[u8]) -> Entry {
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Entry {
            keyhash,
            version,
            key_len: u16::try_from(key.len()).expect("keys are at most MAX_KEY_LEN bytes"),
            data: data.into_boxed_slice(),
        }
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The value was stored; the key's version is now `stored_version`: the write's, or the
    /// key's earlier version if the write is unstamped.
    Applied { stored_version: u64 },
    /// A newer version was already stored: this write is ordered before it and left no trace.
    Superseded { stored_version: u64 },
    /// The write would take the table past its memory limit: not applied. `stored_version`
    /// is the key's version, if it has one (else 0).
    Full { stored_version: u64 },
}

/// Bytes a key costs beyond its key and value bytes: the entry's header, the allocation's and
/// the hash table slot's (docs/measurements.md: 1.71x the raw bytes for 64-byte values).
pub const ENTRY_OVERHEAD_BYTES: usize = 64;
/// Default memory limit of a store's data.
pub const MEMORY_LIMIT_DEFAULT: usize = 1 << 30;

/// What a key with this key and value costs against the memory limit.
pub const fn charge(key_len: usize, value_len: usize) -> usize {
    ENTRY_OVERHEAD_BYTES + key_len + value_len
}

/// The store's data.
pub struct Table {
    shards: Box<[Mutex<HashTable<Entry>>]>,
    /// Bytes charged now ([`charge`] per key), and the most that may be.
    bytes: AtomicUsize,
    bytes_limit: usize,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    /// An empty table with the default memory limit.
    pub fn new() -> Table {
        Table::with_limit(MEMORY_LIMIT_DEFAULT)
    }

    /// An empty table that refuses writes that would charge more than `bytes_limit`.
    pub fn with_limit(bytes_limit: usize) -> Table {
        Table {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            bytes: AtomicUsize::new(0),
            bytes_limit,
        }
    }

    /// Bytes charged against the limit now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// Charges `more - less` bytes if that stays within the limit (a write that does not
    /// grow always fits); false when it would not.
    fn reserve(&self, more: usize, less: usize) -> bool {
        if more <= less {
            self.bytes.fetch_sub(less - more, Relaxed);
            return true;
        }
        let grow = more - less;
        self.bytes
            .fetch_update(Relaxed, Relaxed, |now| {
                now.checked_add(grow)
                    .filter(|&after| after <= self.bytes_limit)
            })
            .is_ok()
    }

    fn shard(&self, keyhash: u64) -> std::sync::MutexGuard<'_, HashTable<Entry>> {
        // The low bits pick the shard; hashbrown uses the high bits inside it.
        self.shards[(keyhash as usize) % SHARDS]
            .lock()
            .expect("table shard poisoned")
    }

    /// Shards of the table, for [`Table::shard_entries`].
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Every key of shard `index` with its version and value, copied under the shard's lock
    /// (one shard at a time: a table is copied out in `SHARDS` steps, never whole).
    pub fn shard_entries(&self, index: usize) -> Vec<(u64, u64, Vec<u8>, Vec<u8>)> {
        let shard = self.shards[index].lock().expect("table shard poisoned");
        shard
            .iter()
            .map(|e| (e.keyhash, e.version, e.key().to_vec(), e.value().to_vec()))
            .collect()
    }

    /// Every key's hash and version.
    pub fn versions(&self) -> Vec<(u64, u64)> {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("table shard poisoned");
            all.extend(shard.iter().map(|e| (e.keyhash, e.version)));
        }
        all
    }

    /// Calls `f(version, value)` with the key's current value, if it exists, under the lock
    /// (so the reply can be encoded without copying the value twice).
    pub fn read<R>(&self, keyhash: u64, key: &[u8], f: impl FnOnce(u64, &[u8]) -> R) -> Option<R> {
        let shard = self.shard(keyhash);
        shard
            .find(keyhash, |e| e.keyhash == keyhash && e.key() == key)
            .map(|e| f(e.version, e.value()))
    }

    /// Applies a write under the write rule ([`version::write_applies`]).
    pub fn write(&self, keyhash: u64, key: &[u8], value: &[u8], version: u64) -> WriteOutcome {
        let mut shard = self.shard(keyhash);
        let found = shard.find_mut(keyhash, |e| e.keyhash == keyhash && e.key() == key);
        match found {
            Some(entry) => {
                if !version::write_applies(entry.version, version) {
                    return WriteOutcome::Superseded {
                        stored_version: entry.version,
                    };
                }
                let held = charge(key.len(), entry.value().len());
                if !self.reserve(charge(key.len(), value.len()), held) {
                    return WriteOutcome::Full {
                        stored_version: entry.version,
                    };
                }
                let new_version = entry.version.max(version);
                *entry = Entry::new(keyhash, new_version, key, value);
                WriteOutcome::Applied {
                    stored_version: new_version,
                }
            }
            None => {
                if !self.reserve(charge(key.len(), value.len()), 0) {
                    return WriteOutcome::Full { stored_version: 0 };
                }
                shard.insert_unique(keyhash, Entry::new(keyhash, version, key, value), |e| {
                    e.keyhash
                });
                WriteOutcome::Applied {
                    stored_version: version,
                }
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("table shard poisoned").len())
            .sum()
    }

    /// True when the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pegasus_common::hash::key_hash;

    fn put(t: &Table, k: &str, v: &str, version: u64) -> WriteOutcome {
        t.write(key_hash(k.as_bytes()), k.as_bytes(), v.as_bytes(), version)
    }

    fn get(t: &Table, k: &str) -> Option<(u64, String)> {
        t.read(key_hash(k.as_bytes()), k.as_bytes(), |v, val| {
            (v, String::from_utf8(val.to_vec()).unwrap())
        })
    }

    fn applied(stored_version: u64) -> WriteOutcome {
        WriteOutcome::Applied { stored_version }
    }

    #[test]
    fn newer_or_equal_versions_apply_older_do_not() {
        let t = Table::new();
        assert_eq!(get(&t, "k"), None);
        assert_eq!(put(&t, "k", "a", 5), applied(5));
        assert_eq!(get(&t, "k"), Some((5, "a".into())));
        assert_eq!(
            put(&t, "k", "b", 4),
            WriteOutcome::Superseded { stored_version: 5 }
        );
        assert_eq!(get(&t, "k"), Some((5, "a".into())));
        assert_eq!(put(&t, "k", "c", 5), applied(5));
        assert_eq!(put(&t, "k", "d", 9), applied(9));
        assert_eq!(get(&t, "k"), Some((9, "d".into())));
    }

    #[test]
    fn unstamped_writes_apply_in_order_and_keep_the_version() {
        let t = Table::new();
        assert_eq!(put(&t, "k", "a", 0), applied(0));
        assert_eq!(get(&t, "k"), Some((0, "a".into())));
        put(&t, "k", "b", 7);
        assert_eq!(put(&t, "k", "c", 0), applied(7));
        assert_eq!(get(&t, "k"), Some((7, "c".into())));
    }

    #[test]
    fn colliding_hashes_keep_keys_apart() {
        let t = Table::new();
        // Two keys forced onto the same hash: both must survive, each with its own value.
        t.write(42, b"one", b"1", 1);
        t.write(42, b"two", b"2", 1);
        assert_eq!(t.read(42, b"one", |_, v| v.to_vec()), Some(b"1".to_vec()));
        assert_eq!(t.read(42, b"two", |_, v| v.to_vec()), Some(b"2".to_vec()));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_memory_limit_refuses_growth_and_nothing_else() {
        let t = Table::with_limit(2 * charge(1, 10));
        assert_eq!(put(&t, "a", "0123456789", 1), applied(1));
        assert_eq!(put(&t, "b", "0123456789", 1), applied(1));
        assert_eq!(t.bytes(), 2 * charge(1, 10));
        assert_eq!(
            put(&t, "c", "x", 1),
            WriteOutcome::Full { stored_version: 0 },
            "a new key does not fit"
        );
        assert_eq!(get(&t, "c"), None);
        assert_eq!(
            put(&t, "a", "01234567890", 2),
            WriteOutcome::Full { stored_version: 1 },
            "a larger value does not fit"
        );
        assert_eq!(get(&t, "a"), Some((1, "0123456789".into())));
        // Overwriting with a value no larger always fits, and frees what it no longer needs.
        assert_eq!(put(&t, "a", "01234", 3), applied(3));
        assert_eq!(t.bytes(), charge(1, 10) + charge(1, 5));
        assert_eq!(
            put(&t, "c", "x", 1),
            WriteOutcome::Full { stored_version: 0 }
        );
        assert_eq!(
            t.bytes(),
            charge(1, 10) + charge(1, 5),
            "a refusal charges nothing"
        );
        // A superseded write is not charged.
        assert_eq!(
            put(&t, "a", "much too long for the limit", 2),
            WriteOutcome::Superseded { stored_version: 3 }
        );
    }

    #[test]
    fn empty_values_and_keys_are_values_too() {
        let t = Table::new();
        put(&t, "", "", 1);
        assert_eq!(get(&t, ""), Some((1, String::new())));
    }
}
