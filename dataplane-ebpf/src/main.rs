//! The Pegasus switch as an XDP program, attached to every port of a rack's top-of-rack switch.
//!
//! For each packet:
//! 1. Anything that is not IPv4/UDP without IP options or fragmentation, or not to or from the
//!    store port, is passed to the kernel untouched (`XDP_PASS`): ARP, ICMP, other traffic.
//! 2. A packet on the store port that is not a valid Pegasus message is counted and passed
//!    untouched, never half-rewritten.
//! 3. Requests: a PUT gets the next version (atomic fetch-add on the global counter, epoch in
//!    the high bits). A GET or PUT of a key in the directory is steered: its destination
//!    becomes the server the directory's policy picks (a member of the replica set for a read;
//!    any server, plus copies, for a write) and it carries the HOT flag. A retried write goes
//!    where its first attempt went.
//! 4. Replies that carry a version update the key's directory entry (newer version: the set is
//!    the sender; equal: the sender joins), atomically under the entry's lock; every reply
//!    updates the sender's load. Replicate acks end here.
//! 5. The packet is forwarded by the switch itself: `bpf_fib_lookup` gives the egress port and
//!    the MAC addresses, the TTL is decremented, and the packet is redirected through the
//!    `PORTS` DEVMAP. When the FIB has no answer (no neighbour entry yet), the kernel forwards
//!    it instead (`XDP_PASS`).
//!
//! Every decision is a plain function of `pegasus_common` (`switch::classify`, `version::stamp`,
//! `directory::*`); this file only moves bytes between packets, maps and those functions.
//! Checksums are updated incrementally for every field rewritten. Every packet access is
//! bounds-checked against `data_end` (the verifier insists), and nothing here can panic.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add` (no CAS in its spec), but LLVM lowers the
// intrinsics to BPF_ATOMIC instructions, which the kernel supports since 5.12 (CPU v3).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action::XDP_DROP,
        xdp_action::XDP_PASS, xdp_action::XDP_REDIRECT, xdp_action::XDP_TX,
    },
    helpers::generated::{bpf_fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{Array, DevMapHash, HashMap, PerCpuArray},
    programs::XdpContext,
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd, atomic_xchg};
use pegasus_common::{
    checksum,
    directory::{self, EntryView, Policy, ReplyAdmission},
    switch::{
        self, Counter, DirEntry, FibEntry, HeaderPrefix, PacketClass, RetryDecision, RetrySlot,
        ServerTable, SwitchConfig,
    },
    version,
    wire::{self, Op, offset},
};

#[map(name = "CONFIG")]
static CONFIG: Array<SwitchConfig> = Array::with_max_entries(1, 0);

#[map(name = "VERSION_COUNTER")]
static VERSION_COUNTER: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "PORTS")]
static PORTS: DevMapHash = DevMapHash::with_max_entries(switch::MAX_PORTS, 0);

/// The coherence directory; its capacity is set by the controller at load time.
#[map(name = "DIRECTORY")]
static DIRECTORY: HashMap<u64, DirEntry> =
    HashMap::with_max_entries(switch::DIRECTORY_CAPACITY_DEFAULT, 0);

#[map(name = "EVICTIONS")]
static EVICTIONS: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "EVICTING")]
static EVICTING: HashMap<u64, u8> =
    HashMap::with_max_entries(switch::DIRECTORY_CAPACITY_DEFAULT, 0);

#[map(name = "SERVERS")]
static SERVERS: Array<ServerTable> = Array::with_max_entries(1, 0);

/// Per CPU, so that a slot is never written by two CPUs at once (no torn entries, no lock).
#[map(name = "FIB_CACHE")]
static FIB_CACHE: PerCpuArray<FibEntry> = PerCpuArray::with_max_entries(switch::FIB_CACHE_SLOTS, 0);

#[map(name = "FIB_GENERATION")]
static FIB_GENERATION: Array<u32> = Array::with_max_entries(1, 0);
/// Words of `switch::RetryRoute`: an array, not an LRU hash, because remembering a route is
/// then one store instead of a node allocation (the hot write path's largest cost).
#[map(name = "RETRY_ROUTES")]
static RETRY_ROUTES: Array<RetrySlot> = Array::with_max_entries(switch::RETRY_ROUTES_CAPACITY, 0);

const ETH_HDR_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const IPV4_HDR_LEN: usize = 20;
const IPPROTO_UDP: u8 = 17;
const UDP_HDR_LEN: usize = 8;
const AF_INET: u8 = 2;
/// Offsets from the start of the frame.
const IP_OFF: usize = ETH_HDR_LEN;
const IP_DST_OFF: usize = IP_OFF + 16;
const UDP_OFF: usize = IP_OFF + IPV4_HDR_LEN;
const UDP_CHECK_OFF: usize = UDP_OFF + 6;
const PAYLOAD_OFF: usize = UDP_OFF + UDP_HDR_LEN;
/// Attempts to take an entry's lock before giving up on a reply (which is then dropped, and
/// retried by its client): bounded, as the verifier and TigerBeetle both want.
const LOCK_ATTEMPTS_MAX: u32 = 64;

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

/// Share of packets `fault_loss` drops, in millionths (set by `control::fault`).
#[map(name = "FAULT_LOSS")]
static FAULT_LOSS: Array<u32> = Array::with_max_entries(1, 0);

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

/// The yardstick of `pegasus switch bench`, not a part of the switch: the least an XDP
/// program that answers UDP must do. Parses Ethernet, IPv4 (no options) and UDP, swaps the
/// MAC addresses, IPv4 addresses and UDP ports (no checksum changes: a swap keeps both sums)
/// and sends the frame back out of its port. Everything else is passed.
#[xdp]
pub fn baseline_reflect(ctx: XdpContext) -> u32 {
    if read::<[u8; 2]>(&ctx, 12).map(u16::from_be_bytes) != Some(ETH_P_IPV4) {
        return XDP_PASS;
    }
    let Some(ip) = read::<[u8; IPV4_HDR_LEN]>(&ctx, IP_OFF) else {
        return XDP_PASS;
    };
    if ip[0] != 0x45 || ip[9] != IPPROTO_UDP {
        return XDP_PASS;
    }
    let (Some(eth), Some(addrs), Some(ports)) = (
        ptr_at::<[u8; 12]>(&ctx, 0),
        ptr_at::<[u8; 8]>(&ctx, IP_OFF + 12),
        ptr_at::<[u8; 4]>(&ctx, UDP_OFF),
    ) else {
        return XDP_PASS;
    };
    // SAFETY: the three pointers were bounds-checked by `ptr_at`.
    unsafe {
        let e = *eth;
        *eth = [
            e[6], e[7], e[8], e[9], e[10], e[11], e[0], e[1], e[2], e[3], e[4], e[5],
        ];
        let a = *addrs;
        *addrs = [a[4], a[5], a[6], a[7], a[0], a[1], a[2], a[3]];
        let p = *ports;
        *ports = [p[2], p[3], p[0], p[1]];
    }
    XDP_TX
}

#[inline(always)]
fn process(ctx: &XdpContext) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    // Ethernet / IPv4 (no options, not a fragment) / UDP, or not ours.
    if read::<[u8; 2]>(ctx, 12).map(u16::from_be_bytes) != Some(ETH_P_IPV4) {
        return XDP_PASS;
    }
    let Some(ip) = read::<[u8; IPV4_HDR_LEN]>(ctx, IP_OFF) else {
        return XDP_PASS;
    };
    let fragment_bits = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ip[0] != 0x45 || fragment_bits != 0 || ip[9] != IPPROTO_UDP {
        return XDP_PASS;
    }
    let Some(ports) = read::<[u8; 4]>(ctx, UDP_OFF) else {
        return XDP_PASS;
    };
    let src_port = u16::from_be_bytes([ports[0], ports[1]]);
    let dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    // The header is read once, here; what follows works on this copy (only the version field,
    // which nothing reads after stamping, goes stale).
    let header = read::<[u8; wire::HEADER_LEN]>(ctx, PAYLOAD_OFF);
    let class = switch::classify(
        config.store_port,
        src_port,
        dst_port,
        header.as_ref().map(header_prefix),
    );
    match (class, header) {
        (PacketClass::Request { op, stamp }, Some(header)) => {
            count(Counter::Requests);
            if stamp {
                if !stamp_version(ctx, config.epoch) {
                    count(Counter::VersionExhausted);
                    return XDP_DROP;
                }
                count(Counter::WritesStamped);
            }
            if let Err(verdict) = route_request(ctx, config, op, &header) {
                return verdict;
            }
        }
        (PacketClass::Reply { op }, Some(header)) => {
            count(Counter::Replies);
            if let Err(verdict) = learn_from_reply(op, &header) {
                return verdict;
            }
        }
        (PacketClass::Malformed, _) => {
            count(Counter::ParseFailures);
            return XDP_PASS;
        }
        // Not ours (classification says Malformed whenever the header is missing).
        _ => return XDP_PASS,
    }
    forward(ctx, src_port, dst_port)
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
    write_payload(ctx, offset::VERSION, new_version.to_be_bytes())
}

/// Steers a GET or PUT by the directory, and pins a retried write to its first destination.
/// `Err(verdict)` ends the packet's processing.
#[inline(always)]
fn route_request(
    ctx: &XdpContext,
    config: &SwitchConfig,
    op: Op,
    header: &[u8; wire::HEADER_LEN],
) -> Result<(), u32> {
    if op != Op::Get && op != Op::Put {
        return Ok(()); // server-to-server and controller messages go where they are addressed
    }
    // The directory's answer is pinned by the first attempt of a write: a retry must reach
    // the server whose deduplication table knows it (docs/directory.md, "retries").
    if op == Op::Put && header[offset::FLAGS] & wire::flags::RETRY != 0 {
        return route_retry(ctx, header);
    }
    let keyhash = u64::from_be_bytes(field(header, offset::KEYHASH));
    let Some(entry) = DIRECTORY.get_ptr_mut(keyhash) else {
        return Ok(()); // a cold key goes home: the common case, kept short
    };
    let Some(servers) = SERVERS.get(0) else {
        return Ok(());
    };
    let view = entry_view(entry, keyhash);
    let policy = Policy::from_u8(config.policy).unwrap_or(Policy::LeastLoaded);
    // SAFETY: bpf_get_prandom_u32 has no preconditions.
    let random = unsafe { bpf_get_prandom_u32() };

    if op == Op::Put {
        // SAFETY: `entry` points to a live map value; counters tolerate racing adds.
        let sequence = unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*entry).writes, 1)
        };
        // An installing or evicting key's writes go home (see `writes_go_home`).
        if view.writes_go_home() {
            return Ok(());
        }
        let Some(write) = directory::route_hot_write(
            config.all_servers,
            policy,
            servers,
            random,
            sequence as u32,
            config.replication as u32,
        ) else {
            return Ok(());
        };
        let target = servers.slots[(write.primary & 31) as usize];
        if target.valid == 0 {
            return Ok(());
        }
        count(Counter::HotWrites);
        set_flags(ctx, header, wire::flags::HOT, Some(write.replicas))?;
        set_destination(ctx, target.ipv4)?;
        // Only steered first attempts are remembered: a retry with no route goes where it is
        // addressed (home), where its first attempt went too.
        let route = retry_route_of(header);
        let slot = RETRY_ROUTES.get_ptr_mut(route.slot).ok_or(XDP_PASS)?;
        // SAFETY: a valid, aligned map value; one 64-bit store per field, the time first (see
        // `RetrySlot`).
        unsafe {
            core::ptr::write_volatile(&raw mut (*slot).written_ns, bpf_ktime_get_ns());
            core::ptr::write_volatile(&raw mut (*slot).word, route.word(target.ipv4));
        }
        return Ok(());
    }

    // A read of a hot key goes to a member of its replica set.
    // SAFETY: `entry` points to a live map value; counters tolerate racing adds.
    let sequence =
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*entry).reads, 1) };
    let target = directory::route_hot_read(view, policy, servers, random, sequence as u32);
    let slot = servers.slots[(target & 31) as usize];
    if slot.valid == 0 {
        return Ok(());
    }
    count(Counter::HotReads);
    set_flags(ctx, header, wire::flags::HOT, None)?;
    set_destination(ctx, slot.ipv4)
}

/// A retried write: pinned where its first attempt went, home, or dropped, by the retry rule
/// ([`switch::RetryRoute::decide`]).
#[inline(always)]
fn route_retry(ctx: &XdpContext, header: &[u8; wire::HEADER_LEN]) -> Result<(), u32> {
    let route = retry_route_of(header);
    let slot = RETRY_ROUTES.get_ptr(route.slot).ok_or(XDP_PASS)?;
    // SAFETY: a valid, aligned map value; one 64-bit load per field.
    let seen = unsafe {
        RetrySlot {
            word: core::ptr::read_volatile(&raw const (*slot).word),
            written_ns: core::ptr::read_volatile(&raw const (*slot).written_ns),
        }
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match route.decide(seen, now) {
        RetryDecision::Pinned(destination) => {
            count(Counter::RetriesPinned);
            set_flags(ctx, header, wire::flags::HOT, None)?;
            set_destination(ctx, destination)
        }
        RetryDecision::Home => Ok(()),
        RetryDecision::Drop => {
            count(Counter::RetriesDropped);
            Err(XDP_DROP)
        }
    }
}

/// The retry route slot and tag of the request in `header`.
#[inline(always)]
fn retry_route_of(header: &[u8; wire::HEADER_LEN]) -> switch::RetryRoute {
    switch::retry_route(
        u16::from_be_bytes(field(header, offset::CLIENT_ID)),
        u32::from_be_bytes(field(header, offset::REQUEST_ID)),
    )
}

/// Applies what a reply says to the directory and the server's load. `Err(verdict)` ends the
/// packet's processing (a dropped reply, or a replicate ack, whose only reader is the switch).
#[inline(always)]
fn learn_from_reply(op: Op, header: &[u8; wire::HEADER_LEN]) -> Result<(), u32> {
    let sender = header[offset::SERVER_ID];
    if let Some(servers) = SERVERS.get_ptr_mut(0) {
        let load = u16::from_be_bytes(field(header, offset::LOAD));
        // SAFETY: a valid map value; a racing store of another load is as good as this one.
        unsafe { (*servers).slots[(sender & 31) as usize].load = load };
    }
    let version = u64::from_be_bytes(field(header, offset::VERSION));
    let status = u16::from_be_bytes(field(header, offset::STATUS));
    if op.reports_version() && status == 0 && version != version::NONE {
        let keyhash = u64::from_be_bytes(field(header, offset::KEYHASH));
        let steered = header[offset::FLAGS] & wire::flags::HOT != 0;
        let entry = DIRECTORY.get_ptr_mut(keyhash);
        let view = entry.map(|e| entry_view(e, keyhash));
        match directory::admit_reply(view, sender, steered) {
            ReplyAdmission::Update => {
                if let Some(entry) = entry
                    && !update_entry(entry, version, sender)
                {
                    count(Counter::LockBusy);
                    return Err(XDP_DROP);
                }
            }
            ReplyAdmission::Forward => {}
            ReplyAdmission::Drop => {
                count(Counter::RepliesDropped);
                return Err(XDP_DROP);
            }
        }
    }
    if op == Op::ReplicateAck {
        count(Counter::ReplicateAcks);
        return Err(XDP_DROP);
    }
    Ok(())
}

/// What the routing and admission rules see of an entry, read without its lock. `rset` is
/// read once, as one u32: a read racing with an update sees the set before or after it, both
/// of which hold the newest version that was complete when the request arrived. `installing`
/// only ever goes from 1 to 0.
#[inline(always)]
fn entry_view(entry: *mut DirEntry, keyhash: u64) -> EntryView {
    // SAFETY: `entry` points to a live map value for the program's duration.
    unsafe {
        EntryView {
            rset: core::ptr::read_volatile(&raw const (*entry).rset),
            home: (*entry).home,
            evicting: EVICTIONS.get(0).is_some_and(|&n| n != 0)
                && EVICTING.get_ptr(keyhash).is_some(),
            installing: core::ptr::read_volatile(&raw const (*entry).installing) != 0,
        }
    }
}

/// The reply rule on one entry, as one atomic step: a spin lock taken by compare-and-swap on
/// the entry's `lock` word (bounded attempts), and a seqlock counter around the change so that
/// user space can take a consistent copy. False when the lock stayed busy.
#[inline(always)]
fn update_entry(entry: *mut DirEntry, version: u64, sender: u8) -> bool {
    // SAFETY: `entry` is a live map value for the program's duration; every access to
    // `ver_completed`, `rset` and `seq` by the program happens under `lock`.
    unsafe {
        let lock = &raw mut (*entry).lock;
        let mut attempt = 0;
        loop {
            let (_, taken) =
                atomic_cxchg::<u32, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                    lock, 0, 1,
                );
            if taken {
                break;
            }
            attempt += 1;
            if attempt >= LOCK_ATTEMPTS_MAX {
                return false;
            }
        }
        let seq = &raw mut (*entry).seq;
        core::ptr::write_volatile(seq, core::ptr::read_volatile(seq) + 1);
        let mut ver_completed = (*entry).ver_completed;
        let mut rset = (*entry).rset;
        let effect = directory::apply_reply(&mut ver_completed, &mut rset, version, sender);
        core::ptr::write_volatile(&raw mut (*entry).ver_completed, ver_completed);
        core::ptr::write_volatile(&raw mut (*entry).rset, rset);
        let installing = core::ptr::read_volatile(&raw const (*entry).installing) != 0;
        let installing = directory::still_installing(installing, sender, (*entry).home);
        core::ptr::write_volatile(&raw mut (*entry).installing, installing as u8);
        core::ptr::write_volatile(seq, core::ptr::read_volatile(seq) + 1);
        atomic_xchg::<u32, { AtomicOrdering::SeqCst }>(lock, 0);
        if effect != directory::ReplyEffect::Stale {
            count(Counter::DirectoryUpdates);
        }
    }
    true
}

/// Rewrites the destination IPv4 address, updating the IPv4 and UDP (pseudo-header) checksums.
#[inline(always)]
fn set_destination(ctx: &XdpContext, new_ip: [u8; 4]) -> Result<(), u32> {
    let dst = ptr_at::<[u8; 4]>(ctx, IP_DST_OFF).ok_or(XDP_PASS)?;
    let ip_check = ptr_at::<[u8; 2]>(ctx, IP_OFF + 10).ok_or(XDP_PASS)?;
    let udp_check = ptr_at::<[u8; 2]>(ctx, UDP_CHECK_OFF).ok_or(XDP_PASS)?;
    // SAFETY: all three pointers were bounds-checked by `ptr_at`.
    unsafe {
        let old = u32::from_be_bytes(*dst);
        let new = u32::from_be_bytes(new_ip);
        if old == new {
            return Ok(());
        }
        let ip_sum = u16::from_be_bytes(*ip_check);
        *ip_check = checksum::replace_u32(ip_sum, old, new).to_be_bytes();
        let udp_sum = u16::from_be_bytes(*udp_check);
        let updated = checksum::replace_u32(udp_sum, old, new);
        *udp_check = checksum::udp_fixup(udp_sum, updated).to_be_bytes();
        *dst = new_ip;
    }
    Ok(())
}

/// Sets header flags (and, for a steered write, the replica bitmap), updating the UDP checksum.
#[inline(always)]
fn set_flags(
    ctx: &XdpContext,
    header: &[u8; wire::HEADER_LEN],
    flags: u8,
    replicas: Option<u32>,
) -> Result<(), u32> {
    // server id and flags share one 16-bit checksum word.
    let word = [header[offset::SERVER_ID], header[offset::FLAGS] | flags];
    if !write_payload(ctx, offset::SERVER_ID, word) {
        return Err(XDP_PASS);
    }
    if let Some(bitmap) = replicas
        && !write_payload(ctx, offset::REPLICA_BITMAP, bitmap.to_be_bytes())
    {
        return Err(XDP_PASS);
    }
    Ok(())
}

/// Writes `N` (2, 4 or 8) bytes at an even offset of the Pegasus payload and updates the UDP
/// checksum incrementally. False if the packet is too short.
#[inline(always)]
fn write_payload<const N: usize>(ctx: &XdpContext, at: usize, new: [u8; N]) -> bool {
    let (Some(field), Some(check)) = (
        ptr_at::<[u8; N]>(ctx, PAYLOAD_OFF + at),
        ptr_at::<[u8; 2]>(ctx, UDP_CHECK_OFF),
    ) else {
        return false;
    };
    // SAFETY: both pointers were bounds-checked by `ptr_at`.
    unsafe {
        let old = *field;
        let sum = u16::from_be_bytes(*check);
        let mut updated = sum;
        let mut i = 0;
        while i + 1 < N {
            updated = checksum::replace_u16(
                updated,
                u16::from_be_bytes([old[i], old[i + 1]]),
                u16::from_be_bytes([new[i], new[i + 1]]),
            );
            i += 2;
        }
        *field = new;
        *check = checksum::udp_fixup(sum, updated).to_be_bytes();
    }
    true
}

/// Forwards the packet out of the port the kernel's FIB chooses, or passes it to the kernel
/// unmodified when the FIB cannot say (no neighbour entry yet, TTL expiring, not a switch port,
/// a local destination).
#[inline(always)]
fn forward(ctx: &XdpContext, src_port: u16, dst_port: u16) -> u32 {
    let Some(ip) = read::<[u8; IPV4_HDR_LEN]>(ctx, IP_OFF) else {
        return XDP_PASS;
    };
    let ttl = ip[8];
    if ttl <= 1 {
        return XDP_PASS; // the kernel answers with ICMP time exceeded
    }
    let dst = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    // Generation 0 never matches: slots start empty, and a cache without its generation
    // (not written yet) is never used.
    let generation = FIB_GENERATION.get(0).copied().unwrap_or(0).max(1);
    let Some(slot) = FIB_CACHE.get_ptr_mut(switch::fib_slot(dst)) else {
        return XDP_PASS;
    };
    // SAFETY: a valid per-CPU map value pointer; only this CPU touches it.
    let cached = unsafe { *slot };
    let route = if cached.ipv4 == dst && cached.generation == generation {
        cached
    } else {
        match fib_lookup(ctx, &ip, src_port, dst_port, dst, generation) {
            Some(route) => {
                // SAFETY: as above.
                unsafe { *slot = route };
                route
            }
            None => {
                count(Counter::FibMisses);
                return XDP_PASS;
            }
        }
    };
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
        macs[..6].copy_from_slice(&route.dmac);
        macs[6..].copy_from_slice(&route.smac);
        *eth = macs;
    }
    match PORTS.redirect(route.ifindex, XDP_PASS as u64) {
        Ok(action) | Err(action) => action,
    }
}

/// Asks the kernel's FIB where `ip`'s packet goes. `None` when it cannot say (no route, no
/// neighbour entry yet) or the egress is not a switch port: the kernel then forwards it.
/// Destination-based: the decision is cached per destination address (`FIB_CACHE`), which
/// holds for a ToR's routes (no source or port policy).
#[inline(always)]
fn fib_lookup(
    ctx: &XdpContext,
    ip: &[u8; IPV4_HDR_LEN],
    src_port: u16,
    dst_port: u16,
    dst: u32,
    generation: u32,
) -> Option<FibEntry> {
    count(Counter::FibLookups);
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
        return None;
    }
    Some(FibEntry {
        ipv4: dst,
        generation,
        ifindex: fib.ifindex,
        dmac: fib.dmac,
        smac: fib.smac,
        reserved: [0; 4],
    })
}

/// The fields of the Pegasus header that classification looks at.
#[inline(always)]
fn header_prefix(h: &[u8; wire::HEADER_LEN]) -> HeaderPrefix {
    HeaderPrefix {
        magic: u16::from_be_bytes([h[offset::MAGIC], h[offset::MAGIC + 1]]),
        proto_version: h[offset::PROTO_VERSION],
        op_code: h[offset::OP],
        flags: h[offset::FLAGS],
    }
}

/// `N` bytes of the header starting at `at` (a field).
#[inline(always)]
fn field<const N: usize>(header: &[u8; wire::HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = header[(at + i) % wire::HEADER_LEN];
        i += 1;
    }
    out
}

/// A copy of the `T` at byte `at` of the packet, if all of it lies before `data_end`.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, at: usize) -> Option<T> {
    // SAFETY: bounds-checked by `ptr_at`; packet bytes are plain data.
    ptr_at::<T>(ctx, at).map(|p| unsafe { *p })
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
