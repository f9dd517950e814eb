//! Fault injection for tests and experiments, not a part of the switch.

use crate::*;

/// Share of packets `fault_loss` drops, in millionths (set by `control::fault`).
#[map(name = "FAULT_LOSS")]
pub(crate) static FAULT_LOSS: Array<u32> = Array::with_max_entries(1, 0);

/// Fault injection for tests, not a part of the switch: attached to the interfaces of servers
/// and clients, drops a random share of the packets they receive.
#[xdp]
pub fn fault_loss(_ctx: XdpContext) -> u32 {
    let per_million = FAULT_LOSS.get(0).copied().unwrap_or(0);
    // SAFETY: bpf_get_prandom_u32 has no preconditions.
    if unsafe { bpf_get_prandom_u32() } % 1_000_000 < per_million {
        XDP_DROP
    } else {
        XDP_PASS
    }
}
