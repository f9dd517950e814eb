//! The Pegasus switch as an XDP program, attached to every port of a rack's top-of-rack switch.
//!
//! For each packet:
//! 1. Anything that is not IPv4/UDP without IP options or fragmentation, or not to or from the
//!    store port, is passed to the kernel untouched (`XDP_PASS`): ARP, ICMP, other traffic.
//! 2. A packet on the store port that is not a valid Pegasus message is counted and passed
//!    untouched, never half-rewritten.
//! 3. A PUT gets the next version (atomic fetch-add on the global counter, epoch in the high
//!    bits); its UDP checksum is updated incrementally.
//! 4. The packet is forwarded by the switch itself: `bpf_fib_lookup` gives the egress port and
//!    the MAC addresses, the TTL is decremented, and the packet is redirected through the
//!    `PORTS` DEVMAP. When the FIB has no answer yet (no neighbour entry), the kernel forwards
//!    it instead (`XDP_PASS`), unmodified.
//!
//! The decisions are the plain functions of `pegasus_common`; this file only reads and writes
//! packet bytes and maps. Every packet access is bounds-checked against `data_end` (the
//! verifier insists), and nothing here can panic.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add` (no CAS in its spec), but LLVM lowers the
// intrinsic to BPF_ATOMIC | BPF_FETCH add, which the kernel supports since 5.12.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action::XDP_DROP,
        xdp_action::XDP_PASS, xdp_action::XDP_REDIRECT,
    },
    helpers::generated::bpf_fib_lookup,
    macros::{map, xdp},
    maps::{Array, DevMapHash, PerCpuArray},
    programs::XdpContext,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use pegasus_common::{
    checksum,
    switch::{self, Counter, HeaderPrefix, PacketClass, SwitchConfig},
    version,
    wire::{self, offset},
};

#[map(name = "CONFIG")]
static CONFIG: Array<SwitchConfig> = Array::with_max_entries(1, 0);

#[map(name = "VERSION_COUNTER")]
static VERSION_COUNTER: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "PORTS")]
static PORTS: DevMapHash = DevMapHash::with_max_entries(switch::MAX_PORTS, 0);

const ETH_HDR_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const IPV4_HDR_LEN: usize = 20;
const IPPROTO_UDP: u8 = 17;
const UDP_HDR_LEN: usize = 8;
const AF_INET: u8 = 2;
/// Offsets from the start of the frame.
const IP_OFF: usize = ETH_HDR_LEN;
const UDP_OFF: usize = IP_OFF + IPV4_HDR_LEN;
const PAYLOAD_OFF: usize = UDP_OFF + UDP_HDR_LEN;

#[xdp]
pub fn pegasus_switch(ctx: XdpContext) -> u32 {
    count(Counter::Packets);
    let verdict = process(&ctx);
    count(match verdict {
        XDP_REDIRECT => Counter::VerdictRedirect,
        XDP_DROP => Counter::VerdictDrop,
        _ => Counter::VerdictPass,
    });
    verdict
}

#[inline(always)]
fn process(ctx: &XdpContext) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    // Ethernet / IPv4 (no options, not a fragment) / UDP, or not ours.
    let Some(eth_type) = read_be16(ctx, 12) else {
        return XDP_PASS;
    };
    if eth_type != ETH_P_IPV4 {
        return XDP_PASS;
    }
    let Some(ip) = ptr_at::<[u8; IPV4_HDR_LEN]>(ctx, IP_OFF) else {
        return XDP_PASS;
    };
    // SAFETY: `ptr_at` checked that the 20 bytes lie inside the packet.
    let ip_bytes = unsafe { *ip };
    let fragment_bits = u16::from_be_bytes([ip_bytes[6], ip_bytes[7]]) & 0x3fff;
    if ip_bytes[0] != 0x45 || fragment_bits != 0 || ip_bytes[9] != IPPROTO_UDP {
        return XDP_PASS;
    }
    let (Some(src_port), Some(dst_port)) = (read_be16(ctx, UDP_OFF), read_be16(ctx, UDP_OFF + 2))
    else {
        return XDP_PASS;
    };
    let prefix = read_header_prefix(ctx);
    match switch::classify(config.store_port, src_port, dst_port, prefix) {
        PacketClass::NotPegasus => return XDP_PASS,
        PacketClass::Malformed => {
            count(Counter::ParseFailures);
            return XDP_PASS;
        }
        PacketClass::Request { stamp, .. } => {
            count(Counter::Requests);
            if stamp {
                if !stamp_version(ctx, config.epoch) {
                    count(Counter::VersionExhausted);
                    return XDP_DROP;
                }
                count(Counter::WritesStamped);
            }
        }
        PacketClass::Reply { .. } => count(Counter::Replies),
    }
    forward(ctx, &ip_bytes, src_port, dst_port)
}

/// Stamps the next version on the PUT in `ctx` and fixes its UDP checksum. False when the
/// epoch's counter is exhausted (the write must not go out unstamped).
#[inline(always)]
fn stamp_version(ctx: &XdpContext, epoch: u16) -> bool {
    let Some(counter) = VERSION_COUNTER.get_ptr_mut(0) else {
        return false;
    };
    // The one place where CPUs race on the version order: an atomic fetch-add (BPF_ATOMIC
    // with BPF_FETCH) makes every stamped version unique. SeqCst, not Relaxed: for a
    // `monotonic` atomicrmw, LLVM 22's BPF backend emits the non-fetching `lock add` yet reads
    // the register as if it had fetched (every write would get the same version). The
    // fixtures in control/tests/xdp_fixtures.rs check that consecutive stamps differ.
    // SAFETY: the map value is a u64, valid and aligned for the program's lifetime.
    let before = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, 1) };
    let Some(new_version) = version::stamp(epoch, before) else {
        return false;
    };
    let (Some(version_ptr), Some(check_ptr)) = (
        ptr_at::<[u8; 8]>(ctx, PAYLOAD_OFF + offset::VERSION),
        ptr_at::<[u8; 2]>(ctx, UDP_OFF + 6),
    ) else {
        return false;
    };
    // SAFETY: both pointers were bounds-checked by `ptr_at`.
    unsafe {
        let old_version = u64::from_be_bytes(*version_ptr);
        let old_check = u16::from_be_bytes(*check_ptr);
        let new_check = checksum::replace_u64(old_check, old_version, new_version);
        *version_ptr = new_version.to_be_bytes();
        *check_ptr = checksum::udp_fixup(old_check, new_check).to_be_bytes();
    }
    true
}

/// Forwards the packet out of the port the kernel's FIB chooses, or passes it to the kernel
/// unmodified when the FIB cannot say (no neighbour entry yet, TTL expiring, not a switch port).
#[inline(always)]
fn forward(ctx: &XdpContext, ip: &[u8; IPV4_HDR_LEN], src_port: u16, dst_port: u16) -> u32 {
    let ttl = ip[8];
    if ttl <= 1 {
        return XDP_PASS; // the kernel answers with ICMP time exceeded
    }
    // SAFETY: an all-zero bpf_fib_lookup is a valid value of this plain C struct.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_UDP;
    fib.sport = src_port.to_be();
    fib.dport = dst_port.to_be();
    fib.__bindgen_anon_1.tot_len = u16::from_be_bytes([ip[2], ip[3]]);
    fib.ifindex = ctx.ingress_ifindex() as u32;
    fib.__bindgen_anon_2.tos = ip[1];
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
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
        count(Counter::FibMisses);
        return XDP_PASS;
    }
    let (Some(eth), Some(ttl_word), Some(ip_check)) = (
        ptr_at::<[u8; 12]>(ctx, 0),
        ptr_at::<[u8; 2]>(ctx, IP_OFF + 8),
        ptr_at::<[u8; 2]>(ctx, IP_OFF + 10),
    ) else {
        return XDP_PASS;
    };
    // SAFETY: all three pointers were bounds-checked by `ptr_at`.
    unsafe {
        let old_word = u16::from_be_bytes(*ttl_word);
        let new_word = old_word - 0x0100; // TTL is the high byte; checked > 1 above
        let check = checksum::replace_u16(u16::from_be_bytes(*ip_check), old_word, new_word);
        *ttl_word = new_word.to_be_bytes();
        *ip_check = check.to_be_bytes();
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&fib.dmac);
        macs[6..].copy_from_slice(&fib.smac);
        *eth = macs;
    }
    match PORTS.redirect(fib.ifindex, XDP_PASS as u64) {
        Ok(action) | Err(action) => action,
    }
}

/// The first bytes of the Pegasus header, or `None` when the payload is shorter than a header.
#[inline(always)]
fn read_header_prefix(ctx: &XdpContext) -> Option<HeaderPrefix> {
    let header = ptr_at::<[u8; wire::HEADER_LEN]>(ctx, PAYLOAD_OFF)?;
    // SAFETY: bounds-checked by `ptr_at`.
    let h = unsafe { &*header };
    Some(HeaderPrefix {
        magic: u16::from_be_bytes([h[offset::MAGIC], h[offset::MAGIC + 1]]),
        proto_version: h[offset::PROTO_VERSION],
        op_code: h[offset::OP],
        flags: h[offset::FLAGS],
    })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, at: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, at)?;
    // SAFETY: bounds-checked by `ptr_at`.
    Some(u16::from_be_bytes(unsafe { *p }))
}

/// A pointer to a `T` at byte `at` of the packet, if all of it lies before `data_end`.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, at: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + at + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + at) as *mut T)
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot: no other CPU writes it, and XDP does not preempt itself.
        unsafe { *slot += 1 };
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
