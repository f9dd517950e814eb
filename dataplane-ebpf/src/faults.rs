//! The lab's fault injector (`pegasus_common::fault`): tc programs on the host end of a link,
//! one per direction, that drop packets and hand packets to hold back or duplicate to the
//! user-space relay. Not a part of the switch: its own object, loaded only by
//! `control::lab::fault`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_skb_load_bytes,
    macros::{classifier, map},
    maps::{Array, PerCpuArray, RingBuf},
    programs::TcContext,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use pegasus_common::fault::{
    self, Direction, FAULT_FRAMES_RING_BYTES, FRAME_MAX, FaultCounts, HeldFrame, LinkFaults,
    REINJECTED_MAC, REINJECTED_MARK,
};

/// An Ethernet header: the shortest frame carried.
const ETH_HDR_LEN: u32 = 14;

#[map(name = "FAULT_CONFIG")]
static FAULT_CONFIG: Array<LinkFaults> = Array::with_max_entries(2, 0);

#[map(name = "FAULT_SEQUENCE")]
static FAULT_SEQUENCE: Array<u64> = Array::with_max_entries(2, 0);

#[map(name = "FAULT_COUNTS")]
static FAULT_COUNTS: PerCpuArray<FaultCounts> = PerCpuArray::with_max_entries(2, 0);

#[map(name = "FAULT_FRAMES")]
static FAULT_FRAMES: RingBuf = RingBuf::with_byte_size(FAULT_FRAMES_RING_BYTES, 0);

/// Packets from the host to the switch (the host end's egress).
#[classifier]
pub fn fault_to_switch(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the program's context, valid for the call.
    let reinjected = unsafe { (*ctx.skb.skb).mark } == REINJECTED_MARK;
    apply(&ctx, Direction::ToSwitch, reinjected)
}

/// Packets from the switch to the host (the host end's ingress).
#[classifier]
pub fn fault_from_switch(ctx: TcContext) -> i32 {
    let mut source = [0u8; 6];
    // SAFETY: the helper bounds-checks the 6 bytes at offset 6 against the packet.
    let loaded =
        unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, 6, source.as_mut_ptr().cast(), 6) };
    let reinjected = loaded == 0 && source == REINJECTED_MAC;
    apply(&ctx, Direction::FromSwitch, reinjected)
}

#[inline(always)]
fn apply(ctx: &TcContext, direction: Direction, reinjected: bool) -> i32 {
    let index = direction as u32;
    let (Some(faults), Some(counts), Some(sequence)) = (
        FAULT_CONFIG.get(index),
        FAULT_COUNTS.get_ptr_mut(index),
        FAULT_SEQUENCE.get_ptr_mut(index),
    ) else {
        return TC_ACT_OK;
    };
    // SAFETY: a per-CPU map value; tc programs do not preempt themselves on one CPU.
    let counts = unsafe { &mut *counts };
    if reinjected {
        counts.reinjected += 1;
        return TC_ACT_OK;
    }
    counts.seen += 1;
    // SAFETY: a live map value, an aligned u64; SeqCst for the fetching atomic add (see the
    // switch's version counter).
    let n = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(sequence, 1) };
    let decision = fault::decide(faults, direction, n);
    if decision.drop {
        counts.dropped += 1;
        return TC_ACT_SHOT;
    }
    if !decision.duplicate && !decision.hold {
        return TC_ACT_OK;
    }
    let len = ctx.len();
    // Two comparisons the verifier can follow (one range check would leave it thinking the
    // copy below may be empty).
    if len < ETH_HDR_LEN {
        counts.not_carried += 1;
        return TC_ACT_OK;
    }
    if len > FRAME_MAX as u32 {
        counts.not_carried += 1;
        return TC_ACT_OK;
    }
    let Some(mut entry) = FAULT_FRAMES.reserve::<HeldFrame>(0) else {
        counts.not_carried += 1;
        return TC_ACT_OK;
    };
    let frame = entry.as_mut_ptr();
    // SAFETY: the reserved record, sized for a HeldFrame; every field is written before submit
    // (the bytes past `len` are never read by the relay).
    let loaded = unsafe {
        (*frame).n = n;
        (*frame).direction = index;
        (*frame).held = decision.hold as u8;
        (*frame).duplicate = decision.duplicate as u8;
        (*frame).len = len as u16;
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            0,
            (&raw mut (*frame).bytes).cast(),
            len,
        )
    };
    if loaded != 0 {
        entry.discard(0);
        counts.not_carried += 1;
        return TC_ACT_OK;
    }
    entry.submit(0);
    counts.duplicated += decision.duplicate as u64;
    if decision.hold {
        counts.held += 1;
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
