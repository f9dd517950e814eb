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
//!    any server, plus copies, for a write) and it carries the HOT flag; whether a key is in
//!    the directory is asked of the hot filter first (an array), of the directory (a hash map)
//!    only when the filter says maybe. A retried write goes where its first attempt went. One
//!    first attempt in `sample_period` is copied, with its key, to the controller's ring
//!    buffer.
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
        bpf_fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_xdp_load_bytes,
    },
    macros::{map, xdp},
    maps::{Array, DevMapHash, HashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd, atomic_xchg};
use pegasus_common::{
    checksum,
    directory::{self, EntryView, Policy, RecentMix, ReplyAdmission},
    switch::{
        self, Counter, CounterBlock, DirEntry, FibEntry, HeaderPrefix, PacketClass, RetryDecision,
        RetrySlot, Sample, ServerTable, SwitchConfig,
    },
    version,
    wire::{self, Op, offset},
};

mod cache;

#[map(name = "CONFIG")]
static CONFIG: Array<SwitchConfig> = Array::with_max_entries(1, 0);

#[map(name = "VERSION_COUNTER")]
static VERSION_COUNTER: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<CounterBlock> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "PORTS")]
static PORTS: DevMapHash = DevMapHash::with_max_entries(switch::MAX_PORTS, 0);

/// The coherence directory; its capacity is set by the controller at load time.
#[map(name = "DIRECTORY")]
static DIRECTORY: HashMap<u64, DirEntry> =
    HashMap::with_max_entries(switch::DIRECTORY_CAPACITY_DEFAULT, 0);

/// Sampled requests for the controller's hot-key detection.
#[map(name = "SAMPLES")]
static SAMPLES: RingBuf = RingBuf::with_byte_size(switch::SAMPLES_RING_BYTES, 0);

/// Per CPU: requests left until the next sample.
#[map(name = "SAMPLER")]
static SAMPLER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "HOT_FILTER")]
static HOT_FILTER: Array<u8> = Array::with_max_entries(switch::HOT_FILTER_SLOTS, 0);

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
const UDP_OFF: usize = IP_OFF + IPV4_HDR_LEN;
const PAYLOAD_OFF: usize = UDP_OFF + UDP_HDR_LEN;
/// Offsets within the IPv4 header.
mod ipv4 {
    pub const TOS: usize = 1;
    pub const TOT_LEN: usize = 2;
    pub const FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECK: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}
/// Offset of the checksum within the UDP header.
const UDP_CHECK: usize = 6;
/// Attempts to take an entry's lock before giving up on a reply (which is then dropped, and
/// retried by its client): bounded, as the verifier and TigerBeetle both want.
const LOCK_ATTEMPTS_MAX: u32 = 64;

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

/// The yardstick of `pegasus switch cost`, not a part of the switch: the least an XDP
/// program that answers UDP must do. Parses Ethernet, IPv4 (no options) and UDP, swaps the
/// MAC addresses, IPv4 addresses and UDP ports (no checksum changes: a swap keeps both sums)
/// and sends the frame back out of its port. Everything else is passed.
#[xdp]
pub fn baseline_reflect(ctx: XdpContext) -> u32 {
    reflect(&ctx)
}

#[inline(always)]
fn reflect(ctx: &XdpContext) -> u32 {
    let Some(frame) = Bytes::<{ PAYLOAD_OFF }>::at(ctx, 0) else {
        return XDP_PASS;
    };
    if frame.u16(12) != ETH_P_IPV4
        || frame.u8(IP_OFF) != 0x45
        || frame.u8(IP_OFF + ipv4::PROTOCOL) != IPPROTO_UDP
    {
        return XDP_PASS;
    }
    let (dst_mac, src_mac) = (frame.u48(0), frame.u48(6));
    frame.set_u48(0, src_mac);
    frame.set_u48(6, dst_mac);
    let (src_ip, dst_ip) = (frame.u32(IP_OFF + ipv4::SRC), frame.u32(IP_OFF + ipv4::DST));
    frame.set_u32(IP_OFF + ipv4::SRC, dst_ip);
    frame.set_u32(IP_OFF + ipv4::DST, src_ip);
    let (src_port, dst_port) = (frame.u16(UDP_OFF), frame.u16(UDP_OFF + 2));
    frame.set_u16(UDP_OFF, dst_port);
    frame.set_u16(UDP_OFF + 2, src_port);
    XDP_TX
}

/// The port `baseline_forward` sends to (set by the benchmark).
#[map(name = "BASELINE_PORT")]
static BASELINE_PORT: Array<u32> = Array::with_max_entries(1, 0);

/// The second yardstick of `pegasus switch cost`: `baseline_reflect`, but the frame leaves
/// through the `PORTS` DEVMAP like every packet the switch forwards.
#[xdp]
pub fn baseline_forward(ctx: XdpContext) -> u32 {
    if reflect(&ctx) != XDP_TX {
        return XDP_PASS;
    }
    let port = BASELINE_PORT.get(0).copied().unwrap_or(0);
    match PORTS.redirect(port, XDP_PASS as u64) {
        Ok(action) | Err(action) => action,
    }
}

/// The Ethernet, IPv4 and UDP headers of a frame.
type Headers = Bytes<{ PAYLOAD_OFF }>;
/// The Pegasus header.
type Header = Bytes<{ wire::HEADER_LEN }>;

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
        (PacketClass::Request { op, stamp }, Some(header)) => {
            tally.add(Counter::Requests);
            if stamp {
                if !stamp_version(frame, header, config.epoch) {
                    tally.add(Counter::VersionExhausted);
                    return XDP_DROP;
                }
                tally.add(Counter::WritesStamped);
            }
            if let Err(verdict) = route_request(ctx, frame, header, config, op, tally) {
                return verdict;
            }
        }
        (PacketClass::Reply { op }, Some(header)) => {
            tally.add(Counter::Replies);
            if let Err(verdict) = learn_from_reply(op, header, tally) {
                return verdict;
            }
        }
        (PacketClass::Malformed, _) => {
            tally.add(Counter::ParseFailures);
            return XDP_PASS;
        }
        // Not ours (classification says Malformed whenever the header is missing).
        _ => return XDP_PASS,
    }
    forward(ctx, frame, tally)
}

/// Ethernet / IPv4 (no options, not a fragment) / UDP, classified; `None` when the packet is
/// none of the switch's business (`process` does the same in place).
#[inline(always)]
fn parse(
    ctx: &XdpContext,
    config: &SwitchConfig,
) -> Option<(Headers, Option<Header>, PacketClass)> {
    let frame = Headers::at(ctx, 0)?;
    if frame.u16(12) != ETH_P_IPV4
        || frame.u8(IP_OFF) != 0x45
        || frame.u16(IP_OFF + ipv4::FRAG) & 0x3fff != 0
        || frame.u8(IP_OFF + ipv4::PROTOCOL) != IPPROTO_UDP
    {
        return None;
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
    Some((frame, header, class))
}

/// The counter of a verdict.
#[inline(always)]
fn verdict_counter(verdict: u32) -> Counter {
    match verdict {
        XDP_REDIRECT => Counter::VerdictRedirect,
        XDP_DROP => Counter::VerdictDrop,
        XDP_TX => Counter::VerdictTx,
        _ => Counter::VerdictPass,
    }
}

/// Stamps the next version on the PUT and fixes its UDP checksum. False when the epoch's
/// counter is exhausted (the write must not go out unstamped).
#[inline(always)]
fn stamp_version(frame: Headers, header: Header, epoch: u16) -> bool {
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
    let old_version = header.u64(offset::VERSION);
    header.set_u64(offset::VERSION, new_version);
    fix_udp_checksum(frame, |sum| {
        checksum::replace_u64(sum, old_version, new_version)
    });
    true
}

/// Steers a GET or PUT by the directory, and pins a retried write to its first destination.
/// `Err(verdict)` ends the packet's processing.
#[inline(always)]
fn route_request(
    ctx: &XdpContext,
    frame: Headers,
    header: Header,
    config: &SwitchConfig,
    op: Op,
    tally: Tally,
) -> Result<(), u32> {
    if op != Op::Get && op != Op::Put {
        return Ok(()); // server-to-server and controller messages go where they are addressed
    }
    let flags = header.u8(offset::FLAGS);
    // The directory's answer is pinned by the first attempt of a write: a retry must reach
    // the server whose deduplication table knows it (docs/directory.md, "retries").
    if op == Op::Put && flags & wire::flags::RETRY != 0 {
        return route_retry(frame, header, tally);
    }
    let keyhash = header.u64(offset::KEYHASH);
    sample(ctx, config.sample_period, op, keyhash, tally);
    let Some(entry) = directory_lookup(keyhash) else {
        return Ok(()); // a cold key goes home: the common case, kept short
    };
    let Some(servers) = SERVERS.get(0) else {
        return Ok(());
    };
    let view = entry_view(entry, keyhash);
    let policy = Policy::from_u8(config.policy).unwrap_or(Policy::LeastLoaded);
    let random = if policy.needs_random() {
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        unsafe { bpf_get_prandom_u32() }
    } else {
        0
    };

    if op == Op::Put {
        let sequence = // SAFETY: `entry` points to a live map value.
        bump(unsafe { &raw mut (*entry).writes });
        let mix = count_mix(entry, false);
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
            mix.copies_pay(),
        ) else {
            return Ok(());
        };
        let target = servers.slots[(write.primary & 31) as usize];
        if target.valid == 0 {
            return Ok(());
        }
        tally.add(Counter::HotWrites);
        let target_ip = u32::from_be_bytes(target.ipv4);
        steer(frame, header, flags, Some(write.replicas), target_ip);
        // Only steered first attempts are remembered: a retry with no route goes where it is
        // addressed (home), where its first attempt went too.
        let route = retry_route_of(header);
        let slot = RETRY_ROUTES.get_ptr_mut(route.slot).ok_or(XDP_PASS)?;
        // SAFETY: a valid, aligned map value; one 64-bit store per field, the time first (see
        // `RetrySlot`). bpf_ktime_get_coarse_ns has no preconditions.
        unsafe {
            core::ptr::write_volatile(&raw mut (*slot).written_ns, bpf_ktime_get_coarse_ns());
            core::ptr::write_volatile(&raw mut (*slot).word, route.word(target.ipv4));
        }
        return Ok(());
    }

    // A read of a hot key goes to a member of its replica set.
    let sequence = // SAFETY: `entry` points to a live map value.
        bump(unsafe { &raw mut (*entry).reads });
    count_mix(entry, true);
    let target = directory::route_hot_read(view, policy, servers, random, sequence as u32);
    let slot = servers.slots[(target & 31) as usize];
    if slot.valid == 0 {
        return Ok(());
    }
    tally.add(Counter::HotReads);
    steer(frame, header, flags, None, u32::from_be_bytes(slot.ipv4));
    Ok(())
}

/// Every `period`-th first attempt of a GET or PUT on this CPU goes to the controller: its key
/// hash and key, into the `SAMPLES` ring buffer.
#[inline(always)]
fn sample(ctx: &XdpContext, period: u16, op: Op, keyhash: u64, tally: Tally) {
    if period == 0 {
        return;
    }
    let Some(countdown) = SAMPLER.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU map value: only this CPU touches it.
    unsafe {
        if *countdown > 1 {
            *countdown -= 1;
            return;
        }
        *countdown = period as u32;
    }
    const KEY_LEN_OFF: usize = PAYLOAD_OFF + wire::HEADER_LEN;
    let Some(key_len) = Bytes::<2>::at(ctx, KEY_LEN_OFF).map(|b| b.u16(0) as usize) else {
        return;
    };
    if key_len == 0 || key_len > wire::MAX_KEY_LEN {
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<Sample>(0) else {
        tally.add(Counter::SamplesLost);
        return;
    };
    // The same length, in a form whose range the verifier can see (1..=256: LLVM folds the
    // two checks above into one unsigned comparison, which it cannot follow).
    const _: () = assert!(wire::MAX_KEY_LEN == 256);
    let copy_len = ((key_len as u32 - 1) & 0xff) + 1;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` is the reserved ring buffer record, sized for a Sample; the key copy
    // is bounded by its `key` array (1..=MAX_KEY_LEN bytes, checked above).
    let copied = unsafe {
        (*record).keyhash = keyhash;
        (*record).key_len = key_len as u16;
        (*record).op = op as u8;
        (*record).reserved = [0; 5];
        bpf_xdp_load_bytes(
            ctx.ctx,
            (KEY_LEN_OFF + 2) as u32,
            (*record).key.as_mut_ptr() as *mut _,
            copy_len,
        )
    };
    if copied == 0 {
        // No wakeup: the controller reads the ring every epoch instead of waiting on it, and
        // a wakeup per sample would cost more than the sample itself.
        entry.submit(BPF_RB_NO_WAKEUP as u64);
        tally.add(Counter::Samples);
    } else {
        entry.discard(0); // a datagram shorter than its key length says
    }
}

/// Adds one to an entry's read or write counter and returns the count before. Not atomic, on
/// purpose: a locked add on every hot request would make each CPU take the entry's cache line
/// exclusively (and cost ~10 ns). Two CPUs racing may lose an increment; the counters are
/// statistics for the controller, and the sequence for round robin only needs to advance.
#[inline(always)]
fn bump(counter: *mut u64) -> u64 {
    // SAFETY: `counter` is a field of a live map value; a racing plain store is benign here.
    unsafe {
        let before = core::ptr::read_volatile(counter);
        core::ptr::write_volatile(counter, before + 1);
        before
    }
}

/// Counts a read or write in the entry's recent mix and returns the new mix.
#[inline(always)]
fn count_mix(entry: *mut DirEntry, is_read: bool) -> RecentMix {
    // SAFETY: fields of a live map value; racing plain stores only blur the estimate (see
    // `RecentMix`).
    unsafe {
        let mix = RecentMix {
            reads: core::ptr::read_volatile(&raw const (*entry).mix_reads),
            writes: core::ptr::read_volatile(&raw const (*entry).mix_writes),
        }
        .count(is_read);
        core::ptr::write_volatile(&raw mut (*entry).mix_reads, mix.reads);
        core::ptr::write_volatile(&raw mut (*entry).mix_writes, mix.writes);
        mix
    }
}

/// The directory entry of `keyhash`, if it has one. The hot filter answers for nearly every
/// cold key with an array lookup; only keys whose filter slot is taken pay the hash lookup.
#[inline(always)]
fn directory_lookup(keyhash: u64) -> Option<*mut DirEntry> {
    if !may_be_hot(keyhash) {
        return None;
    }
    DIRECTORY.get_ptr_mut(keyhash)
}

/// False when the hot filter says the key is surely cold (no hot key in its slot).
#[inline(always)]
fn may_be_hot(keyhash: u64) -> bool {
    HOT_FILTER
        .get(switch::hot_filter_slot(keyhash))
        .is_some_and(|&count| count != 0)
}

/// A retried write: pinned where its first attempt went, home, or dropped, by the retry rule
/// ([`switch::RetryRoute::decide`]).
#[inline(always)]
fn route_retry(frame: Headers, header: Header, tally: Tally) -> Result<(), u32> {
    let route = retry_route_of(header);
    let slot = RETRY_ROUTES.get_ptr(route.slot).ok_or(XDP_PASS)?;
    // SAFETY: a valid, aligned map value; one 64-bit load per field.
    let seen = unsafe {
        RetrySlot {
            word: core::ptr::read_volatile(&raw const (*slot).word),
            written_ns: core::ptr::read_volatile(&raw const (*slot).written_ns),
        }
    };
    // The clock the route was stamped with (coarse: a tick's precision, for a 2 s window).
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    match route.decide(seen, now) {
        RetryDecision::Pinned(destination) => {
            tally.add(Counter::RetriesPinned);
            let flags = header.u8(offset::FLAGS);
            steer(frame, header, flags, None, u32::from_be_bytes(destination));
            Ok(())
        }
        RetryDecision::Home => Ok(()),
        RetryDecision::Drop => {
            tally.add(Counter::RetriesDropped);
            Err(XDP_DROP)
        }
    }
}

/// The retry route slot and tag of the request in `header`.
#[inline(always)]
fn retry_route_of(header: Header) -> switch::RetryRoute {
    switch::retry_route(
        header.u16(offset::CLIENT_ID),
        header.u32(offset::REQUEST_ID),
    )
}

/// Applies what a reply says to the directory and the server's load. `Err(verdict)` ends the
/// packet's processing (a dropped reply, or a replicate ack, whose only reader is the switch).
#[inline(always)]
fn learn_from_reply(op: Op, header: Header, tally: Tally) -> Result<(), u32> {
    let sender = header.u8(offset::SERVER_ID);
    if let Some(servers) = SERVERS.get_ptr_mut(0) {
        let load = header.u16(offset::LOAD);
        // SAFETY: a valid map value; a racing store of another load is as good as this one.
        // Stored only when it changed: every CPU reads this line for every hot request, and
        // a store on every reply would take it from all of them.
        unsafe {
            let slot = &raw mut (*servers).slots[(sender & 31) as usize].load;
            if core::ptr::read_volatile(slot) != load {
                core::ptr::write_volatile(slot, load);
            }
        }
    }
    let version = header.u64(offset::VERSION);
    let status = header.u16(offset::STATUS);
    if op.reports_version() && status == 0 && version != version::NONE {
        let keyhash = header.u64(offset::KEYHASH);
        let steered = header.u8(offset::FLAGS) & wire::flags::HOT != 0;
        let entry = directory_lookup(keyhash);
        let view = entry.map(|e| entry_view(e, keyhash));
        match directory::admit_reply(view, sender, steered) {
            ReplyAdmission::Update => {
                if let Some(entry) = entry
                    && !update_entry(entry, version, sender, tally)
                {
                    tally.add(Counter::LockBusy);
                    return Err(XDP_DROP);
                }
            }
            ReplyAdmission::Forward => {}
            ReplyAdmission::Drop => {
                tally.add(Counter::RepliesDropped);
                return Err(XDP_DROP);
            }
        }
    }
    if op == Op::ReplicateAck {
        tally.add(Counter::ReplicateAcks);
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
fn update_entry(entry: *mut DirEntry, version: u64, sender: u8, tally: Tally) -> bool {
    // SAFETY: `entry` is a live map value for the program's duration; every access to
    // `ver_completed`, `rset` and `seq` by the program happens under `lock`.
    unsafe {
        let lock = SpinLock(&raw mut (*entry).lock);
        if !lock.acquire() {
            return false;
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
        lock.release();
        if effect != directory::ReplyEffect::Stale {
            tally.add(Counter::DirectoryUpdates);
        }
    }
    true
}

/// A map value's lock word: 0 free, 1 held, taken by compare-and-swap with bounded attempts
/// ([`LOCK_ATTEMPTS_MAX`]); not `bpf_spin_lock`, under which no helper may be called.
#[derive(Clone, Copy)]
struct SpinLock(*mut u32);

impl SpinLock {
    /// Takes the lock; false when it stayed busy.
    #[inline(always)]
    fn acquire(self) -> bool {
        let mut attempt = 0;
        loop {
            // SAFETY: a lock word inside a live map value.
            let (_, taken) = unsafe {
                atomic_cxchg::<u32, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                    self.0, 0, 1,
                )
            };
            if taken {
                return true;
            }
            attempt += 1;
            if attempt >= LOCK_ATTEMPTS_MAX {
                return false;
            }
        }
    }

    #[inline(always)]
    fn release(self) {
        // SAFETY: as in `acquire`.
        unsafe { atomic_xchg::<u32, { AtomicOrdering::SeqCst }>(self.0, 0) };
    }
}

/// Steers a request to `new_ip` (a server's address): sets the HOT flag (and, for a write,
/// the replica bitmap) and rewrites the destination address, with the IPv4 checksum and one
/// incremental update of the UDP checksum for all three fields.
#[inline(always)]
fn steer(frame: Headers, header: Header, flags: u8, replicas: Option<u32>, new_ip: u32) {
    // The server id and flags share one 16-bit checksum word.
    let old_word = header.u16(offset::SERVER_ID);
    let new_word = old_word | (flags | wire::flags::HOT) as u16;
    header.set_u16(offset::SERVER_ID, new_word);
    let mut udp_sum = frame.u16(UDP_OFF + UDP_CHECK);
    let original_udp_sum = udp_sum;
    udp_sum = checksum::replace_u16(udp_sum, old_word, new_word);
    if let Some(bitmap) = replicas {
        let old_bitmap = header.u32(offset::REPLICA_BITMAP);
        header.set_u32(offset::REPLICA_BITMAP, bitmap);
        udp_sum = checksum::replace_u32(udp_sum, old_bitmap, bitmap);
    }
    let old_ip = frame.u32(IP_OFF + ipv4::DST);
    if old_ip != new_ip {
        frame.set_u32(IP_OFF + ipv4::DST, new_ip);
        let ip_sum = frame.u16(IP_OFF + ipv4::CHECK);
        frame.set_u16(
            IP_OFF + ipv4::CHECK,
            checksum::replace_u32(ip_sum, old_ip, new_ip),
        );
        udp_sum = checksum::replace_u32(udp_sum, old_ip, new_ip);
    }
    frame.set_u16(
        UDP_OFF + UDP_CHECK,
        checksum::udp_fixup(original_udp_sum, udp_sum),
    );
}

/// Applies `update` to the UDP checksum (an incremental update of the one's complement sum),
/// keeping "no checksum" (0) as it is.
#[inline(always)]
fn fix_udp_checksum(frame: Headers, update: impl FnOnce(u16) -> u16) {
    let sum = frame.u16(UDP_OFF + UDP_CHECK);
    frame.set_u16(UDP_OFF + UDP_CHECK, checksum::udp_fixup(sum, update(sum)));
}

/// Forwards the packet out of the port the kernel's FIB chooses, or passes it to the kernel
/// unmodified when the FIB cannot say (no neighbour entry yet, TTL expiring, not a switch port,
/// a local destination).
#[inline(always)]
fn forward(ctx: &XdpContext, frame: Headers, tally: Tally) -> u32 {
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
fn fib_lookup(ctx: &XdpContext, frame: Headers, dst: u32, generation: u32) -> Option<FibEntry> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid value of this plain C struct.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_UDP;
    fib.sport = frame.u16(UDP_OFF).to_be();
    fib.dport = frame.u16(UDP_OFF + 2).to_be();
    fib.__bindgen_anon_1.tot_len = frame.u16(IP_OFF + ipv4::TOT_LEN);
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

/// The fields of the Pegasus header that classification looks at.
#[inline(always)]
fn header_prefix(h: Header) -> HeaderPrefix {
    HeaderPrefix {
        magic: h.u16(offset::MAGIC),
        proto_version: h.u8(offset::PROTO_VERSION),
        op_code: h.u8(offset::OP),
        flags: h.u8(offset::FLAGS),
    }
}

/// `LEN` bytes of the packet, bounds-checked once against `data_end` (as the verifier
/// insists): every access after that is a single load or store at a constant offset. Fields
/// are big-endian and may be unaligned (the eBPF build allows misaligned access, which the
/// kernel permits for packet data on the architectures that handle it).
#[derive(Clone, Copy)]
struct Bytes<const LEN: usize>(*mut u8);

impl<const LEN: usize> Bytes<LEN> {
    /// The `LEN` bytes at byte `at` of the packet, if all of them lie before `data_end`.
    #[inline(always)]
    fn at(ctx: &XdpContext, at: usize) -> Option<Self> {
        let start = ctx.data();
        if start + at + LEN > ctx.data_end() {
            return None;
        }
        Some(Bytes((start + at) as *mut u8))
    }

    #[inline(always)]
    fn load<T: Copy>(self, at: usize) -> T {
        assert!(at + core::mem::size_of::<T>() <= LEN);
        // SAFETY: within the LEN bounds-checked bytes (asserted; the offsets are constants).
        unsafe { core::ptr::read_unaligned(self.0.add(at) as *const T) }
    }

    #[inline(always)]
    fn store<T: Copy>(self, at: usize, value: T) {
        assert!(at + core::mem::size_of::<T>() <= LEN);
        // SAFETY: as in `load`.
        unsafe { core::ptr::write_unaligned(self.0.add(at) as *mut T, value) }
    }

    #[inline(always)]
    fn u8(self, at: usize) -> u8 {
        self.load(at)
    }
    #[inline(always)]
    fn u16(self, at: usize) -> u16 {
        u16::from_be(self.load(at))
    }
    #[inline(always)]
    fn u32(self, at: usize) -> u32 {
        u32::from_be(self.load(at))
    }
    #[inline(always)]
    fn u64(self, at: usize) -> u64 {
        u64::from_be(self.load(at))
    }
    /// A MAC address, as the low 48 bits (big-endian).
    #[inline(always)]
    fn u48(self, at: usize) -> u64 {
        (self.u16(at) as u64) << 32 | self.u32(at + 2) as u64
    }
    #[inline(always)]
    fn set_u8(self, at: usize, value: u8) {
        self.store(at, value)
    }
    #[inline(always)]
    fn set_u16(self, at: usize, value: u16) {
        self.store(at, value.to_be())
    }
    #[inline(always)]
    fn set_u32(self, at: usize, value: u32) {
        self.store(at, value.to_be())
    }
    #[inline(always)]
    fn set_u64(self, at: usize, value: u64) {
        self.store(at, value.to_be())
    }
    #[inline(always)]
    fn set_u48(self, at: usize, value: u64) {
        self.set_u16(at, (value >> 32) as u16);
        self.set_u32(at + 2, value as u32);
    }
    #[inline(always)]
    fn set_bytes<const N: usize>(self, at: usize, value: [u8; N]) {
        self.store(at, value)
    }
}

/// This CPU's counters, looked up once per packet.
#[derive(Clone, Copy)]
struct Tally(*mut CounterBlock);

impl Tally {
    #[inline(always)]
    fn add(self, counter: Counter) {
        // SAFETY: a per-CPU map value: no other CPU writes it, and XDP does not preempt
        // itself. The index is in range by construction of `Counter`.
        unsafe { (*self.0).values[counter as usize] += 1 };
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
