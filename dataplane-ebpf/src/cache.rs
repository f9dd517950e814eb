//! The in-switch cache baseline (NetCache-style), the program `pegasus_cache`: the switch of
//! `pegasus_switch` with the directory replaced by a cache of values. For each packet:
//!
//! 1. Parsing, classification, version stamping and forwarding are those of the switch.
//! 2. A GET of a key whose entry serves reads is answered here: the request becomes the reply
//!    (the value appended, addresses and ports swapped, op GET_REPLY, server id
//!    `SWITCH_SERVER_ID`, flag CACHED) and leaves through the port it came in on, redirected
//!    through the `PORTS` DEVMAP as every forwarded packet is: an `XDP_TX` frame on veth waits
//!    for the port's next packet (97 to 331 ms with one request outstanding), a redirect is
//!    flushed at the end of the poll. `XDP_TX` only when the port is not in the DEVMAP.
//! 3. A PUT of a cached key leaves its value in the entry as the pending one on its way home
//!    (`CacheMeta::on_write`).
//! 4. Read and write replies of cached keys keep the entry coherent (`on_read_reply`,
//!    `on_write_reply`).
//!
//! Entries change only under their lock, with `seq` odd meanwhile; a read copies the value
//! without the lock and uses the copy only if `seq` did not move (a seqlock), else it goes
//! home. A reply that cannot take the lock is dropped (its client retries): letting it pass
//! without the entry seeing it could leave a stale value served. A write that cannot take it
//! goes home unrecorded (its reply then invalidates the entry).

use crate::*;
use aya_ebpf::helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_store_bytes};
use pegasus_common::cache::{
    CACHE_VALUE_MAX, CacheEntry, CacheMeta, CacheState, ReplyEffect, SWITCH_SERVER_ID,
};

/// Cached values; its capacity is the directory's, set by the controller at load time.
#[map(name = "CACHE")]
static CACHE: HashMap<u64, CacheEntry> =
    HashMap::with_max_entries(switch::DIRECTORY_CAPACITY_DEFAULT, 0);

/// Per CPU: what a cache hit copies out of the entry and the packet.
#[map(name = "CACHE_SCRATCH")]
static CACHE_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Longest part of a GET a cache hit moves: the headers, the Pegasus header and the key.
const PREFIX_MAX: usize = 512;
const _: () = assert!(KEY_LEN_OFF + 2 + wire::MAX_KEY_LEN <= PREFIX_MAX);

#[repr(C)]
struct Scratch {
    /// The cached value, copied before the seqlock check.
    value: [u8; CACHE_VALUE_MAX],
    /// The GET up to its key's end.
    prefix: [u8; PREFIX_MAX],
}

/// Offset of the body's key length, from the start of the frame.
const KEY_LEN_OFF: usize = PAYLOAD_OFF + wire::HEADER_LEN;

#[xdp]
pub fn pegasus_cache(ctx: XdpContext) -> u32 {
    let Some(tally) = COUNTERS.get_ptr_mut(0).map(Tally) else {
        return XDP_PASS;
    };
    tally.add(Counter::Packets);
    let verdict = process_cached(&ctx, tally);
    tally.add(verdict_counter(verdict));
    verdict
}

#[inline(always)]
fn process_cached(ctx: &XdpContext, tally: Tally) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    let Some((frame, header, class)) = parse(ctx, config) else {
        if let Some(frame) = Headers::at(ctx, 0)
            && touches_store_port(ctx, frame, config.store_port)
        {
            tally.add(Counter::Unparseable);
            return XDP_DROP;
        }
        return XDP_PASS;
    };
    match (class, header) {
        (PacketClass::Request { op, stamp }, Some(header)) => {
            tally.add(Counter::Requests);
            let stamp = match admit_request(frame, header, ingress_role(ctx), op, stamp, tally) {
                Ok(stamp) => stamp,
                Err(verdict) => return verdict,
            };
            if stamp && let Stamp::Drop = stamp_write(frame, header, config.epoch, tally) {
                return XDP_DROP;
            }
            if op == Op::Get || op == Op::Put {
                let keyhash = header.u64(offset::KEYHASH);
                if header.u8(offset::FLAGS) & wire::flags::RETRY == 0 {
                    sample(ctx, config.sample_period, op, keyhash, tally);
                }
                if let Some(entry) = cache_lookup(keyhash) {
                    if op == Op::Put {
                        note_write(ctx, frame, header, entry, tally);
                    } else if let Some(verdict) = answer_from_cache(ctx, frame, entry, tally) {
                        return verdict;
                    }
                }
            }
        }
        (PacketClass::Reply { op }, Some(header)) => {
            tally.add(Counter::Replies);
            if admit_reply(frame, header, ingress_role(ctx), op, tally).is_none() {
                return XDP_DROP;
            }
            if (op == Op::GetReply || op == Op::PutReply)
                && header.u16(offset::STATUS) == wire::Status::Ok as u16
                && header.u64(offset::VERSION) != version::NONE
                && let Some(entry) = cache_lookup(header.u64(offset::KEYHASH))
                && !learn(ctx, frame, header, op, entry, tally)
            {
                tally.add(Counter::LockBusy);
                return XDP_DROP;
            }
        }
        (PacketClass::Malformed, _) => {
            tally.add(Counter::ParseFailures);
            return XDP_DROP;
        }
        _ => return XDP_PASS,
    }
    forward(ctx, frame, tally)
}

/// The cache entry of `keyhash`, if the key is cached (the hot filter first, as for the
/// directory).
#[inline(always)]
fn cache_lookup(keyhash: u64) -> Option<*mut CacheEntry> {
    if !may_be_hot(keyhash) {
        return None;
    }
    CACHE.get_ptr_mut(keyhash)
}

/// The body of the message in the frame, checked against the UDP length: the key's length
/// and the value's offset and length. `None` for a body that disagrees with its lengths.
#[inline(always)]
fn body(ctx: &XdpContext, frame: Headers) -> Option<(usize, usize, usize)> {
    let key_len = Bytes::<2>::at(ctx, KEY_LEN_OFF)?.u16(0) as usize;
    if key_len > wire::MAX_KEY_LEN {
        return None;
    }
    let value_len_off = KEY_LEN_OFF + 2 + key_len;
    let mut value_len = [0u8; 2];
    // SAFETY: the helper bounds-checks the offset against the packet and writes 2 bytes.
    let loaded = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            value_len_off as u32,
            value_len.as_mut_ptr() as *mut _,
            2,
        )
    };
    if loaded != 0 {
        return None;
    }
    let value_len = u16::from_be_bytes(value_len) as usize;
    let udp_len = frame.u16(UDP_OFF + 4) as usize;
    if udp_len != UDP_HDR_LEN + wire::HEADER_LEN + wire::BODY_PREFIX_LEN + key_len + value_len
        || frame.u16(IP_OFF + ipv4::TOT_LEN) as usize != IPV4_HDR_LEN + udp_len
    {
        return None;
    }
    Some((key_len, value_len_off + 2, value_len))
}

/// The message's value: its offset and length, and whether it fits the cache (false for a
/// body that disagrees with its lengths). Plain values, not an `Option`: LLVM spills a `None`'s
/// undefined payload from whatever register, which the verifier rejects as unreadable.
#[inline(always)]
fn value_of(ctx: &XdpContext, frame: Headers) -> (usize, usize, bool) {
    match body(ctx, frame) {
        Some((_, off, len)) => (off, len, len <= CACHE_VALUE_MAX),
        None => (0, 0, false),
    }
}

/// `len` (1..=CACHE_VALUE_MAX) in a form whose range the verifier can follow.
#[inline(always)]
fn bounded_len(len: usize) -> u32 {
    const _: () = assert!(CACHE_VALUE_MAX.is_power_of_two());
    ((len as u32 - 1) & (CACHE_VALUE_MAX as u32 - 1)) + 1
}

/// Answers a GET from the cache: `Some(verdict)` with the packet turned into the reply and
/// sent back out of its port (a DEVMAP redirect to the ingress port), or
/// `None` (packet untouched) when the entry does not serve reads or changed while it was
/// read; the GET then goes home.
#[inline(always)]
fn answer_from_cache(
    ctx: &XdpContext,
    frame: Headers,
    entry: *mut CacheEntry,
    tally: Tally,
) -> Option<u32> {
    let (key_len, value_off, request_value_len) = body(ctx, frame)?;
    if request_value_len != 0 {
        return None; // a GET carries no value: let home say what is wrong with it
    }
    let scratch = CACHE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `entry` is a live map value and `scratch` this CPU's; the entry may change
    // under us, which the seqlock check detects (the copy is then not used).
    let (version, value_len) = unsafe {
        let seq = core::ptr::read_volatile(&raw const (*entry).seq);
        if seq & 1 != 0
            || CacheState::from_u8(core::ptr::read_volatile(&raw const (*entry).state))
                != CacheState::Valid
        {
            return None;
        }
        let version = core::ptr::read_volatile(&raw const (*entry).version);
        let value_len = core::ptr::read_volatile(&raw const (*entry).value_len) as usize;
        copy_value(&raw const (*entry).value, &raw mut (*scratch).value);
        if core::ptr::read_volatile(&raw const (*entry).seq) != seq || value_len > CACHE_VALUE_MAX {
            return None;
        }
        (version, value_len)
    };
    // The reply is the GET with the value after its last field (the value length). It grows
    // at the head: a veth port's XDP buffer always has 256 bytes of headroom, but only the
    // tailroom the sender's allocation happened to leave. So the GET up to its key's end is
    // copied aside, the head moves `value_len` bytes back, and it is written at the new start,
    // followed by the value length and the value. Ethernet padding, if any, is cut first.
    let ip_len = IPV4_HDR_LEN + UDP_HDR_LEN + wire::HEADER_LEN + wire::BODY_PREFIX_LEN + key_len;
    let new_ip_len = ip_len + value_len;
    let prefix_len = value_off - 2;
    // SAFETY (the helper calls below): each bounds-checks against the packet; the buffers
    // are this CPU's scratch (lengths masked into their sizes) and 2 bytes on the stack.
    // A failing adjustment still invalidates every packet pointer to the verifier, so the GET
    // cannot go on home: it is dropped and its client retries (the head never lacks room).
    let prefix = unsafe { &raw mut (*scratch).prefix };
    let prefix_bounded = ((prefix_len as u32 - 1) & (PREFIX_MAX as u32 - 1)) + 1;
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, prefix as *mut _, prefix_bounded) } != 0 {
        return None;
    }
    // In 64 bits: a 32-bit difference of packet pointers is pointer arithmetic the verifier
    // rejects.
    let padding = (ctx.data_end() - ctx.data()).saturating_sub(ETH_HDR_LEN + ip_len);
    if padding > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(padding as i32)) } != 0 {
        return Some(XDP_DROP);
    }
    if value_len > 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, -(value_len as i32)) } != 0 {
        return Some(XDP_DROP);
    }
    let value_len_be = (value_len as u16).to_be_bytes();
    let stored = unsafe {
        bpf_xdp_store_bytes(ctx.ctx, 0, prefix as *mut _, prefix_bounded) == 0
            && bpf_xdp_store_bytes(
                ctx.ctx,
                prefix_len as u32,
                value_len_be.as_ptr() as *mut _,
                2,
            ) == 0
            && (value_len == 0
                || bpf_xdp_store_bytes(
                    ctx.ctx,
                    (prefix_len + 2) as u32,
                    &raw mut (*scratch).value as *mut _,
                    bounded_len(value_len),
                ) == 0)
    };
    // From here on the packet is the reply: a failure drops it (the client retries).
    if !stored {
        return Some(XDP_DROP);
    }
    let (Some(frame), Some(header)) = (Headers::at(ctx, 0), Header::at(ctx, PAYLOAD_OFF)) else {
        return Some(XDP_DROP);
    };
    header.set_u8(offset::OP, Op::GetReply as u8);
    header.set_u64(offset::VERSION, version);
    header.set_u8(offset::SERVER_ID, SWITCH_SERVER_ID);
    let flags = header.u8(offset::FLAGS);
    header.set_u8(offset::FLAGS, flags | wire::flags::CACHED);
    header.set_u16(offset::LOAD, 0);
    header.set_u16(offset::STATUS, wire::Status::Ok as u16);
    // IPv4: the new length (incremental checksum update); swapping the addresses keeps the
    // sum. UDP: the new length, and no checksum (optional over IPv4) rather than a full sum.
    let old_ip_len = frame.u16(IP_OFF + ipv4::TOT_LEN);
    frame.set_u16(IP_OFF + ipv4::TOT_LEN, new_ip_len as u16);
    let ip_sum = frame.u16(IP_OFF + ipv4::CHECK);
    frame.set_u16(
        IP_OFF + ipv4::CHECK,
        checksum::replace_u16(ip_sum, old_ip_len, new_ip_len as u16),
    );
    frame.set_u16(UDP_OFF + 4, (new_ip_len - IPV4_HDR_LEN) as u16);
    frame.set_u16(UDP_OFF + UDP_CHECK, 0);
    swap_endpoints(frame);
    // SAFETY: a field of a live map value; a lost increment only blurs a statistic.
    unsafe {
        let hits = &raw mut (*entry).hits;
        core::ptr::write_volatile(hits, core::ptr::read_volatile(hits) + 1);
    }
    tally.add(Counter::CacheHits);
    // Back out of the port it came in on, by the redirect every forwarded packet takes (its
    // frames are flushed at once); XDP_TX, the fallback, waits on veth for the next packet.
    let ingress = ctx.ingress_ifindex() as u32;
    Some(PORTS.redirect(ingress, XDP_TX as u64).unwrap_or(XDP_TX))
}

/// Swaps the MAC addresses, IPv4 addresses and UDP ports of a frame: the reply to a request.
#[inline(always)]
fn swap_endpoints(frame: Headers) {
    let (dst_mac, src_mac) = (frame.u48(0), frame.u48(6));
    frame.set_u48(0, src_mac);
    frame.set_u48(6, dst_mac);
    let (src_ip, dst_ip) = (frame.u32(IP_OFF + ipv4::SRC), frame.u32(IP_OFF + ipv4::DST));
    frame.set_u32(IP_OFF + ipv4::SRC, dst_ip);
    frame.set_u32(IP_OFF + ipv4::DST, src_ip);
    let (src_port, dst_port) = (frame.u16(UDP_OFF), frame.u16(UDP_OFF + 2));
    frame.set_u16(UDP_OFF, dst_port);
    frame.set_u16(UDP_OFF + 2, src_port);
}

/// A PUT of a cached key on its way home: the entry keeps its value as the pending one (and
/// goes on answering reads: the write has not completed). When the lock stays busy the PUT
/// goes home unrecorded: its reply then invalidates the entry instead of updating it.
#[inline(always)]
fn note_write(
    ctx: &XdpContext,
    frame: Headers,
    header: Header,
    entry: *mut CacheEntry,
    tally: Tally,
) {
    let version = header.u64(offset::VERSION);
    let (off, len, fits) = value_of(ctx, frame);
    let recorded = update(entry, |entry, meta| {
        if meta.on_write(version, fits) {
            // SAFETY: `entry` is a live map value, held under its lock by `update`.
            unsafe {
                (*entry).pending_len = len as u16;
                if len > 0 && !load_into(ctx, off, len, &raw mut (*entry).pending) {
                    meta.pending_fits = false;
                }
            }
        }
    });
    if !recorded {
        tally.add(Counter::LockBusy);
    }
}

/// A read or write reply of a cached key: the entry follows it. False when the entry's lock
/// stayed busy (the reply must then be dropped).
#[inline(always)]
fn learn(
    ctx: &XdpContext,
    frame: Headers,
    header: Header,
    op: Op,
    entry: *mut CacheEntry,
    tally: Tally,
) -> bool {
    let version = header.u64(offset::VERSION);
    if op == Op::PutReply {
        return update(entry, |entry, meta| match meta.on_write_reply(version) {
            // SAFETY: `entry` is a live map value, held under its lock by `update`.
            ReplyEffect::Validate => unsafe {
                copy_value(&raw const (*entry).pending, &raw mut (*entry).value);
                (*entry).value_len = (*entry).pending_len;
                tally.add(Counter::CacheFills);
            },
            ReplyEffect::Invalidate => tally.add(Counter::CacheInvalidations),
            ReplyEffect::Ignore | ReplyEffect::Fill => {}
        });
    }
    let (off, len, fits) = value_of(ctx, frame);
    let from_controller = header.u16(offset::CLIENT_ID) == wire::CONTROLLER_CLIENT_ID;
    update(entry, |entry, meta| {
        match meta.on_read_reply(version, fits, from_controller) {
            ReplyEffect::Fill => {
                // SAFETY: `entry` is a live map value, held under its lock by `update`.
                unsafe {
                    (*entry).value_len = len as u16;
                    if len > 0 && !load_into(ctx, off, len, &raw mut (*entry).value) {
                        meta.state = CacheState::Invalid;
                    }
                }
                tally.add(Counter::CacheFills);
            }
            ReplyEffect::Invalidate => tally.add(Counter::CacheInvalidations),
            ReplyEffect::Ignore | ReplyEffect::Validate => {}
        }
    })
}

/// Copies a value buffer as 64-bit words (an array assignment would become a call of a
/// byte-at-a-time `memcpy`).
///
/// # Safety
/// Both point into live map values, 8-byte aligned (`CacheEntry`'s value buffers are).
#[inline(always)]
unsafe fn copy_value(from: *const [u8; CACHE_VALUE_MAX], to: *mut [u8; CACHE_VALUE_MAX]) {
    const WORDS: usize = CACHE_VALUE_MAX / 8;
    let (from, to) = (from as *const u64, to as *mut u64);
    for i in 0..WORDS {
        // SAFETY: within both buffers (the caller's promise), aligned.
        unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
    }
}

/// Copies `len` (1..=CACHE_VALUE_MAX) bytes of the packet at `off` into `to`.
#[inline(always)]
fn load_into(ctx: &XdpContext, off: usize, len: usize, to: *mut [u8; CACHE_VALUE_MAX]) -> bool {
    if len == 0 || len > CACHE_VALUE_MAX {
        return false;
    }
    // SAFETY: the helper bounds-checks against the packet and writes at most
    // CACHE_VALUE_MAX bytes into `to`.
    unsafe { bpf_xdp_load_bytes(ctx.ctx, off as u32, to as *mut _, bounded_len(len)) == 0 }
}

/// Runs `change` on the entry and its rules' view under the entry's lock, with `seq` odd
/// meanwhile, and writes the view back. False when the lock stayed busy.
#[inline(always)]
fn update(entry: *mut CacheEntry, change: impl FnOnce(*mut CacheEntry, &mut CacheMeta)) -> bool {
    // SAFETY: `entry` is a live map value for the program's duration; the program changes its
    // fields only here, under `lock`.
    unsafe {
        let lock = SpinLock(&raw mut (*entry).lock);
        if !lock.acquire() {
            return false;
        }
        let seq = &raw mut (*entry).seq;
        core::ptr::write_volatile(seq, core::ptr::read_volatile(seq) + 1);
        let mut meta = (*entry).meta();
        change(entry, &mut meta);
        (*entry).set_meta(meta);
        core::ptr::write_volatile(seq, core::ptr::read_volatile(seq) + 1);
        lock.release();
    }
    true
}
