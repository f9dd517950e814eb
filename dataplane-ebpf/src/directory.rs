//! The coherence directory: steering hot requests, pinning retried writes, learning from
//! replies under each entry's lock. Every decision is a rule of `pegasus_common::directory`.

use crate::*;

/// Attempts to take an entry's lock before giving up on a reply (which is then dropped, and
/// retried by its client): bounded, as the verifier and TigerBeetle both want.
pub(crate) const LOCK_ATTEMPTS_MAX: u32 = 64;

/// Steers a GET, PUT or incoming CHAIN_PUT (`roles::routed_by_directory`) by the directory,
/// and pins a retried client write to its first destination. `Err(verdict)` ends the packet's
/// processing.
#[inline(always)]
pub(crate) fn route_request(
    ctx: &XdpContext,
    frame: Headers,
    header: Header,
    config: &SwitchConfig,
    op: Op,
    tally: Tally,
) -> Result<(), u32> {
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

    if op != Op::Get {
        let sequence = // SAFETY: `entry` points to a live map value.
        bump(unsafe { &raw mut (*entry).writes });
        let mix = count_mix(entry, false);
        // An installing or evicting key's writes go home (see `writes_go_home`).
        if view.writes_go_home() {
            return Ok(());
        }
        // SAFETY: `entry` points to a live map value; the slot is written once, at insertion.
        let slot = unsafe { (*entry).replica_slot } as u32;
        let target = REPLICA_TARGETS.get(slot).copied().unwrap_or(0);
        let Some(write) = rules::route_hot_write(
            config.all_servers,
            policy,
            servers,
            random,
            sequence as u32,
            rules::replication_in_effect(target, config.replication),
            mix.copies_pay(),
        ) else {
            return Ok(());
        };
        let target = servers.slots[(write.primary & 63) as usize];
        if target.valid == 0 {
            return Ok(());
        }
        tally.add(Counter::HotWrites);
        let target_ip = u32::from_be_bytes(target.ipv4);
        steer(frame, header, flags, Some(write.replicas), None, target_ip);
        if op != Op::Put {
            return Ok(()); // a chain's write needs no pinning: applying it twice is harmless
        }
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
    let target = rules::route_hot_read(view, policy, servers, random, sequence as u32);
    let slot = servers.slots[(target & 63) as usize];
    if slot.valid == 0 {
        return Ok(());
    }
    tally.add(Counter::HotReads);
    // In a chain, the read carries what the rack knows committed: its store answers only
    // with a version no newer (reads served by every rack).
    let committed = (config.mark_committed != 0).then(|| {
        // SAFETY: a live map value; one 64-bit load (a stale value is a smaller bound).
        unsafe { core::ptr::read_volatile(&raw const (*entry).ver_committed) }
    });
    steer(
        frame,
        header,
        flags,
        None,
        committed,
        u32::from_be_bytes(slot.ipv4),
    );
    Ok(())
}

/// Adds one to an entry's read or write counter and returns the count before. Not atomic, on
/// purpose: a locked add on every hot request would make each CPU take the entry's cache line
/// exclusively (and cost ~10 ns). Two CPUs racing may lose an increment; the counters are
/// statistics for the controller, and the sequence for round robin only needs to advance.
#[inline(always)]
pub(crate) fn bump(counter: *mut u64) -> u64 {
    // SAFETY: `counter` is a field of a live map value; a racing plain store is benign here.
    unsafe {
        let before = core::ptr::read_volatile(counter);
        core::ptr::write_volatile(counter, before + 1);
        before
    }
}

/// Counts a read or write in the entry's recent mix and returns the new mix.
#[inline(always)]
pub(crate) fn count_mix(entry: *mut DirEntry, is_read: bool) -> RecentMix {
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

/// The directory entry of `keyhash`, if it has one: the hot filter answers for nearly every
/// key with one array lookup (no hot key in the slot: cold; one: its entry, which must name
/// this key); only keys whose slot several hot keys share ask the index (a hash lookup).
#[inline(always)]
pub(crate) fn directory_lookup(keyhash: u64) -> Option<*mut DirEntry> {
    let word = *HOT_FILTER.get(switch::hot_filter_slot(keyhash))?;
    let index = match switch::read_hot_filter(word) {
        FilterAnswer::Cold => return None,
        FilterAnswer::Entry(index) => index,
        // SAFETY: a live map value for the program's duration; one 32-bit load.
        FilterAnswer::Shared => unsafe { *DIRECTORY_INDEX.get_ptr(keyhash)? },
    };
    let entry = DIRECTORY.get_ptr_mut(index)?;
    // SAFETY: a live map value; one 64-bit load. The controller writes a key into an entry
    // before it points a filter slot there, and reuses an entry only long after no slot
    // points to it.
    (unsafe { core::ptr::read_volatile(&raw const (*entry).keyhash) } == keyhash).then_some(entry)
}

/// False when the hot filter says the key is surely cold (no hot key in its slot).
#[inline(always)]
pub(crate) fn may_be_hot(keyhash: u64) -> bool {
    HOT_FILTER
        .get(switch::hot_filter_slot(keyhash))
        .is_some_and(|&word| switch::read_hot_filter(word) != FilterAnswer::Cold)
}

/// A retried write: pinned where its first attempt went, home, or dropped, by the retry rule
/// ([`switch::RetryRoute::decide`]).
#[inline(always)]
pub(crate) fn route_retry(frame: Headers, header: Header, tally: Tally) -> Result<(), u32> {
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
            steer(
                frame,
                header,
                flags,
                None,
                None,
                u32::from_be_bytes(destination),
            );
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
pub(crate) fn retry_route_of(header: Header) -> switch::RetryRoute {
    switch::retry_route(
        header.u16(offset::CLIENT_ID),
        header.u32(offset::REQUEST_ID),
    )
}

/// The reply rule, then what the message says: for a reply, or a server's outgoing CHAIN_PUT.
#[inline(always)]
pub(crate) fn learn_from_server(
    frame: Headers,
    header: Header,
    role: PortRole,
    op: Op,
    tally: Tally,
) -> Result<(), u32> {
    let servers = admit_reply(frame, header, role, op, tally).ok_or(XDP_DROP)?;
    learn_from_reply(op, header, role, servers, tally)
}

/// Applies what a reply (or a server's outgoing CHAIN_PUT) says to the directory and the
/// server's load. `Err(verdict)` ends the packet's processing (a dropped reply, or a replicate
/// ack, whose only reader is the switch).
#[inline(always)]
pub(crate) fn learn_from_reply(
    op: Op,
    header: Header,
    role: PortRole,
    servers: *mut ServerTable,
    tally: Tally,
) -> Result<(), u32> {
    if !roles::speaks_for_sender(role) {
        // A CHAIN_ACK from the next rack: its sender is not one of ours, but the version it
        // acknowledges is committed.
        if roles::reports_commit(role, op) {
            return learn_commit(header, tally);
        }
        return Ok(());
    }
    let sender = header.u8(offset::SERVER_ID);
    let load = header.u16(offset::LOAD);
    // SAFETY: `servers` is the SERVERS map value (from `admit_reply`); a racing store of
    // another load is as good as this one. Stored only when it changed: every CPU reads this
    // line for every hot request, and a store on every reply would take it from all of them.
    unsafe {
        let slot = &raw mut (*servers).slots[(sender & 63) as usize].load;
        if core::ptr::read_volatile(slot) != load {
            core::ptr::write_volatile(slot, load);
        }
    }
    let version = header.u64(offset::VERSION);
    let status = header.u16(offset::STATUS);
    if roles::reports_version(role, op) && status == 0 && version != version::NONE {
        let keyhash = header.u64(offset::KEYHASH);
        let flags = header.u8(offset::FLAGS);
        let steered = flags & wire::flags::HOT != 0;
        // A store of a chain's rack that knows the version it answers committed says so.
        let committed = rules::reply_commits(op, flags);
        let entry = directory_lookup(keyhash);
        let view = entry.map(|e| entry_view(e, keyhash));
        match rules::admit_report(op, view, sender, steered) {
            ReplyAdmission::Update => {
                if let Some(entry) = entry
                    && !update_entry(entry, version, sender, committed, tally)
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

/// A CHAIN_ACK from the next rack: the key's committed version is at least the one it
/// acknowledges (`directory::learn_commit`), under the entry's lock. A busy lock drops the
/// ack (its sender's retransmission brings another).
#[inline(always)]
pub(crate) fn learn_commit(header: Header, tally: Tally) -> Result<(), u32> {
    let keyhash = header.u64(offset::KEYHASH);
    let Some(entry) = directory_lookup(keyhash) else {
        return Ok(());
    };
    let acked = header.u64(offset::VERSION);
    // SAFETY: `entry` is a live map value for the program's duration; `ver_committed` is
    // written only under `lock`.
    unsafe {
        let lock = SpinLock(&raw mut (*entry).lock);
        if !lock.acquire() {
            tally.add(Counter::LockBusy);
            return Err(XDP_DROP);
        }
        let committed = &raw mut (*entry).ver_committed;
        core::ptr::write_volatile(
            committed,
            rules::learn_commit(core::ptr::read_volatile(committed), acked),
        );
        lock.release();
    }
    Ok(())
}

/// What the routing and admission rules see of an entry, read without its lock. `rset` is
/// read once, as one u32: a read racing with an update sees the set before or after it, both
/// of which hold the newest version that was complete when the request arrived. `installing`
/// only ever goes from 1 to 0.
#[inline(always)]
pub(crate) fn entry_view(entry: *mut DirEntry, keyhash: u64) -> EntryView {
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

/// The reply rule on one entry (and, for a reply that says its version is committed, the
/// commit rule), as one atomic step: a spin lock taken by compare-and-swap on
/// the entry's `lock` word (bounded attempts), and a seqlock counter around the change so that
/// user space can take a consistent copy. False when the lock stayed busy.
#[inline(always)]
pub(crate) fn update_entry(
    entry: *mut DirEntry,
    version: u64,
    sender: u8,
    committed: bool,
    tally: Tally,
) -> bool {
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
        let effect = rules::apply_reply(&mut ver_completed, &mut rset, version, sender);
        if committed {
            let at = &raw mut (*entry).ver_committed;
            core::ptr::write_volatile(at, rules::learn_commit(*at, version));
        }
        core::ptr::write_volatile(&raw mut (*entry).ver_completed, ver_completed);
        core::ptr::write_volatile(&raw mut (*entry).rset, rset);
        let installing = core::ptr::read_volatile(&raw const (*entry).installing) != 0;
        let installing = rules::still_installing(installing, sender, (*entry).home);
        core::ptr::write_volatile(&raw mut (*entry).installing, installing as u8);
        core::ptr::write_volatile(seq, core::ptr::read_volatile(seq) + 1);
        lock.release();
        if effect != rules::ReplyEffect::Stale {
            tally.add(Counter::DirectoryUpdates);
        }
    }
    true
}

/// A map value's lock word: 0 free, 1 held, taken by compare-and-swap with bounded attempts
/// ([`LOCK_ATTEMPTS_MAX`]); not `bpf_spin_lock`, under which no helper may be called.
#[derive(Clone, Copy)]
pub(crate) struct SpinLock(pub(crate) *mut u32);

impl SpinLock {
    /// Takes the lock; false when it stayed busy.
    #[inline(always)]
    pub(crate) fn acquire(self) -> bool {
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
    pub(crate) fn release(self) {
        // SAFETY: as in `acquire`.
        unsafe { atomic_xchg::<u32, { AtomicOrdering::SeqCst }>(self.0, 0) };
    }
}

/// Steers a request to `new_ip` (a server's address): sets the HOT flag (for a write, the
/// replica bitmap; for a read in a chain, the COMMITTED flag and the committed version) and
/// rewrites the destination address, with the IPv4 checksum and one incremental update of
/// the UDP checksum for every field.
#[inline(always)]
pub(crate) fn steer(
    frame: Headers,
    header: Header,
    flags: u8,
    replicas: Option<ServerSet>,
    committed: Option<u64>,
    new_ip: u32,
) {
    // The server id and flags share one 16-bit checksum word.
    let old_word = header.u16(offset::SERVER_ID);
    let marks = match committed {
        Some(_) => wire::flags::HOT | wire::flags::COMMITTED,
        None => wire::flags::HOT,
    };
    let new_word = old_word | (flags | marks) as u16;
    header.set_u16(offset::SERVER_ID, new_word);
    // Every field the UDP checksum covers, summed, then one update of it.
    let mut udp = Replacements::NONE.u16(old_word, new_word);
    if let Some(version) = committed {
        let old_version = header.u64(offset::VERSION);
        header.set_u64(offset::VERSION, version);
        udp = udp.u64(old_version, version);
    }
    if let Some(bitmap) = replicas {
        let old_bitmap = header.u64(offset::REPLICA_BITMAP);
        header.set_u64(offset::REPLICA_BITMAP, bitmap);
        udp = udp.u64(old_bitmap, bitmap);
    }
    let old_ip = frame.u32(IP_OFF + ipv4::DST);
    if old_ip != new_ip {
        frame.set_u32(IP_OFF + ipv4::DST, new_ip);
        let ip_sum = frame.u16(IP_OFF + ipv4::CHECK);
        frame.set_u16(
            IP_OFF + ipv4::CHECK,
            checksum::replace_u32(ip_sum, old_ip, new_ip),
        );
        udp = udp.u32(old_ip, new_ip); // the pseudo-header's destination
    }
    fix_udp_checksum(frame, |sum| udp.apply(sum));
}
