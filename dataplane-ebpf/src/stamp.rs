//! Version stamping, at most once per write (`pegasus_common::once`): a write whose client
//! epoch is not the switch's is marked for its store to refuse; a copy of a write stamped
//! before gets its version again; a copy of a write its client has finished is dropped; any
//! other write gets the next version, recorded in its client's window.

use crate::*;
use pegasus_common::once::StampDecision;

/// What became of a write.
pub(crate) enum Stamp {
    /// Stamped (new or reused version): forward it.
    Stamped,
    /// Marked `STALE_EPOCH`: forward it; its store refuses it.
    StaleEpoch,
    /// Dropped: a stale duplicate, or the epoch's counter is exhausted (counted here).
    Drop,
}

/// Stamps a write at most once, or marks or drops it (see the module doc), fixing its UDP
/// checksum for every field it rewrites.
#[inline(always)]
pub(crate) fn stamp_write(frame: Headers, header: Header, epoch: u16, tally: Tally) -> Stamp {
    if !once::admits_epoch(header.u16(offset::CLIENT_EPOCH), epoch) {
        mark_stale_epoch(frame, header, epoch);
        tally.add(Counter::StaleEpochs);
        return Stamp::StaleEpoch;
    }
    let client = header.u16(offset::CLIENT_ID) as u32;
    let request_id = header.u32(offset::REQUEST_ID);
    let (Some(window), Some(counter)) = (
        WRITE_WINDOWS.get_ptr_mut(client),
        VERSION_COUNTER.get_ptr_mut(0),
    ) else {
        return Stamp::Drop;
    };
    // SAFETY: a slot inside a live map value; `slot_of` is below the window's length.
    let slot = unsafe { &raw mut (*window).slots[once::slot_of(request_id)] };
    // A plain aligned 64-bit load is atomic (LLVM's BPF backend has no seq_cst load).
    // SAFETY: both point into live map values, aligned u64s.
    let held = unsafe { core::ptr::read_volatile(slot) };
    let stamped = match once::decide(held, request_id) {
        StampDecision::Reuse { counter_low } => reuse(counter, counter_low, epoch, tally),
        StampDecision::Stale => Err(Counter::StaleDuplicates),
        StampDecision::Fresh => {
            // The one place where CPUs race on the version order: an atomic fetch-add
            // (BPF_ATOMIC with BPF_FETCH) makes every stamped version unique. SeqCst, not
            // Relaxed: for a `monotonic` atomicrmw, LLVM 22's BPF backend emits the
            // non-fetching `lock add` yet reads the register as if it had fetched (every write
            // would get the same version). The fixtures check that consecutive stamps differ.
            // SAFETY: as above.
            let before = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, 1) };
            let recorded = once::record(request_id, before + 1);
            // SAFETY: as above.
            let (seen, won) = unsafe {
                atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                    slot, held, recorded,
                )
            };
            if won {
                tally.add(Counter::WritesStamped);
                version::stamp(epoch, before).ok_or(Counter::VersionExhausted)
            } else if let StampDecision::Reuse { counter_low } = once::decide(seen, request_id) {
                // Another copy of this write, on another CPU, was stamped first: take its
                // version (the counter value drawn here stays unused).
                reuse(counter, counter_low, epoch, tally)
            } else {
                // The slot moved on to a newer write meanwhile: this one is stale.
                Err(Counter::StaleDuplicates)
            }
        }
    };
    let new_version = match stamped {
        Ok(version) => version,
        Err(why) => {
            tally.add(why);
            return Stamp::Drop;
        }
    };
    let old_version = header.u64(offset::VERSION);
    header.set_u64(offset::VERSION, new_version);
    fix_udp_checksum(frame, |sum| {
        checksum::replace_u64(sum, old_version, new_version)
    });
    Stamp::Stamped
}

/// The version of a copy of a write stamped before, from the low word its window recorded.
#[inline(always)]
fn reuse(counter: *mut u64, counter_low: u32, epoch: u16, tally: Tally) -> Result<u64, Counter> {
    // SAFETY: a live map value, an aligned u64 (whose plain load is atomic).
    let now = unsafe { core::ptr::read_volatile(counter) };
    tally.add(Counter::StampsReused);
    version::make(epoch, once::counter_from(now, counter_low)).ok_or(Counter::VersionExhausted)
}

/// Marks a write `STALE_EPOCH`, with the switch's epoch in its version for the client to learn.
#[inline(always)]
fn mark_stale_epoch(frame: Headers, header: Header, epoch: u16) {
    // The server id and flags share one 16-bit checksum word.
    let old_word = header.u16(offset::SERVER_ID);
    let new_word = old_word | wire::flags::STALE_EPOCH as u16;
    let old_version = header.u64(offset::VERSION);
    let new_version = (epoch as u64) << version::COUNTER_BITS;
    header.set_u16(offset::SERVER_ID, new_word);
    header.set_u64(offset::VERSION, new_version);
    let replaced = Replacements::NONE
        .u16(old_word, new_word)
        .u64(old_version, new_version);
    fix_udp_checksum(frame, |sum| replaced.apply(sum));
}
