//! Forwarding: the FIB's answer (cached per CPU), TTL and MACs, the redirect through `PORTS`.

use crate::*;

/// The counter of a verdict.
#[inline(always)]
pub(crate) fn verdict_counter(verdict: u32) -> Counter {
    match verdict {
        XDP_REDIRECT => Counter::VerdictRedirect,
        XDP_DROP => Counter::VerdictDrop,
        XDP_TX => Counter::VerdictTx,
        _ => Counter::VerdictPass,
    }
}

/// Forwards the packet out of the port the kernel's FIB chooses, or passes it to the kernel
/// unmodified when the FIB cannot say (no neighbour entry yet, TTL expiring, not a switch port,
/// a local destination).
#[inline(always)]
pub(crate) fn forward(ctx: &XdpContext, frame: Headers, tally: Tally) -> u32 {
    let ttl = frame.u8(IP_OFF + ipv4::TTL);
    if ttl <= 1 {
        return XDP_PASS; // the kernel answers with ICMP time exceeded
    }
    let dst = frame.u32(IP_OFF + ipv4::DST);
    // Generation 0 never matches: slots start empty, and a cache without its generation
    // (not written yet) is never used.
    let generation = FIB_GENERATION.get(0).copied().unwrap_or(0).max(1);
    let Some(slot) = FIB_CACHE.get_ptr_mut(switch::fib_slot(dst.to_be())) else {
        return XDP_PASS;
    };
    // SAFETY: a valid per-CPU map value pointer; only this CPU touches it.
    let cached = unsafe { *slot };
    let route = if cached.ipv4 == dst.to_be() && cached.generation == generation {
        cached
    } else {
        tally.add(Counter::FibLookups);
        match fib_lookup(ctx, frame, dst, generation) {
            Some(route) => {
                // SAFETY: as above.
                unsafe { *slot = route };
                route
            }
            None => {
                tally.add(Counter::FibMisses);
                return XDP_PASS;
            }
        }
    };
    // TTL is the high byte of its 16-bit word (checked > 1 above).
    let old_word = frame.u16(IP_OFF + ipv4::TTL);
    let new_word = old_word - 0x0100;
    frame.set_u16(IP_OFF + ipv4::TTL, new_word);
    let ip_sum = frame.u16(IP_OFF + ipv4::CHECK);
    frame.set_u16(
        IP_OFF + ipv4::CHECK,
        checksum::replace_u16(ip_sum, old_word, new_word),
    );
    frame.set_bytes(0, route.dmac);
    frame.set_bytes(6, route.smac);
    match PORTS.redirect(route.ifindex, XDP_PASS as u64) {
        Ok(action) | Err(action) => action,
    }
}

/// Asks the kernel's FIB where the packet to `dst` goes. `None` when it cannot say (no route,
/// no neighbour entry yet) or the egress is not a switch port: the kernel then forwards it.
/// Destination-based: the decision is cached per destination address (`FIB_CACHE`), which
/// holds for a ToR's routes (no source or port policy).
#[inline(always)]
pub(crate) fn fib_lookup(
    ctx: &XdpContext,
    frame: Headers,
    dst: u32,
    generation: u32,
) -> Option<FibEntry> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid value of this plain C struct.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_UDP;
    fib.sport = frame.u16(UDP_OFF).to_be();
    fib.dport = frame.u16(UDP_OFF + 2).to_be();
    // No MTU check (tot_len 0): the answer is cached per destination and reused for packets
    // of any length, so checking the first packet's length would make a packet's fate depend
    // on what came before it (the differential test found this). Every port of a rack has
    // one MTU, so a frame that arrived fits; one that does not fit its egress is dropped by
    // the redirect, as it would be on a cache hit.
    fib.__bindgen_anon_1.tot_len = 0;
    fib.ifindex = ctx.ingress_ifindex() as u32;
    fib.__bindgen_anon_2.tos = frame.u8(IP_OFF + ipv4::TOS);
    fib.__bindgen_anon_3.ipv4_src = frame.u32(IP_OFF + ipv4::SRC).to_be();
    fib.__bindgen_anon_4.ipv4_dst = dst.to_be();
    // SAFETY: the helper reads and writes only `fib`, whose size we pass.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 || PORTS.get(fib.ifindex).is_none() {
        return None;
    }
    Some(FibEntry {
        ipv4: dst.to_be(),
        generation,
        ifindex: fib.ifindex,
        dmac: fib.dmac,
        smac: fib.smac,
        reserved: [0; 4],
    })
}
