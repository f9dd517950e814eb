//! The switch program's pipeline in plain Rust: the rules of `pegasus_common`, composed as
//! `pegasus_switch` composes them, over a frame's bytes and a model of the program's maps.
//! It is the oracle of the differential test (`control/tests/xdp_differential.rs`): every
//! frame the real program sees through `BPF_PROG_TEST_RUN` goes through this too, and the
//! verdicts, the output bytes, the counters and, at the end, the maps must agree.
//!
//! What this models is the program on one CPU, without its controller: no sampling
//! (`sample_period` 0) and no lock contention. The FIB is the testbed's ([`super::testbed`]):
//! a server's or the client's address goes out of its port, anything else goes to the kernel.
//! The one input the reference cannot know exactly is the kernel's clock, which the retry rule
//! reads: it is given as an interval, and where the rule's answer depends on where in it the
//! kernel's clock was, both answers are [`Expected`] candidates.

use super::testbed::{
    CLIENT_MAC, CLIENT_PORT_MAC, client_ip, server_ip, server_mac, server_port_mac,
};
use crate::switch::action as verdict;
use pegasus_common::{
    checksum,
    directory::{self as rules, Policy, ReplyAdmission, ServerSet},
    once::{self, ClientWindow, StampDecision},
    roles::{self, PortRole, RequestAdmission, SwitchOnlyFields},
    switch::{
        self, Counter, DirEntry, HeaderPrefix, PacketClass, RetryDecision, RetrySlot, ServerTable,
        SwitchConfig,
    },
    version,
    wire::{self, Op, offset},
};
use std::collections::{BTreeMap, HashMap};

const ETH_LEN: usize = 14;
const IP_OFF: usize = ETH_LEN;
const UDP_OFF: usize = IP_OFF + 20;
const PAYLOAD_OFF: usize = UDP_OFF + 8;

/// A clock reading the reference cannot pin down: the kernel read its clock somewhere in
/// `[earliest, latest]` (CLOCK_MONOTONIC_COARSE, nanoseconds).
#[derive(Clone, Copy, Debug)]
pub struct ClockInterval {
    pub earliest: u64,
    pub latest: u64,
}

/// One outcome the program may give for a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub verdict: u32,
    pub bytes: Vec<u8>,
    /// The counters this outcome raises (added by [`Reference::settle`]).
    pub counts: Vec<Counter>,
}

/// A retry route as the reference knows it: the word, and when (within an interval) it was
/// written.
#[derive(Clone, Copy, Debug)]
struct RouteSlot {
    word: u64,
    written: ClockInterval,
}

/// The reference switch: the maps' contents as the program would leave them.
#[derive(Clone, Debug)]
pub struct Reference {
    pub config: SwitchConfig,
    /// Servers of the testbed (ids `0..servers`, as [`super::testbed::Testbed`] makes them).
    servers: u8,
    pub server_table: ServerTable,
    pub version_counter: u64,
    pub windows: HashMap<u16, ClientWindow>,
    pub directory: HashMap<u64, DirEntry>,
    /// Replica targets by key (the program keeps them by the entry's slot).
    pub replica_targets: HashMap<u64, u8>,
    pub evicting: std::collections::HashSet<u64>,
    retry_routes: HashMap<u32, RouteSlot>,
    pub counters: BTreeMap<&'static str, u64>,
}

impl Reference {
    /// A switch of `config` in front of the testbed's `servers` servers, its maps empty.
    pub fn new(config: SwitchConfig, servers: u8) -> Reference {
        let mut server_table = ServerTable::default();
        for i in 0..servers {
            server_table.slots[i as usize].ipv4 = server_ip(i).octets();
            server_table.slots[i as usize].valid = 1;
        }
        Reference {
            config,
            servers,
            server_table,
            version_counter: 0,
            windows: HashMap::new(),
            directory: HashMap::new(),
            replica_targets: HashMap::new(),
            evicting: Default::default(),
            retry_routes: HashMap::new(),
            counters: BTreeMap::new(),
        }
    }

    /// The controller's insert: `home` the only replica, installing.
    pub fn directory_insert(&mut self, keyhash: u64, home: u8) {
        assert!(!self.directory.contains_key(&keyhash), "inserted twice");
        self.directory.insert(keyhash, DirEntry::new(keyhash, home));
        self.replica_targets.insert(keyhash, 0);
    }

    /// The controller's removal, which clears the key's evicting mark too.
    pub fn directory_remove(&mut self, keyhash: u64) {
        self.directory.remove(&keyhash);
        self.replica_targets.remove(&keyhash);
        self.evicting.remove(&keyhash);
    }

    /// Adds the counts of the outcome the program gave (one of [`Self::process`]'s).
    pub fn settle(&mut self, outcome: &Expected) {
        for counter in &outcome.counts {
            *self.counters.entry(counter.name()).or_default() += 1;
        }
    }

    /// What the program does with `frame` arriving with IPv4 source-based ingress (the
    /// testbed's rule, [`super::super::switch::Switch::set_test_ingress`]), its clock within
    /// `now`: one outcome, or two when the retry rule's answer depends on the clock. The
    /// maps change as the program would change them (counters only by [`Self::settle`]).
    pub fn process(&mut self, frame: &[u8], now: ClockInterval) -> Vec<Expected> {
        let mut run = Run {
            bytes: frame.to_vec(),
            counts: vec![Counter::Packets],
        };
        match self.pipeline(&mut run, now) {
            Flow::End(verdict) => vec![run.end(verdict)],
            Flow::Forward => vec![self.forward(run)],
            Flow::DropOrForward => {
                let mut dropped = run.clone();
                dropped.counts.push(Counter::RetriesDropped);
                vec![dropped.end(verdict::DROP), self.forward(run)]
            }
        }
    }

    fn pipeline(&mut self, run: &mut Run, now: ClockInterval) -> Flow {
        if run.bytes.len() < PAYLOAD_OFF {
            return Flow::End(verdict::PASS);
        }
        let f = &run.bytes;
        if u16_at(f, 12) != 0x0800
            || f[IP_OFF] != 0x45
            || u16_at(f, IP_OFF + 6) & 0x3fff != 0
            || f[IP_OFF + 9] != 17
        {
            if touches_store_port(f, self.config.store_port) {
                run.counts.push(Counter::Unparseable);
                return Flow::End(verdict::DROP);
            }
            return Flow::End(verdict::PASS);
        }
        let has_header = f.len() >= PAYLOAD_OFF + wire::HEADER_LEN;
        let prefix = has_header.then(|| HeaderPrefix {
            magic: run.u16(offset::MAGIC),
            proto_version: run.u8(offset::PROTO_VERSION),
            op_code: run.u8(offset::OP),
            flags: run.u8(offset::FLAGS),
        });
        let class = switch::classify(
            self.config.store_port,
            u16_at(f, UDP_OFF),
            u16_at(f, UDP_OFF + 2),
            prefix,
        );
        match class {
            PacketClass::Request { op, stamp } => {
                run.counts.push(Counter::Requests);
                let role = self.ingress_role(&run.bytes);
                let stamp = match roles::admit_request(role, op, run.u16(offset::CLIENT_ID)) {
                    RequestAdmission::Accept => stamp,
                    RequestAdmission::Drop => {
                        run.counts.push(Counter::RoleDrops);
                        return Flow::End(verdict::DROP);
                    }
                    RequestAdmission::Clean => {
                        clean(run, op);
                        op.is_write()
                    }
                };
                if stamp && !self.stamp_write(run) {
                    return Flow::End(verdict::DROP);
                }
                if roles::reports_version(role, op) {
                    if !self.admit_reply(run, role, op) {
                        return Flow::End(verdict::DROP);
                    }
                    return self.learn_from_reply(run, role, op);
                }
                if !roles::routed_by_directory(role, op) {
                    return Flow::Forward;
                }
                self.route_request(run, op, now)
            }
            PacketClass::Reply { op } => {
                run.counts.push(Counter::Replies);
                let role = self.ingress_role(&run.bytes);
                if !self.admit_reply(run, role, op) {
                    return Flow::End(verdict::DROP);
                }
                self.learn_from_reply(run, role, op)
            }
            PacketClass::Malformed => {
                run.counts.push(Counter::ParseFailures);
                Flow::End(verdict::DROP)
            }
            PacketClass::NotPegasus => Flow::End(verdict::PASS),
        }
    }

    /// The reply rule (also for a server's outgoing CHAIN_PUT); false when dropped.
    fn admit_reply(&self, run: &mut Run, role: PortRole, op: Op) -> bool {
        let f = &run.bytes;
        let source = [f[26], f[27], f[28], f[29]];
        let admitted = roles::admit_reply(
            role,
            op,
            run.u8(offset::SERVER_ID),
            source,
            &self.server_table,
        );
        if !admitted {
            run.counts.push(Counter::RoleDrops);
        }
        admitted
    }

    /// The testbed's ingress: a frame from a server's or the client's /24 arrives on that
    /// host's port; any other on no switch port (a client port for the program).
    fn ingress_role(&self, f: &[u8]) -> PortRole {
        let source = &f[26..29];
        let is_server = (0..self.servers).any(|i| &server_ip(i).octets()[..3] == source);
        if u16_at(f, 12) == 0x0800 && is_server {
            PortRole::Server
        } else {
            PortRole::Client
        }
    }

    /// `stamp_write`: false when the write is dropped.
    fn stamp_write(&mut self, run: &mut Run) -> bool {
        let epoch = self.config.epoch;
        if !once::admits_epoch(run.u16(offset::CLIENT_EPOCH), epoch) {
            let old_word = run.u16(offset::SERVER_ID);
            let new_word = old_word | wire::flags::STALE_EPOCH as u16;
            let old_version = run.u64(offset::VERSION);
            let new_version = (epoch as u64) << version::COUNTER_BITS;
            run.set_u16(offset::SERVER_ID, new_word);
            run.set_u64(offset::VERSION, new_version);
            run.fix_udp(|sum| {
                let sum = checksum::replace_u16(sum, old_word, new_word);
                checksum::replace_u64(sum, old_version, new_version)
            });
            run.counts.push(Counter::StaleEpochs);
            return true;
        }
        let client = run.u16(offset::CLIENT_ID);
        let request_id = run.u32(offset::REQUEST_ID);
        let window = self.windows.entry(client).or_default();
        let slot = &mut window.slots[once::slot_of(request_id)];
        let stamped = match once::decide(*slot, request_id) {
            StampDecision::Reuse { counter_low } => {
                run.counts.push(Counter::StampsReused);
                version::make(epoch, once::counter_from(self.version_counter, counter_low))
                    .ok_or(Counter::VersionExhausted)
            }
            StampDecision::Stale => Err(Counter::StaleDuplicates),
            StampDecision::Fresh => {
                let before = self.version_counter;
                self.version_counter += 1;
                *slot = once::record(request_id, before + 1);
                run.counts.push(Counter::WritesStamped);
                version::stamp(epoch, before).ok_or(Counter::VersionExhausted)
            }
        };
        match stamped {
            Ok(new_version) => {
                let old_version = run.u64(offset::VERSION);
                run.set_u64(offset::VERSION, new_version);
                run.fix_udp(|sum| checksum::replace_u64(sum, old_version, new_version));
                true
            }
            Err(why) => {
                run.counts.push(why);
                false
            }
        }
    }

    fn route_request(&mut self, run: &mut Run, op: Op, now: ClockInterval) -> Flow {
        let flags = run.u8(offset::FLAGS);
        let client = run.u16(offset::CLIENT_ID);
        let request_id = run.u32(offset::REQUEST_ID);
        if op == Op::Put && flags & wire::flags::RETRY != 0 {
            return self.route_retry(run, switch::retry_route(client, request_id), now);
        }
        let keyhash = run.u64(offset::KEYHASH);
        let evicting = self.evicting.contains(&keyhash);
        let Some(entry) = self.directory.get_mut(&keyhash) else {
            return Flow::Forward;
        };
        let view = entry.view(evicting);
        let policy = Policy::from_u8(self.config.policy).unwrap_or(Policy::LeastLoaded);
        assert!(
            !policy.needs_random(),
            "the reference has no random numbers"
        );
        if op != Op::Get {
            let sequence = entry.writes;
            entry.writes += 1;
            let mix = count_mix(entry, false);
            if view.writes_go_home() {
                return Flow::Forward;
            }
            let target = self.replica_targets.get(&keyhash).copied().unwrap_or(0);
            let Some(write) = rules::route_hot_write(
                self.config.all_servers,
                policy,
                &self.server_table,
                0,
                sequence as u32,
                rules::replication_in_effect(target, self.config.replication),
                mix.copies_pay(),
            ) else {
                return Flow::Forward;
            };
            let target = self.server_table.slots[(write.primary & 63) as usize];
            if target.valid == 0 {
                return Flow::Forward;
            }
            run.counts.push(Counter::HotWrites);
            steer(
                run,
                flags,
                Some(write.replicas),
                None,
                u32::from_be_bytes(target.ipv4),
            );
            if op != Op::Put {
                return Flow::Forward;
            }
            let route = switch::retry_route(client, request_id);
            self.retry_routes.insert(
                route.slot,
                RouteSlot {
                    word: route.word(target.ipv4),
                    written: now,
                },
            );
            return Flow::Forward;
        }
        let sequence = entry.reads;
        entry.reads += 1;
        count_mix(entry, true);
        let target = rules::route_hot_read(view, policy, &self.server_table, 0, sequence as u32);
        let slot = self.server_table.slots[(target & 63) as usize];
        if slot.valid == 0 {
            return Flow::Forward;
        }
        run.counts.push(Counter::HotReads);
        let committed = (self.config.mark_committed != 0).then_some(entry.ver_committed);
        steer(run, flags, None, committed, u32::from_be_bytes(slot.ipv4));
        Flow::Forward
    }

    fn route_retry(
        &mut self,
        run: &mut Run,
        route: switch::RetryRoute,
        now: ClockInterval,
    ) -> Flow {
        let held = self.retry_routes.get(&route.slot).copied();
        let slot = |written_ns| RetrySlot {
            word: held.map_or(0, |h| h.word),
            written_ns,
        };
        // The kernel's reading of the route's age lies between these two.
        let (youngest, oldest) = match held {
            Some(h) => (
                route.decide(slot(h.written.latest), now.earliest),
                route.decide(slot(h.written.earliest), now.latest),
            ),
            None => (route.decide(slot(0), 0), route.decide(slot(0), 0)),
        };
        if youngest == oldest {
            return follow_retry(run, youngest);
        }
        // Only a fresh route of another request (drop) and a stale one (home) depend on time.
        assert_eq!(
            (youngest, oldest),
            (RetryDecision::Drop, RetryDecision::Home)
        );
        Flow::DropOrForward
    }

    fn learn_from_reply(&mut self, run: &mut Run, role: PortRole, op: Op) -> Flow {
        if !roles::speaks_for_sender(role) {
            if roles::reports_commit(role, op) {
                let acked = run.u64(offset::VERSION);
                if let Some(entry) = self.directory.get_mut(&run.u64(offset::KEYHASH)) {
                    entry.ver_committed = rules::learn_commit(entry.ver_committed, acked);
                }
            }
            return Flow::Forward;
        }
        let sender = run.u8(offset::SERVER_ID);
        self.server_table.slots[(sender & 63) as usize].load = run.u16(offset::LOAD);
        let version = run.u64(offset::VERSION);
        if roles::reports_version(role, op)
            && run.u16(offset::STATUS) == 0
            && version != version::NONE
        {
            let keyhash = run.u64(offset::KEYHASH);
            let steered = run.u8(offset::FLAGS) & wire::flags::HOT != 0;
            let evicting = self.evicting.contains(&keyhash);
            let entry = self.directory.get_mut(&keyhash);
            let view = entry.as_ref().map(|e| e.view(evicting));
            match rules::admit_report(op, view, sender, steered) {
                ReplyAdmission::Update => {
                    let entry = entry.expect("admitted for an update only with an entry");
                    entry.seq += 1;
                    let effect = rules::apply_reply(
                        &mut entry.ver_completed,
                        &mut entry.rset,
                        version,
                        sender,
                    );
                    if rules::reply_commits(op, run.u8(offset::FLAGS)) {
                        entry.ver_committed = rules::learn_commit(entry.ver_committed, version);
                    }
                    entry.installing =
                        rules::still_installing(entry.installing != 0, sender, entry.home) as u8;
                    entry.seq += 1;
                    if effect != rules::ReplyEffect::Stale {
                        run.counts.push(Counter::DirectoryUpdates);
                    }
                }
                ReplyAdmission::Forward => {}
                ReplyAdmission::Drop => {
                    run.counts.push(Counter::RepliesDropped);
                    return Flow::End(verdict::DROP);
                }
            }
        }
        if op == Op::ReplicateAck {
            run.counts.push(Counter::ReplicateAcks);
            return Flow::End(verdict::DROP);
        }
        Flow::Forward
    }

    /// `forward`: TTL, the FIB's answer (the testbed's hosts), MACs, the redirect.
    fn forward(&self, mut run: Run) -> Expected {
        if run.bytes[IP_OFF + 8] <= 1 {
            return run.end(verdict::PASS);
        }
        let dst = [
            run.bytes[IP_OFF + 16],
            run.bytes[IP_OFF + 17],
            run.bytes[IP_OFF + 18],
            run.bytes[IP_OFF + 19],
        ];
        let route = if dst == client_ip().octets() {
            Some((CLIENT_PORT_MAC, CLIENT_MAC))
        } else {
            (0..self.servers)
                .find(|&i| server_ip(i).octets() == dst)
                .map(|i| (server_port_mac(i), server_mac(i)))
        };
        let Some((smac, dmac)) = route else {
            run.counts.push(Counter::FibMisses);
            return run.end(verdict::PASS);
        };
        let old_word = u16_at(&run.bytes, IP_OFF + 8);
        let new_word = old_word - 0x0100;
        set_u16_at(&mut run.bytes, IP_OFF + 8, new_word);
        let ip_sum = u16_at(&run.bytes, IP_OFF + 10);
        set_u16_at(
            &mut run.bytes,
            IP_OFF + 10,
            checksum::replace_u16(ip_sum, old_word, new_word),
        );
        run.bytes[0..6].copy_from_slice(&dmac);
        run.bytes[6..12].copy_from_slice(&smac);
        run.end(verdict::REDIRECT)
    }
}

/// Where the pipeline stands after its decisions.
enum Flow {
    End(u32),
    Forward,
    /// The retry rule's answer depends on the kernel's clock: a drop, or on to forwarding.
    DropOrForward,
}

/// A frame being processed and the counters it raised so far.
#[derive(Clone)]
struct Run {
    bytes: Vec<u8>,
    counts: Vec<Counter>,
}

impl Run {
    fn end(mut self, verdict: u32) -> Expected {
        self.counts.push(match verdict {
            verdict::DROP => Counter::VerdictDrop,
            verdict::REDIRECT => Counter::VerdictRedirect,
            _ => Counter::VerdictPass,
        });
        Expected {
            verdict,
            bytes: self.bytes,
            counts: self.counts,
        }
    }

    fn header(&self, at: usize, len: usize) -> &[u8] {
        &self.bytes[PAYLOAD_OFF + at..PAYLOAD_OFF + at + len]
    }
    fn u8(&self, at: usize) -> u8 {
        self.header(at, 1)[0]
    }
    fn u16(&self, at: usize) -> u16 {
        u16_at(&self.bytes, PAYLOAD_OFF + at)
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.header(at, 4).try_into().unwrap())
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.header(at, 8).try_into().unwrap())
    }
    fn set_u16(&mut self, at: usize, value: u16) {
        set_u16_at(&mut self.bytes, PAYLOAD_OFF + at, value);
    }
    fn set_u64(&mut self, at: usize, value: u64) {
        self.bytes[PAYLOAD_OFF + at..PAYLOAD_OFF + at + 8].copy_from_slice(&value.to_be_bytes());
    }
    fn fix_udp(&mut self, update: impl FnOnce(u16) -> u16) {
        let sum = u16_at(&self.bytes, UDP_OFF + 6);
        set_u16_at(
            &mut self.bytes,
            UDP_OFF + 6,
            checksum::udp_fixup(sum, update(sum)),
        );
    }
}

/// The retry rule's answer, carried out.
fn follow_retry(run: &mut Run, decision: RetryDecision) -> Flow {
    match decision {
        RetryDecision::Pinned(destination) => {
            run.counts.push(Counter::RetriesPinned);
            let flags = run.u8(offset::FLAGS);
            steer(run, flags, None, None, u32::from_be_bytes(destination));
            Flow::Forward
        }
        RetryDecision::Home => Flow::Forward,
        RetryDecision::Drop => {
            run.counts.push(Counter::RetriesDropped);
            Flow::End(verdict::DROP)
        }
    }
}

/// The request rule's cleaning of the switch-only fields of a client's request (or of the
/// previous rack's CHAIN_PUT).
fn clean(run: &mut Run, op: Op) {
    let before = SwitchOnlyFields {
        version: run.u64(offset::VERSION),
        replica_bitmap: run.u64(offset::REPLICA_BITMAP),
        flags: run.u8(offset::FLAGS),
    };
    let after = roles::clean(op, before);
    if after == before {
        return;
    }
    let old_word = run.u16(offset::SERVER_ID);
    let new_word = (old_word & 0xff00) | after.flags as u16;
    run.set_u16(offset::SERVER_ID, new_word);
    run.set_u64(offset::VERSION, after.version);
    run.set_u64(offset::REPLICA_BITMAP, after.replica_bitmap);
    run.fix_udp(|sum| {
        let sum = checksum::replace_u16(sum, old_word, new_word);
        let sum = checksum::replace_u64(sum, before.version, after.version);
        checksum::replace_u64(sum, before.replica_bitmap, after.replica_bitmap)
    });
    run.counts.push(Counter::RequestsCleaned);
}

/// `steer`: HOT (and a write's replica bitmap), the new destination, both checksums.
fn steer(
    run: &mut Run,
    flags: u8,
    replicas: Option<ServerSet>,
    committed: Option<u64>,
    new_ip: u32,
) {
    let old_word = run.u16(offset::SERVER_ID);
    let marks = match committed {
        Some(_) => wire::flags::HOT | wire::flags::COMMITTED,
        None => wire::flags::HOT,
    };
    let new_word = old_word | (flags | marks) as u16;
    run.set_u16(offset::SERVER_ID, new_word);
    let original = u16_at(&run.bytes, UDP_OFF + 6);
    let mut sum = checksum::replace_u16(original, old_word, new_word);
    if let Some(version) = committed {
        let old_version = run.u64(offset::VERSION);
        run.set_u64(offset::VERSION, version);
        sum = checksum::replace_u64(sum, old_version, version);
    }
    if let Some(bitmap) = replicas {
        let old_bitmap = run.u64(offset::REPLICA_BITMAP);
        run.set_u64(offset::REPLICA_BITMAP, bitmap);
        sum = checksum::replace_u64(sum, old_bitmap, bitmap);
    }
    let old_ip = u32::from_be_bytes(run.bytes[IP_OFF + 16..IP_OFF + 20].try_into().unwrap());
    if old_ip != new_ip {
        run.bytes[IP_OFF + 16..IP_OFF + 20].copy_from_slice(&new_ip.to_be_bytes());
        let ip_sum = u16_at(&run.bytes, IP_OFF + 10);
        set_u16_at(
            &mut run.bytes,
            IP_OFF + 10,
            checksum::replace_u32(ip_sum, old_ip, new_ip),
        );
        sum = checksum::replace_u32(sum, old_ip, new_ip);
    }
    set_u16_at(
        &mut run.bytes,
        UDP_OFF + 6,
        checksum::udp_fixup(original, sum),
    );
}

/// The entry's recent mix, counted.
fn count_mix(entry: &mut DirEntry, is_read: bool) -> rules::RecentMix {
    let mix = rules::RecentMix {
        reads: entry.mix_reads,
        writes: entry.mix_writes,
    }
    .count(is_read);
    entry.mix_reads = mix.reads;
    entry.mix_writes = mix.writes;
    mix
}

/// `touches_store_port`: UDP to or from the store port behind a VLAN tag, after IP options,
/// or in a first fragment.
fn touches_store_port(f: &[u8], store_port: u16) -> bool {
    let (l3, ethertype) = match u16_at(f, 12) {
        0x8100 | 0x88a8 => (ETH_LEN + 4, u16_at(f, 16)),
        ethertype => (ETH_LEN, ethertype),
    };
    if f.len() < l3 + 20 {
        return false;
    }
    if ethertype != 0x0800 || f[l3 + 9] != 17 || u16_at(f, l3 + 6) & 0x1fff != 0 {
        return false;
    }
    let ports = l3 + (f[l3] & 0x0f) as usize * 4;
    ports + 4 <= f.len() && (u16_at(f, ports) == store_port || u16_at(f, ports + 2) == store_port)
}

fn u16_at(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn set_u16_at(f: &mut [u8], at: usize, value: u16) {
    f[at..at + 2].copy_from_slice(&value.to_be_bytes());
}
