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
//! - A datagram that is not a Pegasus message (bad magic, truncated header) is dropped and
//!   counted; a Pegasus request that is malformed, too large or of an unserved op gets an
//!   Error reply saying why. Replies sent *to* a store are counted and dropped, never answered,
//!   so two stores cannot bounce errors at each other.

use std::time::Instant;

use crate::{
    dedup::Dedup,
    table::{MEMORY_LIMIT_DEFAULT, Table, WriteOutcome},
};
use pegasus_common::{
    directory, version,
    wire::{self, DecodeError, Header, Message, Op, Status},
};
use serde::Serialize;
use std::net::IpAddr;
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            memory_limit: MEMORY_LIMIT_DEFAULT,
            require_stamped: false,
            members: Vec::new(),
            controllers: Vec::new(),
        }
    }
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
        }
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
            keys: self.table.len(),
            bytes: self.table.bytes(),
            dedup_entries: self.dedup.entries(),
        }
    }

    /// Handles one datagram from `from`; writes the reply into `out` and returns its length,
    /// or `None` when nothing is to be sent. `load` is reported in the reply. `out` must hold
    /// [`wire::MAX_PAYLOAD_LEN`] bytes. A copy to send to other servers, if any, is written to
    /// `copy` (also [`wire::MAX_PAYLOAD_LEN`] bytes) and described by the second result.
    pub fn handle(
        &self,
        datagram: &[u8],
        from: IpAddr,
        load: u16,
        out: &mut [u8],
        copy: &mut [u8],
    ) -> (Option<usize>, Option<CopyOrder>) {
        assert!(out.len() >= wire::MAX_PAYLOAD_LEN, "reply buffer too small");
        assert!(copy.len() >= wire::MAX_PAYLOAD_LEN, "copy buffer too small");
        let mut pending_copy = None;
        let reply = self.dispatch(datagram, from, load, out, copy, &mut pending_copy);
        (reply, pending_copy)
    }

    fn dispatch(
        &self,
        datagram: &[u8],
        from: IpAddr,
        load: u16,
        out: &mut [u8],
        copy: &mut [u8],
        pending_copy: &mut Option<CopyOrder>,
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
        // Who sent it matters for these two only: clients' GETs and PUTs skip the lookup.
        let allowed = match op {
            Some(Op::Replicate) => self.origin(from) != Origin::Other,
            Some(Op::Push) => self.origin(from) == Origin::Controller,
            _ => true,
        };
        if !allowed {
            self.stats.forbidden.fetch_add(1, Relaxed);
            return reply.error(Status::Forbidden);
        }
        match op {
            Some(Op::Get) => self.get(&message, reply),
            Some(Op::Put) => self.put(&message, reply, copy, pending_copy),
            Some(Op::Replicate) => self.replicate(&message, reply),
            Some(Op::Push) => self.push(&message, reply, copy, pending_copy),
            _ => reply.error(Status::UnknownOp),
        }
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

    fn get(&self, m: &Message<'_>, reply: Reply<'_, '_>) -> Option<usize> {
        self.stats.gets.fetch_add(1, Relaxed);
        let Reply {
            request, load, out, ..
        } = reply;
        let server_id = self.server_id;
        let found = self.table.read(m.header.keyhash, m.key, |version, value| {
            encode(
                out,
                request,
                Op::GetReply,
                Status::Ok,
                version,
                server_id,
                load,
                value,
            )
        });
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
        reply: Reply<'_, '_>,
        copy: &mut [u8],
        pending_copy: &mut Option<CopyOrder>,
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
        let mut client = self.dedup.lock(h.client_id);
        if let Some(version) = client.lookup(h.request_id, h.keyhash) {
            self.stats.dedup_hits.fetch_add(1, Relaxed);
            let held = self.table.read(h.keyhash, m.key, |held, _| held);
            return reply.ok(Op::PutReply, held.unwrap_or(version).max(version));
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
        let targets = h.replica_bitmap & !directory::bit(self.server_id);
        if targets != 0 && h.version != version::NONE {
            *pending_copy = Some(CopyOrder {
                len: encode_replicate(copy, h, self.server_id, m.key, m.value),
                targets,
            });
        }
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
        let m = Message::new(h, key, value);
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
        let from = sender_of(datagram);
        let (reply, pending) = store.handle(datagram, from, 3, &mut out, &mut copy);
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
        // Known but unserved op.
        let b = request(Op::ChainPut, b"k", b"v", 3, 1, 1);
        assert_eq!(call(&s, &b).unwrap().0.status(), Some(Status::UnknownOp));
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
            let _ = s.handle(&bytes, sender_of(&bytes), 0, &mut out, &mut copy);
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
            let _ = s.handle(&b, sender_of(&b), 0, &mut out, &mut copy);
        }
    }

    fn status_from(store: &Store, from: IpAddr, datagram: &[u8]) -> Option<Status> {
        let mut out = vec![0u8; wire::MAX_PAYLOAD_LEN];
        let mut copy = vec![0u8; wire::MAX_PAYLOAD_LEN];
        let (reply, pending) = store.handle(datagram, from, 0, &mut out, &mut copy);
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
        let (reply, pending) = s.handle(&stale, CLIENT_IP, 0, &mut out, &mut copy);
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
}
