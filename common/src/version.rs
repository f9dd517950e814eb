//! Versions: the order the switch gives to writes.
//!
//! A version is 64 bits: the high 16 bits are the switch *epoch* (bumped on every switch
//! restart, so that every version of a new epoch is larger than every version of an older one),
//! the low 48 bits a counter that the switch increments for every write it stamps.
//! Version 0 means "none" (an unstamped write, or a key never written).

/// Bits of the counter part.
pub const COUNTER_BITS: u32 = 48;
/// Largest counter value; a switch that reaches it must start a new epoch.
pub const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;
/// "No version".
pub const NONE: u64 = 0;

/// Packs an epoch and a counter into a version. `None` when the counter does not fit in
/// 48 bits (the epoch is exhausted).
#[inline(always)]
pub const fn make(epoch: u16, counter: u64) -> Option<u64> {
    if counter > COUNTER_MAX {
        return None;
    }
    Some(((epoch as u64) << COUNTER_BITS) | counter)
}

/// The epoch a version was stamped in.
#[inline(always)]
pub const fn epoch(version: u64) -> u16 {
    (version >> COUNTER_BITS) as u16
}

/// The counter part of a version.
#[inline(always)]
pub const fn counter(version: u64) -> u64 {
    version & COUNTER_MAX
}

/// The version stamped on a write, given the value the switch's global counter had before its
/// atomic increment. Counters start at 1 so that no write is ever stamped [`NONE`].
#[inline(always)]
pub const fn stamp(epoch: u16, counter_before_increment: u64) -> Option<u64> {
    make(epoch, counter_before_increment + 1)
}

/// The store's write rule: a write is applied when its version is at least the stored one.
/// An unstamped write ([`NONE`], only seen without a switch, where the home server alone
/// orders a key's writes) is applied in arrival order. Equal versions are the same write
/// arriving again (a replica copy), so applying it is harmless.
#[inline(always)]
pub const fn write_applies(stored: u64, incoming: u64) -> bool {
    incoming == NONE || incoming >= stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rule() {
        assert!(write_applies(NONE, 5));
        assert!(write_applies(5, 5));
        assert!(write_applies(5, 6));
        assert!(!write_applies(6, 5));
        assert!(
            write_applies(6, NONE),
            "unstamped writes apply in arrival order"
        );
    }

    #[test]
    fn pack_and_unpack() {
        let v = make(3, 42).unwrap();
        assert_eq!(epoch(v), 3);
        assert_eq!(counter(v), 42);
        assert_eq!(make(0, COUNTER_MAX + 1), None);
        assert_eq!(make(u16::MAX, COUNTER_MAX), Some(u64::MAX));
    }

    #[test]
    fn a_new_epoch_orders_after_every_old_version() {
        let old = make(7, COUNTER_MAX).unwrap();
        let new = make(8, 1).unwrap();
        assert!(new > old);
    }

    #[test]
    fn stamps_are_never_none_and_increase() {
        assert_eq!(stamp(0, 0), Some(1));
        assert!(stamp(0, 0).unwrap() < stamp(0, 1).unwrap());
        assert_eq!(stamp(1, COUNTER_MAX), None);
        assert_ne!(stamp(0, 0), Some(NONE));
    }
}
