//! One datagram in, at most one reply out. Every protocol rule a store applies lives here, with
//! no socket in sight, so the unit tests drive it directly.
//!
//! - GET: the value and its version, or status NotFound.
//! - PUT: applied under the write rule, deduplicated by (client id, request id, key hash).
//! - Every reply carries the version the store *holds* for the key once the request is handled
//!   (for a PUT: its own version, or a newer one it was superseded by): the switch's reply
//!   rule relies on it (a reply never claims a version older than what the server serves).
//! - REPLICATE: a copy of a key's version and value from another store, applied under the same
//!   rule and acknowledged (through the switch, which learns the new replica from the ack).
//! - A PUT that the switch steered with a replica bitmap is also copied, as REPLICATE, to the
//!   servers of the bitmap; a PUSH from the controller sends the stored version and value to
//!   the servers of its bitmap. The copy is returned as [`CopyOrder`] for the server loop to send.
//! - Replies echo the request's HOT flag, which tells the switch that it steered the request.
//! - Trust: REPLICATE only from the rack's servers and its controller, PUSH only from the
//!   controller (their addresses come from the cluster file): a client cannot make a store
//!   copy a value anywhere. With `require_stamped` (a store behind a switch), a PUT without a
//!   version is refused: every honest write crossed the switch, which stamps it. Writes that
//!   would take the table past its memory limit are refused with status Full.
//! - In a chain of racks ([`crate::chain`], docs/chain.md): the head's stores take clients'
//!   PUTs and forward them (no reply: the tail answers), the others take CHAIN_PUTs from the
//!   previous rack's servers only, the tail answers the client and acknowledges; a client's
//!   PUT outside the head is refused with WrongRack, and a GET outside the tail is answered
//!   only with a version known committed (else NotCommitted: read the tail).
//! - A datagram that is not a Pegasus message (bad magic, truncated header) is dropped and
//!   counted; a Pegasus request that is malformed, too large or of an unserved op gets an
//!   Error reply saying why. Replies sent *to* a store are counted and dropped, never answered,
//!   so two stores cannot bounce errors at each other.

use std::time::Instant;

use crate::{
    chain::{self, Chain, ChainLinks, Forward, Outgoing},
    dedup::Dedup,
    table::{MEMORY_LIMIT_DEFAULT, Table, WriteOutcome},
};
use pegasus_common::{
    directory, version,
    wire::{self, DecodeError, Header, Message, Op, Status},
};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What the store counts.
#[derive(Default, Debug)]
pub struct Stats {
    pub datagrams: AtomicU64,
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub replicates: AtomicU64,
    pub writes_applied: AtomicU64,
    pub writes_superseded: AtomicU64,
    pub dedup_hits: AtomicU64,
    /// Writes forgotten by the deduplication table before their retention was over.
    pub dedup_evicted_early: AtomicU64,
    pub not_pegasus_dropped: AtomicU64,
    pub stray_replies_dropped: AtomicU64,
    pub errors_sent: AtomicU64,
    pub overload_dropped: AtomicU64,
    pub pushes: AtomicU64,
    pub copies_sent: AtomicU64,
    pub copies_unroutable: AtomicU64,
    /// Requests refused for their sender (server-to-server or controller ops from others).
    pub forbidden: AtomicU64,
    /// PUTs refused because they were not stamped (with `require_stamped`).
    pub unstamped_refused: AtomicU64,
    /// PUTs the switch marked `STALE_EPOCH` (sent before a switch restart): refused.
    pub stale_epoch_refused: AtomicU64,
    /// Writes refused by the memory limit.
    pub full_refused: AtomicU64,
    /// Clients' requests this rack of a chain does not serve.
    pub wrong_rack_refused: AtomicU64,
    /// Reads outside a chain's tail whose version was not known committed (sent to the tail).
    pub not_committed: AtomicU64,
}

/// A copy of [`Stats`] for printing.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub datagrams: u64,
    pub gets: u64,
    pub puts: u64,
    pub replicates: u64,
    pub writes_applied: u64,
    pub writes_superseded: u64,
    pub dedup_hits: u64,
    pub dedup_evicted_early: u64,
    pub not_pegasus_dropped: u64,
    pub stray_replies_dropped: u64,
    pub errors_sent: u64,
    pub overload_dropped: u64,
    pub pushes: u64,
    pub copies_sent: u64,
    pub copies_unroutable: u64,
    pub forbidden: u64,
    pub unstamped_refused: u64,
    pub stale_epoch_refused: u64,
    pub full_refused: u64,
    pub wrong_rack_refused: u64,
    pub not_committed: u64,
    /// Chain replication (zero outside a chain).
    pub chain_forwarded: u64,
    pub chain_retransmitted: u64,
    pub chain_acks_received: u64,
    pub chain_acks_sent: u64,
    pub chain_queue_full: u64,
    /// Forwarded writes waiting for their acknowledgement now.
    pub chain_queued: usize,
    pub keys: usize,
    /// Bytes charged against the memory limit.
    pub bytes: usize,
    /// Writes remembered for deduplication.
    pub dedup_entries: usize,
}

/// Who sent a request, by its source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// One of the rack's servers.
    Member,
    /// The rack's controller.
    Controller,
    /// Anyone else: a client.
    Other,
}

/// A store's limits and whom it trusts.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most bytes of data ([`crate::table::charge`] per key).
    pub memory_limit: usize,
    /// Refuse PUTs that carry no version (a store behind a switch: every write crossed it).
    pub require_stamped: bool,
    /// The rack's servers' addresses (REPLICATE comes only from them or the controller).
    pub members: Vec<IpAddr>,
    /// The controller's addresses (PUSH comes only from it).
    pub controllers: Vec<IpAddr>,
    /// The racks before and after this one in a chain (none: a single rack).
    pub chain: ChainLinks,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            memory_limit: MEMORY_LIMIT_DEFAULT,
            require_stamped: false,
            members: Vec::new(),
            controllers: Vec::new(),
            chain: ChainLinks::default(),
        }
    }
}

/// What handling one datagram asks the server loop to send.
#[derive(Debug, Default)]
pub struct Handled {
    /// The reply's length in the reply buffer, if there is one.
    pub reply: Option<usize>,
    /// Where the reply goes when not to the request's sender (the tail of a chain answers
    /// the client whose write the CHAIN_PUT carries).
    pub reply_to: Option<SocketAddr>,
    /// Copies of a hot key's write, in the copy buffer.
    pub copy: Option<CopyOrder>,
    /// Chain messages: a CHAIN_PUT forwarded, CHAIN_ACKs.
    pub chain: Vec<Outgoing>,
}

/// A store's state: data, deduplication table, counters.
pub struct Store {
    pub server_id: u8,
    pub table: Table,
    pub dedup: Dedup,
    pub stats: Stats,
    require_stamped: bool,
    members: Vec<IpAddr>,
    controllers: Vec<IpAddr>,
    chain: Option<Chain>,
}

impl Store {
    /// An empty store with id `server_id`, the default limits, and no one trusted.
    pub fn new(server_id: u8) -> Store {
        Store::with_options(server_id, StoreOptions::default())
    }

    /// An empty store with id `server_id` and `options`.
    pub fn with_options(server_id: u8, options: StoreOptions) -> Store {
        Store {
            server_id,
            table: Table::with_limit(options.memory_limit),
            dedup: Dedup::default(),
            stats: Stats::default(),
            require_stamped: options.require_stamped,
            members: options.members,
            controllers: options.controllers,
            chain: options
                .chain
                .is_chain()
                .then(|| Chain::new(server_id, options.chain)),
        }
    }

    /// Puts a new chain configuration in force (docs/chain.md, "Failures"): what to send
    /// (queued writes to a new next rack; or, in a rack that became the tail, each queued
    /// write's answer to its client, with the version held, and acknowledgements to its
    /// senders), and whether every key must be copied to a rack joining behind this one
    /// ([`Store::copy_shard`]). Does nothing outside a chain.
    pub fn reconfigure(&self, links: ChainLinks) -> Reconfiguration {
        let Some(chain) = &self.chain else {
            return Reconfiguration::default();
        };
        let done = chain.reconfigure(links, Instant::now(), || self.table.versions());
        if done.copy {
            tracing::info!(
                keys = self.table.len(),
                "a rack joins behind this one: copying every key to it"
            );
        }
        let mut send = done.resend;
        let mut out = vec![0u8; wire::MAX_PAYLOAD_LEN];
        for settled in done.settled {
            let Ok(m) = Message::decode(&settled.bytes) else {
                continue;
            };
            let h = &m.header;
            let held = self
                .table
                .read(h.keyhash, m.key, |held, _| held)
                .unwrap_or(h.version)
                .max(h.version);
            send.extend(chain.acks_to(settled.upstream, h.keyhash, held, h, 0));
            if let Some(reply_to) = m.reply_to.filter(|&r| r != chain::NO_CLIENT) {
                let len = encode(
                    &mut out,
                    h,
                    Op::PutReply,
                    Status::Ok,
                    held,
                    self.server_id,
                    0,
                    &[],
                );
                send.push((out[..len].to_vec(), chain::reply_address(reply_to)));
            }
        }
        Reconfiguration {
            send,
            copy: done.copy,
        }
    }

    /// The CHAIN_PUTs that copy shard `shard` of the table to the next rack (a rack joining
    /// behind this one, the tail), each queued as a forwarded write (retransmitted until
    /// acknowledged): what to send, with each copy's key hash and version.
    pub fn copy_shard(&self, shard: usize) -> Vec<(Outgoing, u64, u64)> {
        let Some(chain) = &self.chain else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut copies = Vec::new();
        for (keyhash, version, key, value) in self.table.shard_entries(shard) {
            if version == version::NONE {
                continue;
            }
            let header = Header {
                version,
                flags: wire::flags::STAMPED,
                ..Header::request(Op::ChainPut, keyhash, 0, 0, self.server_id)
            };
            let message = Message {
                header,
                key: &key,
                value: &value,
                reply_to: Some(chain::NO_CLIENT),
            };
            if let Some(out) = chain.forward(&message, chain::NO_CLIENT, None, 0, now) {
                copies.push((out, keyhash, version));
            }
        }
        copies
    }

    /// Shards of the table ([`Store::copy_shard`]).
    pub fn shard_count(&self) -> usize {
        self.table.shard_count()
    }

    /// The store's chain state (`None` outside a chain).
    pub fn chain(&self) -> Option<&Chain> {
        self.chain.as_ref()
    }

    /// Who a request from `from` is.
    pub fn origin(&self, from: IpAddr) -> Origin {
        if self.controllers.contains(&from) {
            Origin::Controller
        } else if self.members.contains(&from) {
            Origin::Member
        } else {
            Origin::Other
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            datagrams: s.datagrams.load(Relaxed),
            gets: s.gets.load(Relaxed),
            puts: s.puts.load(Relaxed),
            replicates: s.replicates.load(Relaxed),
            writes_applied: s.writes_applied.load(Relaxed),
            writes_superseded: s.writes_superseded.load(Relaxed),
            dedup_hits: s.dedup_hits.load(Relaxed),
            dedup_evicted_early: s.dedup_evicted_early.load(Relaxed),
            not_pegasus_dropped: s.not_pegasus_dropped.load(Relaxed),
            stray_replies_dropped: s.stray_replies_dropped.load(Relaxed),
            errors_sent: s.errors_sent.load(Relaxed),
            overload_dropped: s.overload_dropped.load(Relaxed),
            pushes: s.pushes.load(Relaxed),
            copies_sent: s.copies_sent.load(Relaxed),
            copies_unroutable: s.copies_unroutable.load(Relaxed),
            forbidden: s.forbidden.load(Relaxed),
            unstamped_refused: s.unstamped_refused.load(Relaxed),
            stale_epoch_refused: s.stale_epoch_refused.load(Relaxed),
            full_refused: s.full_refused.load(Relaxed),
            wrong_rack_refused: s.wrong_rack_refused.load(Relaxed),
            not_committed: s.not_committed.load(Relaxed),
            chain_forwarded: self.chain_count(|c| &c.forwarded),
            chain_retransmitted: self.chain_count(|c| &c.retransmitted),
            chain_acks_received: self.chain_count(|c| &c.acks_received),
            chain_acks_sent: self.chain_count(|c| &c.acks_sent),
            chain_queue_full: self.chain_count(|c| &c.queue_full),
            chain_queued: self.chain.as_ref().map_or(0, Chain::queued),
            keys: self.table.len(),
            bytes: self.table.bytes(),
            dedup_entries: self.dedup.entries(),
        }
    }

    fn chain_count(&self, counter: impl Fn(&chain::ChainStats) -> &AtomicU64) -> u64 {
        self.chain
            .as_ref()
            .map_or(0, |c| counter(&c.stats).load(Relaxed))
    }

    /// Handles one datagram from `from`; writes the reply into `out` (its length in
    /// [`Handled::reply`], `None` when nothing is to be sent). `load` is reported in the reply.
    /// `out` must hold [`wire::MAX_PAYLOAD_LEN`] bytes. A copy to send to other servers, if
    /// any, is written to `copy` (also [`wire::MAX_PAYLOAD_LEN`] bytes) and described by
    /// [`Handled::copy`]; chain messages come in [`Handled::chain`].
    pub fn handle(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        load: u16,
        out: &mut [u8],
        copy: &mut [u8],
    ) -> Handled {
        assert!(out.len() >= wire::MAX_PAYLOAD_LEN, "reply buffer too small");
        assert!(copy.len() >= wire::MAX_PAYLOAD_LEN, "copy buffer too small");
        let mut handled = Handled::default();
        handled.reply = self.dispatch(datagram, from, load, out, copy, &mut handled);
        handled
    }

    fn dispatch(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        load: u16,
        out: &mut [u8],
        copy: &mut [u8],
        handled: &mut Handled,
    ) -> Option<usize> {
        self.stats.datagrams.fetch_add(1, Relaxed);
        let header = match Header::decode(datagram) {
            Ok(h) => h,
            Err(_) => {
                self.stats.not_pegasus_dropped.fetch_add(1, Relaxed);
                return None;
            }
        };
        let op = header.op();
        if op == Some(Op::ChainAck) {
            return self.chain_ack(&header, from, load, handled);
        }
        if op.is_some_and(|op| !op.is_request()) {
            self.stats.stray_replies_dropped.fetch_add(1, Relaxed);
            return None;
        }
        let reply = Reply {
            store: self,
            request: &header,
            load,
            out,
        };
        let message = match Message::decode(datagram) {
            Ok(m) if m.keyhash_matches() => m,
            Ok(_) => return reply.error(Status::Malformed),
            Err(DecodeError::TooLarge) => return reply.error(Status::ValueTooLarge),
            Err(DecodeError::KeyTooLarge) => return reply.error(Status::KeyTooLarge),
            Err(_) => return reply.error(Status::Malformed),
        };
        // Who sent it matters for these only: clients' GETs and PUTs skip the lookup.
        let allowed = match op {
            Some(Op::Replicate) => self.origin(from.ip()) != Origin::Other,
            Some(Op::Push) => self.origin(from.ip()) == Origin::Controller,
            Some(Op::ChainPut) => self
                .chain
                .as_ref()
                .is_some_and(|c| c.previous_server_at(from.ip()).is_some()),
            _ => true,
        };
        if !allowed {
            self.stats.forbidden.fetch_add(1, Relaxed);
            return reply.error(Status::Forbidden);
        }
        // In a chain, clients write to the head; a rack taken out of the chain, or still
        // joining it, serves no client's read (its controller reads its own rack as it is).
        let place = self.chain.as_ref().map(Chain::place);
        let from_client = || self.origin(from.ip()) != Origin::Controller;
        if let Some(p) = place
            && ((op == Some(Op::Put) && !p.head)
                || (op == Some(Op::Get) && !p.serves_reads && from_client()))
        {
            self.stats.wrong_rack_refused.fetch_add(1, Relaxed);
            return reply.error(Status::WrongRack);
        }
        // Outside the tail, a client's read is served only with a version known committed
        // (reads from every rack).
        let committed_bound = match (&self.chain, place) {
            (Some(chain), Some(p)) if !p.tail && from_client() => {
                let h = &message.header;
                let marked = if h.flags & wire::flags::COMMITTED != 0 {
                    h.version
                } else {
                    version::NONE
                };
                Some(chain.committed(h.keyhash).max(marked))
            }
            _ => None,
        };
        match op {
            Some(Op::Get) => self.get(&message, committed_bound, reply),
            Some(Op::Put) => self.put(&message, from, place, reply, copy, handled),
            Some(Op::Replicate) => self.replicate(&message, reply),
            Some(Op::Push) => self.push(&message, reply, copy, &mut handled.copy),
            Some(Op::ChainPut) => self.chain_put(&message, from, reply, copy, handled),
            _ => reply.error(Status::UnknownOp),
        }
    }

    /// A CHAIN_ACK: believed only from the next rack's servers; like every reply, never
    /// answered.
    fn chain_ack(
        &self,
        ack: &Header,
        from: SocketAddr,
        load: u16,
        handled: &mut Handled,
    ) -> Option<usize> {
        match &self.chain {
            Some(chain) if chain.is_next_server(from.ip()) => {
                handled.chain = chain.acknowledged(ack, load);
            }
            _ => {
                self.stats.forbidden.fetch_add(1, Relaxed);
            }
        }
        None
    }

    fn push(
        &self,
        m: &Message<'_>,
        reply: Reply<'_, '_>,
        copy: &mut [u8],
        pending_copy: &mut Option<CopyOrder>,
    ) -> Option<usize> {
        self.stats.pushes.fetch_add(1, Relaxed);
        let targets = m.header.replica_bitmap & !directory::bit(self.server_id);
        let h = &m.header;
        let server_id = self.server_id;
        let pushed = self.table.read(h.keyhash, m.key, |version, value| {
            (version != version::NONE).then(|| {
                let mut copy_header = *h;
                copy_header.version = version;
                (
                    version,
                    encode_replicate(copy, &copy_header, server_id, m.key, value),
                )
            })
        });
        match pushed {
            Some(Some((version, len))) => {
                if targets != 0 {
                    *pending_copy = Some(CopyOrder { len, targets });
                }
                reply.ok(Op::PushReply, version)
            }
            // Unstamped values (no switch) cannot be ordered against copies: nothing to push.
            Some(None) => reply.ok(Op::PushReply, version::NONE),
            None => {
                let Reply {
                    store,
                    request,
                    load,
                    out,
                } = reply;
                Some(encode(
                    out,
                    request,
                    Op::PushReply,
                    Status::NotFound,
                    0,
                    store.server_id,
                    load,
                    &[],
                ))
            }
        }
    }

    /// A read. With `committed_bound` (a rack of a chain other than the tail), the value is
    /// returned only if its version is no newer than that bound (committed: the tail holds it
    /// or newer); otherwise the answer is NotCommitted and the client reads the tail.
    fn get(
        &self,
        m: &Message<'_>,
        committed_bound: Option<u64>,
        reply: Reply<'_, '_>,
    ) -> Option<usize> {
        self.stats.gets.fetch_add(1, Relaxed);
        let Reply {
            store,
            request,
            load,
            out,
        } = reply;
        let server_id = self.server_id;
        let found = self.table.read(m.header.keyhash, m.key, |version, value| {
            if committed_bound.is_some_and(|bound| version > bound) {
                return None;
            }
            let len = encode(
                out,
                request,
                Op::GetReply,
                Status::Ok,
                version,
                server_id,
                load,
                value,
            );
            if committed_bound.is_some() {
                // Known committed: the switch learns it too, and marks the key's reads for
                // the rack's other replicas.
                out[wire::offset::FLAGS] |= wire::flags::COMMITTED;
            }
            Some(len)
        });
        let found = match found {
            Some(None) => {
                self.stats.not_committed.fetch_add(1, Relaxed);
                return Reply {
                    store,
                    request,
                    load,
                    out,
                }
                .error(Status::NotCommitted);
            }
            Some(Some(len)) => Some(len),
            None => None,
        };
        Some(found.unwrap_or_else(|| {
            encode(
                out,
                request,
                Op::GetReply,
                Status::NotFound,
                0,
                server_id,
                load,
                &[],
            )
        }))
    }

    /// Applies a PUT once, and copies it to the replicas its bitmap names. A retry (same client
    /// and request id) is answered from the deduplication table and *not* copied again: the
    /// switch stamped the retry with a fresh version, and copying the old value under it would
    /// bring the value back after newer writes.
    fn put(
        &self,
        m: &Message<'_>,
        from: SocketAddr,
        place: Option<chain::Place>,
        reply: Reply<'_, '_>,
        copy: &mut [u8],
        handled: &mut Handled,
    ) -> Option<usize> {
        self.stats.puts.fetch_add(1, Relaxed);
        let h = &m.header;
        if h.flags & wire::flags::STALE_EPOCH != 0 {
            // Never applied: the client learns the switch's epoch from the version.
            self.stats.stale_epoch_refused.fetch_add(1, Relaxed);
            return reply.error_with_version(Status::StaleEpoch, h.version);
        }
        if self.require_stamped && h.version == version::NONE {
            self.stats.unstamped_refused.fetch_add(1, Relaxed);
            return reply.error(Status::Unstamped);
        }
        if let Some(p) = place
            && version::epoch(h.version) < p.version_epoch
        {
            // Stamped by a switch that is not (yet) the new head's: never applied, the client
            // learns the epoch to come.
            self.stats.stale_epoch_refused.fetch_add(1, Relaxed);
            let floor = u64::from(p.version_epoch) << version::COUNTER_BITS;
            return reply.error_with_version(Status::StaleEpoch, floor);
        }
        let reply_to = match &self.chain {
            Some(_) => match chain::reply_to_of(from) {
                Some(address) => Some(address),
                None => return reply.error(Status::Malformed),
            },
            None => None,
        };
        let mut client = self.dedup.lock(h.client_id);
        if let Some(version) = client.lookup(h.request_id, h.keyhash) {
            self.stats.dedup_hits.fetch_add(1, Relaxed);
            if let Some(chain) = &self.chain
                && chain.is_waiting(h.keyhash, version)
            {
                // Not yet in the tail: send it on again; the tail answers.
                let first = Message {
                    header: Header { version, ..*h },
                    ..*m
                };
                handled.chain.extend(chain.forward(
                    &first,
                    reply_to?,
                    None,
                    reply.load,
                    Instant::now(),
                ));
                return None;
            }
            let held = self.table.read(h.keyhash, m.key, |held, _| held);
            return reply.ok(Op::PutReply, held.unwrap_or(version).max(version));
        }
        if let Some(chain) = &self.chain
            && chain.admit(h.keyhash, h.version) == Forward::QueueFull
        {
            return None; // neither applied nor recorded: the client's retry may find room
        }
        let Some(held) = self.apply(m) else {
            // Not applied, so not recorded: a retry may find room.
            return reply.error(Status::Full);
        };
        let early = client.record(h.request_id, h.keyhash, h.version, Instant::now());
        if early > 0 {
            self.stats.dedup_evicted_early.fetch_add(early, Relaxed);
        }
        drop(client);
        handled.copy = self.copies(m, copy);
        if let (Some(chain), Some(reply_to)) = (&self.chain, reply_to)
            && !chain.is_tail()
        {
            // The tail answers, once every rack holds the write (none if this rack became
            // the tail meanwhile: the client's retry is answered here).
            handled
                .chain
                .extend(chain.forward(m, reply_to, None, reply.load, Instant::now()));
            return None;
        }
        reply.ok(Op::PutReply, held)
    }

    /// The copies a write steered with a replica bitmap asks for (a hot key's write).
    fn copies(&self, m: &Message<'_>, copy: &mut [u8]) -> Option<CopyOrder> {
        let h = &m.header;
        let targets = h.replica_bitmap & !directory::bit(self.server_id);
        (targets != 0 && h.version != version::NONE).then(|| CopyOrder {
            len: encode_replicate(copy, h, self.server_id, m.key, m.value),
            targets,
        })
    }

    /// A write forwarded by the previous rack (its sender checked): applied under the write
    /// rule (retransmissions in any order converge), copied as the switch asks, then forwarded
    /// to the next rack, or, in the tail, answered to the client and acknowledged.
    fn chain_put(
        &self,
        m: &Message<'_>,
        from: SocketAddr,
        reply: Reply<'_, '_>,
        copy: &mut [u8],
        handled: &mut Handled,
    ) -> Option<usize> {
        let chain = self.chain.as_ref().expect("checked by dispatch");
        let h = &m.header;
        let (Some(reply_to), Some(sender)) = (m.reply_to, chain.previous_server_at(from.ip()))
        else {
            return reply.error(Status::Malformed);
        };
        if h.version == version::NONE || h.flags & wire::flags::STAMPED == 0 {
            return reply.error(Status::Malformed);
        }
        self.stats.puts.fetch_add(1, Relaxed);
        if !chain.is_tail() && chain.admit(h.keyhash, h.version) == Forward::QueueFull {
            return None; // its sender sends it again
        }
        let held = self.apply(m)?; // full: not acknowledged, so sent again
        handled.copy = self.copies(m, copy);
        if !chain.is_tail() {
            handled.chain.extend(chain.forward(
                m,
                reply_to,
                Some(sender),
                reply.load,
                Instant::now(),
            ));
            return None;
        }
        handled.chain = chain.acks_to(directory::bit(sender), h.keyhash, held, h, reply.load);
        if reply_to == chain::NO_CLIENT {
            return None; // a copy of a key for a joining rack: no client waits
        }
        handled.reply_to = Some(chain::reply_address(reply_to));
        reply.ok(Op::PutReply, held)
    }

    fn replicate(&self, m: &Message<'_>, reply: Reply<'_, '_>) -> Option<usize> {
        self.stats.replicates.fetch_add(1, Relaxed);
        if m.header.version == pegasus_common::version::NONE {
            return reply.error(Status::Malformed);
        }
        match self.apply(m) {
            Some(held) => reply.ok(Op::ReplicateAck, held),
            None => reply.error(Status::Full),
        }
    }

    /// Writes under the write rule; returns the version the store now holds for the key, or
    /// `None` when the memory limit refused the write.
    fn apply(&self, m: &Message<'_>) -> Option<u64> {
        let h = &m.header;
        match self.table.write(h.keyhash, m.key, m.value, h.version) {
            WriteOutcome::Applied { stored_version } => {
                self.stats.writes_applied.fetch_add(1, Relaxed);
                Some(stored_version)
            }
            WriteOutcome::Superseded { stored_version } => {
                self.stats.writes_superseded.fetch_add(1, Relaxed);
                Some(stored_version)
            }
            WriteOutcome::Full { .. } => {
                self.stats.full_refused.fetch_add(1, Relaxed);
                None
            }
        }
    }
}

/// What a new chain configuration leaves to do ([`Store::reconfigure`]).
#[derive(Debug, Default)]
pub struct Reconfiguration {
    /// Messages to send now.
    pub send: Vec<Outgoing>,
    /// Every key must be copied to the rack joining behind this one.
    pub copy: bool,
}

/// A message to send to several servers: `len` bytes of the copy buffer, to every server in
/// the `targets` bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOrder {
    pub len: usize,
    pub targets: directory::ServerSet,
}

/// Encodes the REPLICATE that copies a write (or a pushed value) to other servers.
fn encode_replicate(
    out: &mut [u8],
    from: &Header,
    server_id: u8,
    key: &[u8],
    value: &[u8],
) -> usize {
    let header = Header {
        version: from.version,
        ..Header::request(
            Op::Replicate,
            from.keyhash,
            from.client_id,
            from.request_id,
            server_id,
        )
    };
    Message::new(header, key, value)
        .encode(out)
        .expect("a copy is no larger than the request it copies")
}

/// What every reply needs from its request.
struct Reply<'s, 'o> {
    store: &'s Store,
    request: &'s Header,
    load: u16,
    out: &'o mut [u8],
}

impl Reply<'_, '_> {
    fn ok(self, op: Op, version: u64) -> Option<usize> {
        Some(encode(
            self.out,
            self.request,
            op,
            Status::Ok,
            version,
            self.store.server_id,
            self.load,
            &[],
        ))
    }

    fn error(self, status: Status) -> Option<usize> {
        self.error_with_version(status, 0)
    }

    fn error_with_version(self, status: Status, version: u64) -> Option<usize> {
        self.store.stats.errors_sent.fetch_add(1, Relaxed);
        Some(encode(
            self.out,
            self.request,
            Op::Error,
            status,
            version,
            self.store.server_id,
            self.load,
            &[],
        ))
    }
}

/// Encodes a reply: request id, client id and key hash echo the request; the body carries an
/// empty key (the key hash identifies it) and the value, if any.
#[allow(clippy::too_many_arguments)]
fn encode(
    out: &mut [u8],
    request: &Header,
    op: Op,
    status: Status,
    version: u64,
    server_id: u8,
    load: u16,
    value: &[u8],
) -> usize {
    let header = Header::reply(op, request, server_id, version, status, load);
    Message::new(header, &[], value)
        .encode(out)
        .expect("a stored value always fits in a reply: it arrived in a request with its key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pegasus_common::hash::key_hash;
    use proptest::prelude::*;

    fn request(op: Op, key: &[u8], value: &[u8], version: u64, client: u16, req: u32) -> Vec<u8> {
        let mut h = Header::new(op);
        h.keyhash = key_hash(key);
        h.version = version;
        h.client_id = client;
        h.request_id = req;
        let reply_to = (op == Op::ChainPut).then_some(wire::ReplyTo {
            ipv4: [10, 2, 0, 2],
            port: 5000,
        });
        let m = Message {
            reply_to,
            ..Message::new(h, key, value)
        };
        m.to_vec().unwrap()
    }

    const CLIENT_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 2, 0, 2));
    const MEMBER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 1, 2));
    const CONTROLLER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, 1));

    /// A store that knows one member and the controller by address.
    fn trusting(server_id: u8) -> Store {
        Store::with_options(
            server_id,
            StoreOptions {
                members: vec![MEMBER_IP],
                controllers: vec![CONTROLLER_IP],
                ..StoreOptions::default()
            },
        )
    }

    /// Who sends each op in these tests: copies come from a member, pushes from the
    /// controller, everything else from a client.
    fn sender_of(datagram: &[u8]) -> IpAddr {
        match Header::decode(datagram).ok().and_then(|h| h.op()) {
            Some(Op::Replicate) => MEMBER_IP,
            Some(Op::Push) => CONTROLLER_IP,
            _ => CLIENT_IP,
        }
    }

    fn call(store: &Store, datagram: &[u8]) -> Option<(Header, Vec<u8>)> {
        call_with_copy(store, datagram).0
    }

    /// A decoded reply (header, value) and a decoded copy with its targets.
    type Handled = (
        Option<(Header, Vec<u8>)>,
        Option<(Message<'static>, directory::ServerSet)>,
    );

    fn call_with_copy(store: &Store, datagram: &[u8]) -> Handled {
        let mut out = vec![0u8; wire::MAX_PAYLOAD_LEN];
        let mut copy = vec![0u8; wire::MAX_PAYLOAD_LEN];
        let from = SocketAddr::new(sender_of(datagram), 5000);
        let handled = store.handle(datagram, from, 3, &mut out, &mut copy);
        let (reply, pending) = (handled.reply, handled.copy);
        let reply = reply.map(|n| {
            let m = Message::decode(&out[..n]).unwrap();
            (m.header, m.value.to_vec())
        });
        let copy = pending.map(|c| {
            let bytes: &'static [u8] = Box::leak(copy[..c.len].to_vec().into_boxed_slice());
            (Message::decode(bytes).unwrap(), c.targets)
        });
        (reply, copy)
    }

    #[test]
    fn put_then_get() {
        let s = trusting(4);
        let (h, _) = call(&s, &request(Op::Put, b"k", b"v1", 10, 1, 1)).unwrap();
        assert_eq!(
            (h.op(), h.status(), h.version),
            (Some(Op::PutReply), Some(Status::Ok), 10)
        );
        assert_eq!(
            (h.server_id, h.load, h.request_id, h.client_id),
            (4, 3, 1, 1)
        );
        let (h, v) = call(&s, &request(Op::Get, b"k", b"", 0, 1, 2)).unwrap();
        assert_eq!(
            (h.op(), h.version, v.as_slice()),
            (Some(Op::GetReply), 10, &b"v1"[..])
        );
        let (h, v) = call(&s, &request(Op::Get, b"missing", b"", 0, 1, 3)).unwrap();
        assert_eq!((h.status(), v.len()), (Some(Status::NotFound), 0));
    }

    #[test]
    fn an_older_write_is_acknowledged_but_does_not_overwrite() {
        let s = trusting(0);
        call(&s, &request(Op::Put, b"k", b"new", 20, 1, 1));
        let (h, _) = call(&s, &request(Op::Put, b"k", b"old", 10, 2, 1)).unwrap();
        // Acknowledged with the version the store holds: the switch must not believe that
        // this server serves version 10.
        assert_eq!((h.status(), h.version), (Some(Status::Ok), 20));
        let (h, v) = call(&s, &request(Op::Get, b"k", b"", 0, 1, 2)).unwrap();
        assert_eq!((h.version, v.as_slice()), (20, &b"new"[..]));
        assert_eq!(s.snapshot().writes_superseded, 1);
    }

    #[test]
    fn a_retried_write_is_answered_not_applied_again() {
        let s = trusting(0);
        let first = request(Op::Put, b"k", b"a", 5, 9, 77);
        call(&s, &first).unwrap();
        call(&s, &request(Op::Put, b"k", b"b", 6, 9, 78)).unwrap();
        // The retry of request 77 arrives after 78: it must not bring "a" back.
        let (h, _) = call(&s, &first).unwrap();
        assert_eq!(h.version, 6, "the version held");
        let (_, v) = call(&s, &request(Op::Get, b"k", b"", 0, 9, 79)).unwrap();
        assert_eq!(v, b"b");
        assert_eq!(s.snapshot().dedup_hits, 1);
        assert_eq!(s.snapshot().writes_applied, 2);
    }

    #[test]
    fn an_unstamped_retry_is_not_applied_twice_either() {
        let s = trusting(0);
        let first = request(Op::Put, b"k", b"a", 0, 9, 1);
        call(&s, &first);
        call(&s, &request(Op::Put, b"k", b"b", 0, 9, 2));
        call(&s, &first);
        let (_, v) = call(&s, &request(Op::Get, b"k", b"", 0, 9, 3)).unwrap();
        assert_eq!(v, b"b");
    }

    #[test]
    fn replicate_applies_and_acknowledges() {
        let s = trusting(2);
        let (h, _) = call(&s, &request(Op::Replicate, b"k", b"x", 8, 0, 1)).unwrap();
        assert_eq!(
            (h.op(), h.version, h.server_id),
            (Some(Op::ReplicateAck), 8, 2)
        );
        let (_, v) = call(&s, &request(Op::Get, b"k", b"", 0, 0, 2)).unwrap();
        assert_eq!(v, b"x");
        // An older copy is acknowledged with the newer version held, not its own.
        let (h, _) = call(&s, &request(Op::Replicate, b"k", b"w", 7, 0, 4)).unwrap();
        assert_eq!(h.version, 8);
        let (h, _) = call(&s, &request(Op::Replicate, b"k", b"y", 0, 0, 3)).unwrap();
        assert_eq!(
            h.status(),
            Some(Status::Malformed),
            "a replica copy must carry a version"
        );
    }

    #[test]
    fn bad_input_gets_a_clear_answer_or_a_counted_drop() {
        let s = trusting(0);
        assert_eq!(call(&s, b"hello"), None);
        assert_eq!(call(&s, &[]), None);
        assert_eq!(s.snapshot().not_pegasus_dropped, 2);

        // Unknown op code.
        let mut b = request(Op::Get, b"k", b"", 0, 1, 1);
        b[wire::offset::OP] = 200;
        assert_eq!(call(&s, &b).unwrap().0.status(), Some(Status::UnknownOp));
        // Chain messages outside a chain: no sender may send them.
        let b = request(Op::ChainPut, b"k", b"v", 3, 1, 1);
        assert_eq!(call(&s, &b).unwrap().0.status(), Some(Status::Forbidden));
        // Truncated body.
        let b = request(Op::Put, b"key", b"value", 1, 1, 1);
        let (h, _) = call(&s, &b[..b.len() - 1]).unwrap();
        assert_eq!(
            (h.op(), h.status()),
            (Some(Op::Error), Some(Status::Malformed))
        );
        // Key hash that does not match the key.
        let mut b = request(Op::Put, b"key", b"value", 1, 1, 1);
        b[wire::offset::KEYHASH] ^= 1;
        assert_eq!(call(&s, &b).unwrap().0.status(), Some(Status::Malformed));
        // Oversize datagram (e.g. reassembled from fragments).
        let mut big = request(Op::Put, b"k", &[0u8; 1400], 1, 1, 1);
        big.resize(3000, 0);
        assert_eq!(
            call(&s, &big).unwrap().0.status(),
            Some(Status::ValueTooLarge)
        );
        // Replies sent to a store are dropped, not answered.
        let b = request(Op::GetReply, b"", b"", 0, 1, 1);
        assert_eq!(call(&s, &b), None);
        assert_eq!(s.snapshot().stray_replies_dropped, 1);
        assert_eq!(s.table.len(), 0, "nothing malformed was stored");
    }

    #[test]
    fn a_steered_write_is_copied_to_its_replicas_and_flags_are_echoed() {
        let s = trusting(2);
        let mut b = request(Op::Put, b"k", b"v", 9, 1, 5);
        b[wire::offset::FLAGS] = wire::flags::HOT;
        b[wire::offset::REPLICA_BITMAP..wire::offset::REPLICA_BITMAP + 8].copy_from_slice(
            &(directory::bit(2) | directory::bit(3) | directory::bit(7)).to_be_bytes(),
        );
        // The keyhash covers the key only, so rewriting flags and bitmap keeps it valid.
        let (reply, copy) = call_with_copy(&s, &b);
        let (h, _) = reply.unwrap();
        assert_eq!(h.flags, wire::flags::HOT, "HOT is echoed");
        let (m, targets) = copy.unwrap();
        assert_eq!(
            targets,
            directory::bit(3) | directory::bit(7),
            "never to itself"
        );
        assert_eq!(
            (m.header.op(), m.header.version, m.key, m.value),
            (Some(Op::Replicate), 9, &b"k"[..], &b"v"[..])
        );
        assert_eq!(m.header.server_id, 2);
        // Unstamped writes (no switch) are not copied.
        let mut unstamped = request(Op::Put, b"k", b"v", 0, 1, 6);
        unstamped[wire::offset::REPLICA_BITMAP + 7] = 0x08;
        assert!(call_with_copy(&s, &unstamped).1.is_none());
    }

    #[test]
    fn a_retried_steered_write_is_answered_once_and_never_copied_again() {
        // The switch stamps every attempt: the retry of request 5 carries version 12, not 9.
        // Copying it would install the old value at version 12 on the replicas, over any
        // write stamped 10 or 11 meanwhile (this broke linearizability in the lab test).
        let s = trusting(2);
        let steered = |version: u64| {
            let mut b = request(Op::Put, b"k", b"old", version, 1, 5);
            b[wire::offset::REPLICA_BITMAP..wire::offset::REPLICA_BITMAP + 8]
                .copy_from_slice(&directory::bit(3).to_be_bytes());
            b
        };
        let (first, copy) = call_with_copy(&s, &steered(9));
        assert_eq!(first.unwrap().0.version, 9);
        assert_eq!(copy.unwrap().0.header.version, 9);
        let (retry, copy) = call_with_copy(&s, &steered(12));
        assert_eq!(retry.unwrap().0.version, 9, "answered from the table");
        assert!(copy.is_none(), "a retry is not copied");
        assert_eq!(s.snapshot().dedup_hits, 1);
    }

    #[test]
    fn push_sends_the_stored_version() {
        let s = trusting(0);
        call(&s, &request(Op::Put, b"k", b"stored", 42, 1, 1));
        let mut push = request(Op::Push, b"k", b"", 0, 0xffff, 7);
        push[wire::offset::REPLICA_BITMAP + 7] = 0b0110;
        let (reply, copy) = call_with_copy(&s, &push);
        let (h, _) = reply.unwrap();
        assert_eq!(
            (h.op(), h.status(), h.version),
            (Some(Op::PushReply), Some(Status::Ok), 42)
        );
        let (m, targets) = copy.unwrap();
        assert_eq!(
            (targets, m.header.version, m.value),
            (0b0110, 42, &b"stored"[..])
        );
        // A key the store does not have.
        let mut missing = request(Op::Push, b"nope", b"", 0, 0xffff, 8);
        missing[wire::offset::REPLICA_BITMAP + 7] = 0b0110;
        let (reply, copy) = call_with_copy(&s, &missing);
        assert_eq!(reply.unwrap().0.status(), Some(Status::NotFound));
        assert!(copy.is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let s = trusting(0);
            let (mut out, mut copy) = (vec![0u8; wire::MAX_PAYLOAD_LEN], vec![0u8; wire::MAX_PAYLOAD_LEN]);
            let _ = s.handle(&bytes, SocketAddr::new(sender_of(&bytes), 1), 0, &mut out, &mut copy);
        }

        #[test]
        fn arbitrary_bodies_behind_a_valid_header_never_panic(
            op in 0u8..12, body in proptest::collection::vec(any::<u8>(), 0..400)
        ) {
            let s = trusting(0);
            let mut h = Header::new(Op::Put);
            h.op_code = op;
            let mut b = vec![0u8; wire::HEADER_LEN];
            h.encode(&mut b).unwrap();
            b.extend_from_slice(&body);
            let (mut out, mut copy) = (vec![0u8; wire::MAX_PAYLOAD_LEN], vec![0u8; wire::MAX_PAYLOAD_LEN]);
            let _ = s.handle(&b, SocketAddr::new(sender_of(&b), 1), 0, &mut out, &mut copy);
        }
    }

    fn status_from(store: &Store, from: IpAddr, datagram: &[u8]) -> Option<Status> {
        let mut out = vec![0u8; wire::MAX_PAYLOAD_LEN];
        let mut copy = vec![0u8; wire::MAX_PAYLOAD_LEN];
        let handled = store.handle(
            datagram,
            SocketAddr::new(from, 5000),
            0,
            &mut out,
            &mut copy,
        );
        let (reply, pending) = (handled.reply, handled.copy);
        assert!(
            pending.is_none() || from != CLIENT_IP,
            "a client made the store copy"
        );
        reply.and_then(|n| Header::decode(&out[..n]).ok()?.status())
    }

    #[test]
    fn copies_and_pushes_come_only_from_the_rack() {
        let s = trusting(0);
        status_from(&s, CLIENT_IP, &request(Op::Put, b"k", b"v", 9, 1, 1));
        let replicate = request(Op::Replicate, b"k", b"forged", u64::MAX, 1, 2);
        let mut push = request(Op::Push, b"k", b"", 0, wire::CONTROLLER_CLIENT_ID, 3);
        push[wire::offset::REPLICA_BITMAP..wire::offset::REPLICA_BITMAP + 8]
            .copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            status_from(&s, CLIENT_IP, &replicate),
            Some(Status::Forbidden)
        );
        assert_eq!(status_from(&s, CLIENT_IP, &push), Some(Status::Forbidden));
        assert_eq!(
            status_from(&s, MEMBER_IP, &push),
            Some(Status::Forbidden),
            "a member may copy, not push"
        );
        assert_eq!(s.snapshot().forbidden, 3);
        assert_eq!(
            s.table
                .read(key_hash(b"k"), b"k", |v, val| (v, val.to_vec())),
            Some((9, b"v".to_vec())),
            "nothing changed"
        );
        assert_eq!(status_from(&s, MEMBER_IP, &replicate), Some(Status::Ok));
        assert_eq!(status_from(&s, CONTROLLER_IP, &push), Some(Status::Ok));
        // A store that knows no one refuses both from anyone.
        let alone = Store::new(0);
        assert_eq!(
            status_from(&alone, MEMBER_IP, &replicate),
            Some(Status::Forbidden)
        );
    }

    #[test]
    fn a_store_behind_a_switch_refuses_unstamped_writes() {
        let s = Store::with_options(
            0,
            StoreOptions {
                require_stamped: true,
                ..StoreOptions::default()
            },
        );
        let unstamped = request(Op::Put, b"k", b"v", 0, 1, 1);
        assert_eq!(
            status_from(&s, CLIENT_IP, &unstamped),
            Some(Status::Unstamped)
        );
        assert_eq!(s.table.len(), 0);
        let stamped = request(Op::Put, b"k", b"v", 5, 1, 2);
        assert_eq!(status_from(&s, CLIENT_IP, &stamped), Some(Status::Ok));
        assert_eq!(s.snapshot().unstamped_refused, 1);
    }

    #[test]
    fn a_write_marked_stale_epoch_is_refused_with_the_switch_epoch_and_never_applied() {
        let s = Store::new(0);
        let epoch_only = pegasus_common::version::make(4, 0).unwrap();
        let mut stale = request(Op::Put, b"k", b"v", epoch_only, 1, 1);
        stale[wire::offset::FLAGS] |= wire::flags::STALE_EPOCH | wire::flags::RETRY;
        let mut out = vec![0u8; wire::MAX_PAYLOAD_LEN];
        let mut copy = vec![0u8; wire::MAX_PAYLOAD_LEN];
        let handled = s.handle(
            &stale,
            SocketAddr::new(CLIENT_IP, 5000),
            0,
            &mut out,
            &mut copy,
        );
        let (reply, pending) = (handled.reply, handled.copy);
        let reply = Header::decode(&out[..reply.unwrap()]).unwrap();
        assert_eq!(reply.op(), Some(Op::Error));
        assert_eq!(reply.status(), Some(Status::StaleEpoch));
        assert_eq!(
            reply.version, epoch_only,
            "the client learns the epoch from it"
        );
        assert!(pending.is_none());
        assert_eq!(s.table.len(), 0, "never applied");
        assert_eq!(s.snapshot().stale_epoch_refused, 1);
        // Nor recorded: the same request, stamped, is applied.
        let stamped = request(Op::Put, b"k", b"v", epoch_only + 1, 1, 1);
        assert_eq!(status_from(&s, CLIENT_IP, &stamped), Some(Status::Ok));
        assert_eq!(s.table.len(), 1);
    }

    #[test]
    fn a_full_store_refuses_growth_with_a_status() {
        let s = Store::with_options(
            0,
            StoreOptions {
                // Room for "a" with 4 bytes, or for "a" and "b" with a byte between them.
                memory_limit: crate::table::charge(1, 4) + crate::table::charge(1, 1) - 1,
                ..StoreOptions::default()
            },
        );
        assert_eq!(
            status_from(&s, CLIENT_IP, &request(Op::Put, b"a", b"1234", 1, 1, 1)),
            Some(Status::Ok)
        );
        let another = request(Op::Put, b"b", b"1", 2, 1, 2);
        assert_eq!(status_from(&s, CLIENT_IP, &another), Some(Status::Full));
        // Not recorded as done: once there is room, its retry is applied.
        assert_eq!(
            status_from(&s, CLIENT_IP, &request(Op::Put, b"a", b"", 3, 1, 3)),
            Some(Status::Ok)
        );
        assert_eq!(status_from(&s, CLIENT_IP, &another), Some(Status::Ok));
        let snap = s.snapshot();
        assert_eq!((snap.full_refused, snap.keys), (1, 2));
        assert!(snap.bytes < crate::table::charge(1, 4) + crate::table::charge(1, 1));
    }

    /// Three racks of two stores: rack r's server i at 10.(1+16r).i.2.
    mod chain {
        use super::*;
        use crate::chain::{CHAIN_RETRY_MIN, ChainLinks};
        use pegasus_common::placement::Placement;
        use std::net::Ipv4Addr;

        fn address(rack: u8, id: u8) -> SocketAddr {
            SocketAddr::new(Ipv4Addr::new(10, 1 + 16 * rack, id, 2).into(), 7400)
        }

        fn rack_of(rack: u8) -> Vec<(u8, SocketAddr)> {
            (0..2).map(|i| (i, address(rack, i))).collect()
        }

        fn store(rack: u8, id: u8) -> Store {
            Store::with_options(
                id,
                StoreOptions {
                    chain: ChainLinks {
                        previous: if rack == 0 {
                            Vec::new()
                        } else {
                            rack_of(rack - 1)
                        },
                        next: if rack == 2 {
                            Vec::new()
                        } else {
                            rack_of(rack + 1)
                        },
                        ..ChainLinks::default()
                    },
                    ..StoreOptions::default()
                },
            )
        }

        const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 2)), 5000);

        fn deliver(s: &Store, bytes: &[u8], from: SocketAddr) -> (super::super::Handled, Vec<u8>) {
            let (mut out, mut copy) = (
                vec![0u8; wire::MAX_PAYLOAD_LEN],
                vec![0u8; wire::MAX_PAYLOAD_LEN],
            );
            let handled = s.handle(bytes, from, 0, &mut out, &mut copy);
            let reply = handled.reply.map_or(Vec::new(), |n| out[..n].to_vec());
            (handled, reply)
        }

        /// A write through head, middle and tail: each forwards to the key's home in the
        /// next rack, the tail answers the client, acks flow back and empty every queue.
        #[test]
        fn a_write_crosses_every_rack_and_the_tail_answers() {
            let racks: Vec<Vec<Store>> = (0..3)
                .map(|r| (0..2).map(|i| store(r, i)).collect())
                .collect();
            let key = b"k";
            let home = Placement::new(0..2).home(key_hash(key));
            let put = request(Op::Put, key, b"v", 77, 9, 0x8000_0001);
            let (h, reply) = deliver(&racks[0][home as usize], &put, CLIENT);
            assert!(reply.is_empty(), "the head does not answer");
            let (mut bytes, mut to) = h.chain.into_iter().next().unwrap();
            let mut from = address(0, home);
            for rack in 1..3u8 {
                assert_eq!(to, address(rack, home));
                let (h, reply) = deliver(&racks[rack as usize][home as usize], &bytes, from);
                if rack == 1 {
                    assert!(reply.is_empty());
                    (bytes, to) = h.chain.into_iter().next().unwrap();
                    from = address(1, home);
                } else {
                    let r = Message::decode(&reply).unwrap().header;
                    assert_eq!(
                        (r.op(), r.version, r.client_id, r.request_id),
                        (Some(Op::PutReply), 77, 9, 0x8000_0001)
                    );
                    assert_eq!(h.reply_to, Some(CLIENT));
                    // The ack goes to the middle server that forwarded the write...
                    let (ack, ack_to) = h.chain.into_iter().next().unwrap();
                    assert_eq!(ack_to, address(1, home));
                    let (h, _) = deliver(&racks[1][home as usize], &ack, address(2, home));
                    // ... which passes it on to the head's.
                    let (ack, ack_to) = h.chain.into_iter().next().unwrap();
                    assert_eq!(ack_to, address(0, home));
                    let (h, _) = deliver(&racks[0][home as usize], &ack, address(1, home));
                    assert!(h.chain.is_empty());
                }
            }
            for rack in &racks {
                assert_eq!(rack[home as usize].snapshot().chain_queued, 0);
                assert_eq!(
                    rack[home as usize].table.read(key_hash(key), key, |v, _| v),
                    Some(77)
                );
            }
        }

        #[test]
        fn clients_write_to_the_head_and_chain_messages_need_a_neighbour() {
            let (head, middle, tail) = (store(0, 0), store(1, 0), store(2, 0));
            let status = |s: &Store, bytes: &[u8], from: SocketAddr| {
                let (_, reply) = deliver(s, bytes, from);
                Header::decode(&reply).ok().and_then(|h| h.status())
            };
            let put = request(Op::Put, b"k", b"v", 5, 1, 0x8000_0001);
            let get = request(Op::Get, b"k", b"", 0, 1, 2);
            for s in [&middle, &tail] {
                assert_eq!(status(s, &put, CLIENT), Some(Status::WrongRack));
            }
            for s in [&head, &middle, &tail] {
                assert_eq!(status(s, &get, CLIENT), Some(Status::NotFound));
            }
            // A CHAIN_PUT from a client, or from a rack that is not the previous one.
            let chain_put = {
                let mut b = request(Op::ChainPut, b"k", b"forged", 9, 1, 3);
                b[wire::offset::FLAGS] = wire::flags::STAMPED;
                b
            };
            assert_eq!(status(&tail, &chain_put, CLIENT), Some(Status::Forbidden));
            assert_eq!(
                status(&tail, &chain_put, address(0, 0)),
                Some(Status::Forbidden)
            );
            assert_eq!(
                status(&head, &chain_put, address(1, 0)),
                Some(Status::Forbidden)
            );
            // From the previous rack, but not stamped.
            let unstamped = request(Op::ChainPut, b"k", b"v", 9, 1, 3);
            assert_eq!(
                status(&tail, &unstamped, address(1, 1)),
                Some(Status::Malformed)
            );
            // An ack from anyone but the next rack: counted, never answered.
            let ack = request(Op::ChainAck, b"", b"", 9, 1, 3);
            assert_eq!(status(&middle, &ack, CLIENT), None);
            assert_eq!(status(&middle, &ack, address(0, 1)), None);
            assert_eq!(middle.snapshot().forbidden, 2);
            assert_eq!(tail.snapshot().writes_applied, 0);
        }

        fn links(previous: Option<u8>, next: Option<u8>, version_epoch: u16) -> ChainLinks {
            ChainLinks {
                previous: previous.map_or(Vec::new(), rack_of),
                next: next.map_or(Vec::new(), rack_of),
                version_epoch,
                removed: false,
                joining: false,
            }
        }

        /// A write applied by the head, whose middle rack then fails: the head sends it at
        /// once to the tail, its new successor, whose answer and ack complete it.
        #[test]
        fn a_failed_middle_is_bridged_by_resending_the_queue() {
            let key = b"k";
            let home = Placement::new(0..2).home(key_hash(key));
            let (head, tail) = (store(0, home), store(2, home));
            let put = request(Op::Put, key, b"v", 77, 9, 0x8000_0001);
            let (h, _) = deliver(&head, &put, CLIENT);
            assert_eq!(h.chain[0].1, address(1, home), "on its way to the middle");
            let resend = head.reconfigure(links(None, Some(2), 0)).send;
            assert_eq!(resend.len(), 1);
            assert_eq!(resend[0].1, address(2, home), "now to the tail");
            // The tail takes it from the head only once it too knows the new chain.
            let (_, reply) = deliver(&tail, &resend[0].0, address(0, home));
            assert_eq!(
                Header::decode(&reply).unwrap().status(),
                Some(Status::Forbidden)
            );
            assert!(tail.reconfigure(links(Some(0), None, 0)).send.is_empty());
            let (h, reply) = deliver(&tail, &resend[0].0, address(0, home));
            let r = Header::decode(&reply).unwrap();
            assert_eq!((r.op(), r.version), (Some(Op::PutReply), 77));
            assert_eq!(h.reply_to, Some(CLIENT));
            let (ack, to) = h.chain.into_iter().next().unwrap();
            assert_eq!(to, address(0, home));
            deliver(&head, &ack, address(2, home));
            assert_eq!(head.snapshot().chain_queued, 0);
            // Nothing left to send again.
            assert!(head.reconfigure(links(None, Some(2), 1)).send.is_empty());
        }

        /// The tail fails with writes in the middle's queue: the middle, now the tail,
        /// answers each one's client with the version it holds and acknowledges its sender.
        #[test]
        fn a_failed_tail_leaves_its_predecessor_to_answer() {
            let key = b"k";
            let home = Placement::new(0..2).home(key_hash(key));
            let middle = store(1, home);
            let mut chain_put = request(Op::ChainPut, key, b"v", 40, 9, 0x8000_0002);
            chain_put[wire::offset::FLAGS] = wire::flags::STAMPED;
            let with_reply_to = {
                let mut m = Message::decode(&chain_put).unwrap();
                m.reply_to = crate::chain::reply_to_of(CLIENT);
                m.to_vec().unwrap()
            };
            let (h, reply) = deliver(&middle, &with_reply_to, address(0, 1));
            assert!(reply.is_empty() && h.chain.len() == 1);
            let out = middle.reconfigure(links(Some(0), None, 0)).send;
            assert_eq!(middle.snapshot().chain_queued, 0);
            let to: Vec<SocketAddr> = out.iter().map(|o| o.1).collect();
            assert!(to.contains(&CLIENT) && to.contains(&address(0, 1)));
            for (bytes, to) in out {
                let h = Header::decode(&bytes).unwrap();
                let expected = if to == CLIENT {
                    Op::PutReply
                } else {
                    Op::ChainAck
                };
                assert_eq!((h.op(), h.version), (Some(expected), 40));
            }
            // As the tail it now answers reads of any version.
            let (_, reply) = deliver(&middle, &request(Op::Get, key, b"", 0, 1, 3), CLIENT);
            let r = Header::decode(&reply).unwrap();
            assert_eq!((r.status(), r.version), (Some(Status::Ok), 40));
        }

        /// The head fails: its successor takes clients' writes, but only those stamped in the
        /// new version epoch (a write of the old head's epoch may have been applied there).
        #[test]
        fn a_new_head_takes_writes_of_the_new_version_epoch_only() {
            let key = b"k";
            let home = Placement::new(0..2).home(key_hash(key));
            let middle = store(1, home);
            let old_epoch = request(Op::Put, key, b"v", (1 << 48) | 5, 9, 0x8000_0003);
            let (_, reply) = deliver(&middle, &old_epoch, CLIENT);
            assert_eq!(
                Header::decode(&reply).unwrap().status(),
                Some(Status::WrongRack)
            );
            middle.reconfigure(links(None, Some(2), 2));
            let (_, reply) = deliver(&middle, &old_epoch, CLIENT);
            let r = Header::decode(&reply).unwrap();
            assert_eq!((r.status(), r.version), (Some(Status::StaleEpoch), 2 << 48));
            let new_epoch = request(Op::Put, key, b"v", (2 << 48) | 1, 9, 0x8000_0004);
            let (h, reply) = deliver(&middle, &new_epoch, CLIENT);
            assert!(reply.is_empty() && h.chain[0].1 == address(2, home));
        }

        /// A rack joins behind the tail: the tail keeps serving reads of what it held (all
        /// committed), copies every key to the joining rack, which applies and acknowledges
        /// each without answering anyone and serves no read; a new write goes through the tail
        /// to the joining rack, which answers its client.
        #[test]
        fn a_joining_rack_gets_every_key_and_the_new_writes() {
            let key = b"k";
            let home = Placement::new(0..2).home(key_hash(key));
            let (tail, joiner) = (store(2, home), store(3, home));
            joiner.reconfigure(ChainLinks {
                joining: true,
                ..links(Some(2), None, 0)
            });
            let mut chain_put = request(Op::ChainPut, key, b"old", 30, 9, 0x8000_0005);
            chain_put[wire::offset::FLAGS] = wire::flags::STAMPED;
            let with_reply_to = |bytes: &[u8]| {
                let mut m = Message::decode(bytes).unwrap();
                m.reply_to = crate::chain::reply_to_of(CLIENT);
                m.to_vec().unwrap()
            };
            deliver(&tail, &with_reply_to(&chain_put), address(1, 0));
            let done = tail.reconfigure(links(Some(1), Some(3), 0));
            assert!(done.copy && done.send.is_empty());
            // Still read at the tail: what it held was committed.
            let get = request(Op::Get, key, b"", 0, 1, 3);
            let (_, reply) = deliver(&tail, &get, CLIENT);
            let r = Header::decode(&reply).unwrap();
            assert_eq!((r.status(), r.version), (Some(Status::Ok), 30));
            let copies: Vec<_> = (0..tail.shard_count())
                .flat_map(|shard| tail.copy_shard(shard))
                .collect();
            assert_eq!(copies.len(), 1);
            let ((bytes, to), keyhash, version) = copies.into_iter().next().unwrap();
            assert_eq!(
                (to, keyhash, version),
                (address(3, home), key_hash(key), 30)
            );
            let (h, reply) = deliver(&joiner, &bytes, address(2, home));
            assert!(reply.is_empty(), "nobody to answer");
            let (ack, ack_to) = h.chain.into_iter().next().unwrap();
            assert_eq!(ack_to, address(2, home));
            deliver(&tail, &ack, address(3, home));
            assert!(!tail.chain().unwrap().is_waiting(keyhash, 30));
            // The joining rack serves no client's read yet.
            let (_, reply) = deliver(&joiner, &get, CLIENT);
            assert_eq!(
                Header::decode(&reply).unwrap().status(),
                Some(Status::WrongRack)
            );
            // A new write: the tail forwards it, the joining rack answers its client.
            let mut newer = request(Op::ChainPut, key, b"new", 31, 9, 0x8000_0006);
            newer[wire::offset::FLAGS] = wire::flags::STAMPED;
            let (h, reply) = deliver(&tail, &with_reply_to(&newer), address(1, 0));
            assert!(reply.is_empty());
            let (bytes, to) = h.chain.into_iter().next().unwrap();
            assert_eq!(to, address(3, home));
            let (h, reply) = deliver(&joiner, &bytes, address(2, home));
            assert_eq!(h.reply_to, Some(CLIENT));
            let r = Header::decode(&reply).unwrap();
            assert_eq!((r.op(), r.version), (Some(Op::PutReply), 31));
            // Until acknowledged, the tail does not serve the newer version.
            let (_, reply) = deliver(&tail, &get, CLIENT);
            assert_eq!(
                Header::decode(&reply).unwrap().status(),
                Some(Status::NotCommitted)
            );
        }

        /// A rack taken out of the chain serves no client.
        #[test]
        fn a_removed_rack_serves_nothing() {
            let tail = store(2, 0);
            tail.reconfigure(ChainLinks {
                removed: true,
                ..links(Some(1), None, 0)
            });
            for op in [Op::Get, Op::Put] {
                let (_, reply) = deliver(&tail, &request(op, b"k", b"v", 3, 1, 3), CLIENT);
                assert_eq!(
                    Header::decode(&reply).unwrap().status(),
                    Some(Status::WrongRack)
                );
            }
        }

        /// Reads outside the tail: a version is served once known committed (from an ack the
        /// store received, or the switch's mark on a steered read), never before; the tail
        /// and the controller read what is there.
        #[test]
        fn outside_the_tail_only_committed_versions_are_read() {
            let middle = store(1, 0);
            let read = |flags: u8, bound: u64| {
                let mut get = request(Op::Get, b"k", b"", bound, 1, 7);
                get[wire::offset::FLAGS] = flags;
                let (_, reply) = deliver(&middle, &get, CLIENT);
                let h = Message::decode(&reply).unwrap().header;
                (h.status(), h.version)
            };
            let mut chain_put = request(Op::ChainPut, b"k", b"v", 8, 1, 3);
            chain_put[wire::offset::FLAGS] = wire::flags::STAMPED;
            let (h, _) = deliver(&middle, &chain_put, address(0, 1));
            assert_eq!(h.chain.len(), 1, "forwarded");
            assert_eq!(read(0, 0), (Some(Status::NotCommitted), 0));
            // A client's own bound counts for nothing without the switch's flag.
            assert_eq!(read(0, 8), (Some(Status::NotCommitted), 0));
            // The switch knows version 8 committed (an ack crossed it): served, and the reply
            // says so.
            assert_eq!(read(wire::flags::COMMITTED, 8), (Some(Status::Ok), 8));
            let mut get = request(Op::Get, b"k", b"", 8, 1, 7);
            get[wire::offset::FLAGS] = wire::flags::COMMITTED;
            let (_, reply) = deliver(&middle, &get, CLIENT);
            assert_ne!(reply[wire::offset::FLAGS] & wire::flags::COMMITTED, 0);
            // It knows only an older one: not.
            assert_eq!(
                read(wire::flags::COMMITTED, 7).0,
                Some(Status::NotCommitted)
            );
            // The ack reaches the store: served with no mark.
            let mut ack = Header::new(Op::ChainAck);
            ack.keyhash = key_hash(b"k");
            ack.version = 8;
            let ack = Message::new(ack, &[], &[]).to_vec().unwrap();
            deliver(&middle, &ack, address(2, 0));
            assert_eq!(read(0, 0), (Some(Status::Ok), 8));
            assert_eq!(middle.snapshot().not_committed, 3);
            // The tail's answers carry no such claim (its switch marks nothing).
            let tail = store(2, 0);
            deliver(&tail, &chain_put, address(1, 1));
            let (_, reply) = deliver(&tail, &request(Op::Get, b"k", b"", 0, 1, 9), CLIENT);
            assert_eq!(reply[wire::offset::FLAGS] & wire::flags::COMMITTED, 0);
        }

        /// A client's retry at the head: sent on again while unacknowledged (the tail
        /// answers), answered by the head itself once the tail holds it.
        #[test]
        fn a_retried_write_is_resent_until_acknowledged_then_answered() {
            let head = store(0, 0);
            let put = request(Op::Put, b"k", b"v", 5, 1, 0x8000_0001);
            let (h, reply) = deliver(&head, &put, CLIENT);
            assert!(reply.is_empty() && h.chain.len() == 1);
            // The retry is stamped again by the switch, with the same version.
            let (h, reply) = deliver(&head, &put, CLIENT);
            assert!(reply.is_empty() && h.chain.len() == 1, "sent on again");
            assert_eq!(head.snapshot().writes_applied, 1);
            assert!(
                !head
                    .chain()
                    .unwrap()
                    .due(Instant::now() + CHAIN_RETRY_MIN)
                    .is_empty()
            );
            let mut ack = Header::new(Op::ChainAck);
            ack.keyhash = key_hash(b"k");
            ack.version = 5;
            let ack = Message::new(ack, &[], &[]).to_vec().unwrap();
            deliver(&head, &ack, address(1, 1));
            let (h, reply) = deliver(&head, &put, CLIENT);
            assert!(h.chain.is_empty());
            let r = Message::decode(&reply).unwrap().header;
            assert_eq!((r.op(), r.version), (Some(Op::PutReply), 5));
        }

        /// Retransmissions in any order leave the tail with the newest version, and an older
        /// write's answer reports the newer version held.
        #[test]
        fn reordered_retransmissions_converge_in_the_tail() {
            let tail = store(2, 1);
            let from = address(1, 0);
            let chain_put = |v: u64, value: &[u8]| {
                let mut b = request(Op::ChainPut, b"k", value, v, 1, v as u32);
                b[wire::offset::FLAGS] = wire::flags::STAMPED;
                b
            };
            for (v, value) in [
                (7, &b"seven"[..]),
                (3, b"three"),
                (7, b"seven"),
                (3, b"three"),
            ] {
                let (h, reply) = deliver(&tail, &chain_put(v, value), from);
                let r = Message::decode(&reply).unwrap().header;
                assert_eq!(r.version, 7, "answers report the version held");
                let ack = Message::decode(&h.chain[0].0).unwrap().header;
                assert_eq!((ack.op(), ack.version), (Some(Op::ChainAck), 7));
            }
            assert_eq!(
                tail.table
                    .read(key_hash(b"k"), b"k", |v, value| (v, value.to_vec())),
                Some((7, b"seven".to_vec()))
            );
        }
    }
}
