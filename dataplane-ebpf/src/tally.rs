//! The per-CPU counters, bumped through one lookup per packet.

use crate::*;

/// This CPU's counters, looked up once per packet.
#[derive(Clone, Copy)]
pub(crate) struct Tally(pub(crate) *mut CounterBlock);

impl Tally {
    #[inline(always)]
    pub(crate) fn add(self, counter: Counter) {
        // SAFETY: a per-CPU map value: no other CPU writes it, and XDP does not preempt
        // itself. The index is in range by construction of `Counter`.
        unsafe { (*self.0).values[counter as usize] += 1 };
    }
}
