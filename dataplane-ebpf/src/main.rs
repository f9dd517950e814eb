//! The Pegasus switch as an XDP program, attached to every port of a rack's top-of-rack switch.
//!
//! For each packet:
//! 1. Anything that is not IPv4/UDP without IP options or fragmentation, or not to or from the
//!    store port, is passed to the kernel untouched (`XDP_PASS`): ARP, ICMP, other traffic.
//! 2. A packet on the store port that is not a valid Pegasus message is counted and passed
//!    untouched, never half-rewritten.
//! 3. Requests: a PUT gets the next version (atomic fetch-add on the global counter, epoch in
//!    the high bits), once: a copy of a PUT stamped before gets its version again, a copy of
//!    one its client has finished is dropped, and a PUT from before a switch restart is
//!    marked for its store to refuse (`stamp`, `pegasus_common::once`). A GET or PUT of a key
//!    in the directory (or a CHAIN_PUT from the previous rack of a chain, never stamped) is
//!    steered: its destination
//!    becomes the server the directory's policy picks (a member of the replica set for a read;
//!    any server, plus copies, for a write) and it carries the HOT flag; a key's entry is
//!    found through the hot filter (an array: no hot key in the key's slot, or the one key's
//!    entry index), through the index (a hash map) only when several hot keys share the slot. A retried write goes where its first attempt went. One
//!    first attempt in `sample_period` is copied, with its key, to the controller's ring
//!    buffer.
//! 4. Replies that carry a version, and CHAIN_PUTs that a server sends on to the next rack,
//!    update the key's directory entry (newer version: the set is the sender; equal: the
//!    sender joins), atomically under the entry's lock; each also updates the sender's load.
//!    Only this rack's servers speak for themselves (`roles::speaks_for_sender`: a CHAIN_ACK
//!    from the next rack updates nothing). Replicate acks end here.
//! 5. The packet is forwarded by the switch itself: `bpf_fib_lookup` gives the egress port and
//!    the MAC addresses, the TTL is decremented, and the packet is redirected through the
//!    `PORTS` DEVMAP. When the FIB has no answer (no neighbour entry yet), the kernel forwards
//!    it instead (`XDP_PASS`).
//!
//! Every decision is a plain function of `pegasus_common` (`switch::classify`, `version::stamp`,
//! `directory::*`, imported here as `rules`); this program only moves bytes between packets,
//! maps and those functions. Its rooms:
//! - `main.rs`: the entry point and the per-packet pipeline above;
//! - `stamp`: version stamping, at most once per write;
//! - `bytes`: frame offsets, bounds-checked byte views, the parse, checksum fixing;
//! - `maps`: every map of the switch;
//! - `directory`: steering hot requests, retry routes, learning from replies under a lock;
//! - `sample`: requests sampled for hot-key detection;
//! - `forward`: the FIB lookup (cached per CPU) and the redirect;
//! - `tally`: the per-CPU counters;
//! - `cache`: the in-switch cache baseline (`pegasus_cache`), a second program on the same
//!   maps;
//! - `yardstick`: programs that are not the switch (the cost benchmark's minimal programs, the
//!   capacity measurement's traffic generator and sink).
//!
//! The lab's fault injector is another object of this crate (`faults.rs`), not the switch.
//!
//! Checksums are updated incrementally for every field rewritten. Every packet region is
//! bounds-checked against `data_end` once (`Bytes`; the verifier insists), then read with
//! single loads at constant offsets, and nothing here can panic.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add` (no CAS in its spec), but LLVM lowers the
// intrinsics to BPF_ATOMIC instructions, which the kernel supports since 5.12 (CPU v3).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, BPF_RB_NO_WAKEUP, bpf_fib_lookup as FibParams,
        xdp_action::XDP_DROP, xdp_action::XDP_PASS, xdp_action::XDP_REDIRECT, xdp_action::XDP_TX,
    },
    helpers::generated::{
        bpf_fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_redirect,
        bpf_xdp_load_bytes,
    },
    macros::{map, xdp},
    maps::{Array, DevMapHash, HashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd, atomic_xchg};
use pegasus_common::{
    checksum::{self, Replacements},
    directory::{self as rules, EntryView, Policy, RecentMix, ReplyAdmission, ServerSet},
    once::{self, ClientWindow},
    roles::{self, PortRole, RequestAdmission, SwitchOnlyFields},
    switch::{
        self, Counter, CounterBlock, DirEntry, FibEntry, FilterAnswer, HeaderPrefix, PacketClass,
        PortSlot, RetryDecision, RetrySlot, Sample, ServerTable, SwitchConfig,
    },
    version,
    wire::{self, Op, offset},
};

mod boundary;
mod bytes;
mod cache;
mod directory;
mod forward;
mod maps;
mod sample;
mod stamp;
mod tally;
mod yardstick;

use boundary::*;
use bytes::*;
use directory::*;
use forward::*;
use maps::*;
use sample::*;
use stamp::*;
use tally::*;

#[xdp]
pub fn pegasus_switch(ctx: XdpContext) -> u32 {
    let Some(tally) = COUNTERS.get_ptr_mut(0).map(Tally) else {
        return XDP_PASS;
    };
    tally.add(Counter::Packets);
    let verdict = process(&ctx, tally);
    tally.add(verdict_counter(verdict));
    verdict
}

#[inline(always)]
fn process(ctx: &XdpContext, tally: Tally) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    // `parse`, written out: through it (a tuple in an Option), this program's verifier run
    // grows past the 1M-instruction limit; the cache program, with fewer paths, uses it.
    let Some(frame) = Headers::at(ctx, 0) else {
        return XDP_PASS;
    };
    if frame.u16(12) != ETH_P_IPV4
        || frame.u8(IP_OFF) != 0x45
        || frame.u16(IP_OFF + ipv4::FRAG) & 0x3fff != 0
        || frame.u8(IP_OFF + ipv4::PROTOCOL) != IPPROTO_UDP
    {
        if touches_store_port(ctx, frame, config.store_port) {
            tally.add(Counter::Unparseable);
            return XDP_DROP;
        }
        return XDP_PASS;
    }
    let src_port = frame.u16(UDP_OFF);
    let dst_port = frame.u16(UDP_OFF + 2);
    let header = Header::at(ctx, PAYLOAD_OFF);
    let class = switch::classify(
        config.store_port,
        src_port,
        dst_port,
        header.map(header_prefix),
    );
    match (class, header) {
        (PacketClass::Request { stamp, .. }, Some(header)) => {
            tally.add(Counter::Requests);
            // The op again, from the packet: carried out of `classify`, it is a value LLVM
            // leaves undefined on the paths that have none, and spills, which the verifier
            // refuses.
            let Some(op) = Op::from_u8(header.u8(offset::OP)) else {
                return XDP_DROP;
            };
            let role = ingress_role(ctx);
            let stamp = match admit_request(frame, header, role, op, stamp, tally) {
                Ok(stamp) => stamp,
                Err(verdict) => return verdict,
            };
            if stamp && let Stamp::Drop = stamp_write(frame, header, config.epoch, tally) {
                return XDP_DROP;
            }
            let routed = if roles::reports_version(role, op) {
                // A server's write leaving for the next rack of a chain: it applied that
                // version, as a reply would say.
                learn_from_server(frame, header, role, op, tally)
            } else if roles::routed_by_directory(role, op) {
                route_request(ctx, frame, header, config, op, tally)
            } else {
                Ok(())
            };
            if let Err(verdict) = routed {
                return verdict;
            }
        }
        (PacketClass::Reply { op }, Some(header)) => {
            tally.add(Counter::Replies);
            if let Err(verdict) = learn_from_server(frame, header, ingress_role(ctx), op, tally) {
                return verdict;
            }
        }
        (PacketClass::Malformed, _) => {
            tally.add(Counter::ParseFailures);
            return XDP_DROP;
        }
        // Not ours (classification says Malformed whenever the header is missing).
        _ => return XDP_PASS,
    }
    forward(ctx, frame, tally)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
