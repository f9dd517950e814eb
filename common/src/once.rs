//! At-most-once writes: every copy of one write gets one version, however late it arrives.
//!
//! A network may deliver a write twice, seconds apart. If the switch stamped each copy with a
//! fresh version, the late copy would win over every write made in between, and a read would
//! see an old value come back. So the switch stamps a write once and gives every later copy of
//! it (a duplicate, or the client's own retry) the same version; under the stores' write rule
//! ([`crate::version::write_applies`]) a copy with an old version changes nothing wherever it
//! lands, and a copy with the newest version rewrites the value it already holds.
//!
//! What the switch remembers, per client id, is a *window* of [`WRITE_WINDOW`] slots, one per
//! request id modulo the window; each slot holds the last write stamped in it: its request id
//! and the low 32 bits of its version's counter, in one word (one atomic store, no lock). A
//! write's slot says which of three cases it is ([`decide`]):
//! - the slot holds this request: it was stamped before; reuse that version;
//! - the slot holds a request at least one window newer: this write is a stale duplicate of one
//!   its client finished (see the client's rule below): drop it;
//! - the slot is empty or holds an older request: this write was never stamped: stamp it.
//!
//! The client's rule (kept by the client library): **a client never has two writes outstanding
//! whose request ids are a window or more apart**; it issues write `r + WRITE_WINDOW` only once
//! write `r` has ended (answered, or given up). So when a slot holds a request newer than `r`
//! by a window, `r` has ended, and its copy may be dropped. Ids compare in 31-bit serial
//! arithmetic, so the rule holds across wrap-around; clients keep reads and writes in separate
//! id sequences ([`WRITE_ID_BIT`]) so that reads do not widen the writes' span.
//!
//! A switch restart loses the windows. Requests carry the switch epoch their client last
//! learned ([`crate::wire::Header::client_epoch`]); a write whose epoch is not the switch's is
//! never stamped ([`admits_epoch`]): the store refuses it with `StaleEpoch` and the current
//! epoch, so every copy of a write sent before a restart is refused after it. docs/directory.md
//! ("At-most-once writes") has the argument in full.

/// Writes remembered per client: the widest span of request ids a client may have outstanding.
pub const WRITE_WINDOW: u32 = 64;

/// Client ids the switch keeps a window for: all of them.
pub const CLIENTS: u32 = 1 << 16;

/// Set in the request id of every write of the client library: reads and writes then count
/// in separate sequences (the low 31 bits), and a burst of reads does not push outstanding
/// writes out of the window.
pub const WRITE_ID_BIT: u32 = 1 << 31;

/// The part of a request id that orders it.
const SEQUENCE_MASK: u32 = !WRITE_ID_BIT;

/// Half the sequence space: serial arithmetic compares ids less than this apart.
const HALF_SEQUENCE: u32 = 1 << 30;

/// One client's window: slot `i` holds the last write stamped whose request id is `i` modulo
/// [`WRITE_WINDOW`], as `record(request_id, counter)`, or 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientWindow {
    pub slots: [u64; WRITE_WINDOW as usize],
}

impl Default for ClientWindow {
    fn default() -> Self {
        ClientWindow {
            slots: [0; WRITE_WINDOW as usize],
        }
    }
}

// SAFETY: plain old data (an array of u64), no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ClientWindow {}

/// The slot of `request_id` in its client's window.
#[inline(always)]
pub const fn slot_of(request_id: u32) -> usize {
    ((request_id & SEQUENCE_MASK) % WRITE_WINDOW) as usize
}

/// What to do with a write, given its slot's word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampDecision {
    /// Never stamped: take a new version and record it.
    Fresh,
    /// Stamped before: its version's counter, to be completed by [`counter_from`].
    Reuse { counter_low: u32 },
    /// A duplicate of a write its client has finished: drop it.
    Stale,
}

/// Decides a write's fate from the word in its slot.
#[inline(always)]
pub const fn decide(slot_word: u64, request_id: u32) -> StampDecision {
    if slot_word == 0 {
        return StampDecision::Fresh;
    }
    let held = (slot_word >> 32) as u32;
    // How far the held request is ahead of this one, in 31-bit serial arithmetic.
    let ahead = (held & SEQUENCE_MASK).wrapping_sub(request_id & SEQUENCE_MASK) & SEQUENCE_MASK;
    if ahead == 0 {
        StampDecision::Reuse {
            counter_low: slot_word as u32,
        }
    } else if ahead <= HALF_SEQUENCE {
        // The held request is newer, and shares the slot: it is at least a window newer.
        StampDecision::Stale
    } else {
        StampDecision::Fresh
    }
}

/// The word that records `request_id` stamped with version counter `counter`. Never 0 (the
/// empty slot): the write bit is always set in the recorded id, which only its low 31 bits
/// identify.
#[inline(always)]
pub const fn record(request_id: u32, counter: u64) -> u64 {
    (((request_id | WRITE_ID_BIT) as u64) << 32) | (counter & 0xffff_ffff)
}

/// The full counter of a recorded stamp, from its low 32 bits and the switch's counter now
/// (which is at least the recorded one): right as long as fewer than 2^32 writes were stamped
/// since, about 12 hours at 100,000 writes per second.
#[inline(always)]
pub const fn counter_from(counter_now: u64, counter_low: u32) -> u64 {
    let candidate = (counter_now & !0xffff_ffff) | counter_low as u64;
    if candidate > counter_now {
        candidate.saturating_sub(1 << 32)
    } else {
        candidate
    }
}

/// Whether the switch stamps a write whose client last learned `client_epoch`: only when it is
/// the switch's own epoch. Epoch 0 (a client that has learned none) is never a switch's.
#[inline(always)]
pub const fn admits_epoch(client_epoch: u16, switch_epoch: u16) -> bool {
    client_epoch != 0 && client_epoch == switch_epoch
}

/// The span rule of the client library: write `request_id` may be sent while `oldest` (the
/// oldest write still outstanding, if any) is less than a window behind it.
#[inline(always)]
pub const fn within_window(oldest_outstanding: u32, request_id: u32) -> bool {
    let behind = (request_id & SEQUENCE_MASK).wrapping_sub(oldest_outstanding & SEQUENCE_MASK)
        & SEQUENCE_MASK;
    behind < WRITE_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A switch's windows and counter, as a plain model of what the XDP program does.
    struct Model {
        windows: std::collections::HashMap<u16, ClientWindow>,
        counter: u64,
    }

    impl Model {
        fn new() -> Model {
            Model {
                windows: Default::default(),
                counter: 0,
            }
        }

        /// The counter a write gets, or `None` when it is dropped as stale.
        fn stamp(&mut self, client: u16, request_id: u32) -> Option<u64> {
            let window = self.windows.entry(client).or_default();
            let slot = &mut window.slots[slot_of(request_id)];
            match decide(*slot, request_id) {
                StampDecision::Fresh => {
                    self.counter += 1;
                    *slot = record(request_id, self.counter);
                    Some(self.counter)
                }
                StampDecision::Reuse { counter_low } => {
                    Some(counter_from(self.counter, counter_low))
                }
                StampDecision::Stale => None,
            }
        }
    }

    #[test]
    fn a_copy_gets_the_version_of_the_first() {
        let mut m = Model::new();
        let first = m.stamp(7, WRITE_ID_BIT | 10).unwrap();
        let other = m.stamp(7, WRITE_ID_BIT | 11).unwrap();
        assert_ne!(first, other);
        assert_eq!(m.stamp(7, WRITE_ID_BIT | 10), Some(first));
        assert_eq!(m.stamp(7, WRITE_ID_BIT | 11), Some(other));
        // Another client's request with the same id is its own write.
        assert_ne!(m.stamp(8, WRITE_ID_BIT | 10), Some(first));
    }

    #[test]
    fn a_copy_of_a_write_a_window_old_is_stale() {
        let mut m = Model::new();
        let r = WRITE_ID_BIT | 5;
        m.stamp(1, r).unwrap();
        m.stamp(1, r + WRITE_WINDOW).unwrap();
        assert_eq!(m.stamp(1, r), None, "r ended before r + window was sent");
        // Even much later and after wrap-around of the sequence.
        let mut m = Model::new();
        let near_end = WRITE_ID_BIT | (SEQUENCE_MASK - 2);
        m.stamp(1, near_end).unwrap();
        let wrapped = WRITE_ID_BIT | (near_end.wrapping_add(WRITE_WINDOW) & SEQUENCE_MASK);
        assert_eq!(slot_of(wrapped), slot_of(near_end));
        m.stamp(1, wrapped).unwrap();
        assert_eq!(m.stamp(1, near_end), None);
    }

    #[test]
    fn reordered_new_writes_are_fresh() {
        let mut m = Model::new();
        let base = WRITE_ID_BIT | 1000;
        // 63 writes outstanding, arriving in reverse order: each is new.
        let versions: Vec<u64> = (0..WRITE_WINDOW - 1)
            .rev()
            .map(|i| m.stamp(3, base + i).unwrap())
            .collect();
        let mut distinct = versions.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), versions.len());
    }

    #[test]
    fn the_counter_is_rebuilt_across_its_low_word() {
        assert_eq!(counter_from(5, 3), 3);
        assert_eq!(counter_from(0x1_0000_0002, 0xffff_fff0), 0xffff_fff0);
        assert_eq!(counter_from(0x1_0000_0002, 1), 0x1_0000_0001);
        assert_eq!(counter_from(0x7_0000_0000, 0), 0x7_0000_0000);
    }

    #[test]
    fn epochs() {
        assert!(admits_epoch(3, 3));
        assert!(!admits_epoch(2, 3), "a write from before a restart");
        assert!(!admits_epoch(0, 0), "no switch epoch is 0");
        assert!(!admits_epoch(0, 1), "a client that has learned no epoch");
    }

    #[test]
    fn the_span_rule() {
        let r = WRITE_ID_BIT | 100;
        assert!(within_window(r, r));
        assert!(within_window(r, r + WRITE_WINDOW - 1));
        assert!(!within_window(r, r + WRITE_WINDOW));
        let end = WRITE_ID_BIT | SEQUENCE_MASK;
        assert!(within_window(end, WRITE_ID_BIT | 3), "across wrap-around");
    }

    proptest! {
        /// For any schedule of a client that keeps the span rule, with any copies delivered
        /// at any later time: every copy of a write gets that write's first version, and no
        /// two writes share one; a copy is dropped only once its write has ended.
        #[test]
        fn every_copy_gets_one_version(
            start in any::<u32>(),
            steps in proptest::collection::vec((0u32..8, 0u32..200, any::<bool>()), 1..400),
        ) {
            let mut m = Model::new();
            let mut versions: std::collections::HashMap<u32, u64> = Default::default();
            let mut outstanding: std::collections::BTreeSet<u32> = Default::default();
            let mut next = 0u32;
            let id = |n: u32| WRITE_ID_BIT | (start.wrapping_add(n) & SEQUENCE_MASK);
            for (issue, copy_of, finish) in steps {
                // Issue new writes while the span rule allows.
                for _ in 0..issue {
                    if let Some(&oldest) = outstanding.first()
                        && !within_window(id(oldest), id(next))
                    {
                        break;
                    }
                    let v = m.stamp(9, id(next)).unwrap();
                    prop_assert!(versions.values().all(|&other| other != v));
                    versions.insert(next, v);
                    outstanding.insert(next);
                    next += 1;
                }
                // A copy of any write issued so far, however old.
                if next > 0 {
                    let n = next - 1 - copy_of.min(next - 1);
                    match m.stamp(9, id(n)) {
                        Some(v) => prop_assert_eq!(v, versions[&n]),
                        None => prop_assert!(!outstanding.contains(&n)),
                    }
                }
                if finish && let Some(&oldest) = outstanding.first() {
                    outstanding.remove(&oldest);
                }
            }
        }
    }
}
