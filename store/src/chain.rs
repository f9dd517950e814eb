//! A store's part in chain replication across racks (docs/chain.md): what it forwarded to the
//! next rack and is still waiting to hear acknowledged, and whom to pass each acknowledgement
//! on to.
//!
//! - A store that applied a write (a client's PUT in the head rack, a CHAIN_PUT elsewhere)
//!   forwards it as CHAIN_PUT to the key's home in the next rack, keeps it in a bounded queue
//!   ([`CHAIN_QUEUE_MAX`]) and sends it again on a doubling timeout ([`CHAIN_RETRY_MIN`] to
//!   [`CHAIN_RETRY_MAX`]) until a CHAIN_ACK of its version (or a newer one) comes back.
//! - A CHAIN_ACK of version `v` for a key trims every queued write of that key up to `v` (the
//!   tail holds `v` or newer, so it holds them or what overwrote them) and is passed on to the
//!   previous rack's servers that sent those writes.
//! - Nothing here decides whether a write applies: that is the table's write rule, the same in
//!   every rack, so that retransmissions in any order converge.
//!
//! Limits: at most [`CHAIN_QUEUE_MAX`] writes wait (plus one per worker admitted at the same
//! moment); when the queue is full a store takes no new write (it is neither applied nor
//! acknowledged, and its sender retries).

use hashbrown::HashMap;
use pegasus_common::{
    directory::{self, ServerSet},
    placement::Placement,
    wire::{self, Header, Message, Op, ReplyTo},
};
use std::{
    net::{IpAddr, SocketAddr, SocketAddrV4},
    sync::{
        Mutex, RwLock,
        atomic::{AtomicU16, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

/// Most forwarded writes waiting for their acknowledgement, per store.
pub const CHAIN_QUEUE_MAX: usize = 16_384;
/// First retransmission timeout of a forwarded write.
pub const CHAIN_RETRY_MIN: Duration = Duration::from_millis(40);
/// Longest retransmission timeout (the timeout doubles up to it).
pub const CHAIN_RETRY_MAX: Duration = Duration::from_millis(640);
/// [`Chain::copied_to`] when no copy is complete.
const NOT_COPIED: u16 = u16::MAX;
/// Most keys whose committed version a store remembers (16 bytes each); beyond it, reads of
/// further keys are sent to the tail (slower, never wrong).
pub const COMMITTED_KEYS_MAX: usize = 1 << 20;

/// Where a store sits in its chain: the servers of the racks before and after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainLinks {
    /// The previous rack's servers (id, address); empty in the head rack.
    pub previous: Vec<(u8, SocketAddr)>,
    /// The next rack's servers; empty in the tail rack.
    pub next: Vec<(u8, SocketAddr)>,
    /// In the head: the oldest version epoch a client's write may be stamped with (the
    /// chain's configuration raises it when a new rack becomes head; 0: any).
    pub version_epoch: u16,
    /// The rack was taken out of the chain: it serves no client and takes no write.
    pub removed: bool,
    /// The rack is joining the chain behind the tail (`previous` is the tail): it takes the
    /// tail's writes and copies and answers the writes' clients, but serves no read yet.
    pub joining: bool,
}

impl ChainLinks {
    /// True when there is a chain at all (a single rack has neither neighbour; a rack that
    /// follows a chain's membership is one even before it has a place in it).
    pub fn is_chain(&self) -> bool {
        !self.previous.is_empty() || !self.next.is_empty() || self.removed || self.joining
    }
}

/// Where a store stands in its chain ([`Chain::place`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// In the head rack: clients' writes enter here.
    pub head: bool,
    /// In the tail rack (or joining behind it): writes are answered here.
    pub tail: bool,
    /// Neither taken out of the chain nor still joining: clients' reads are served.
    pub serves_reads: bool,
    /// The oldest version epoch the head takes clients' writes in.
    pub version_epoch: u16,
}

/// A message to send: its bytes and where.
pub type Outgoing = (Vec<u8>, SocketAddr);

/// What a store counts of its chain traffic.
#[derive(Default, Debug)]
pub struct ChainStats {
    pub forwarded: AtomicU64,
    pub retransmitted: AtomicU64,
    pub acks_received: AtomicU64,
    pub acks_sent: AtomicU64,
    /// Writes not taken because the queue was full.
    pub queue_full: AtomicU64,
}

/// A forwarded write waiting for its acknowledgement.
struct Waiting {
    version: u64,
    bytes: Vec<u8>,
    to: SocketAddr,
    /// The previous rack's servers that sent this write (or an older one of the key that it
    /// covers): each gets the acknowledgement.
    upstream: ServerSet,
    next_send: Instant,
    timeout: Duration,
}

#[derive(Default)]
struct Queue {
    /// Key hash -> its writes waiting (a handful at most per key: a newer write's ack covers
    /// the older ones).
    by_key: HashMap<u64, Vec<Waiting>>,
    len: usize,
}

/// The chain state of one store.
pub struct Chain {
    server_id: u8,
    /// Keys' homes in the next rack (none without one); changes with `links`, under its lock.
    next_placement: RwLock<Option<Placement>>,
    /// Replaced whole when the chain's configuration changes ([`Chain::reconfigure`]); taken
    /// before the queue's lock when both are.
    links: RwLock<ChainLinks>,
    /// Changes of `links` so far.
    generation: AtomicU64,
    /// The rack every key was copied to ([`NOT_COPIED`]: none), for the links in force.
    copied_to: AtomicU16,
    queue: Mutex<Queue>,
    /// Key hash -> the newest version this store knows committed (held by the tail): from
    /// the acknowledgements it received. At most [`COMMITTED_KEYS_MAX`] keys.
    committed: Mutex<HashMap<u64, u64>>,
    pub stats: ChainStats,
}

/// A forwarded write that a reconfiguration settled: this rack became the tail, so the write
/// is complete here; its client is answered and its senders acknowledged.
#[derive(Debug)]
pub struct Settled {
    /// The CHAIN_PUT as it was forwarded (key, version, client and request ids, reply-to).
    pub bytes: Vec<u8>,
    /// The previous rack's servers that sent it.
    pub upstream: ServerSet,
}

/// What a reconfiguration leaves to send.
#[derive(Debug, Default)]
pub struct Reconfigured {
    /// Every queued write, sent at once to its home in the new next rack (which lacks what
    /// the rack that left lacked; duplicates are harmless).
    pub resend: Vec<Outgoing>,
    /// Queued writes completed here: this rack is the tail now.
    pub settled: Vec<Settled>,
    /// This rack was the tail and has a successor now (a rack joining): every key it holds
    /// must be copied to it.
    pub copy: bool,
}

/// What to do with a write the store is about to apply.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward {
    /// Apply it, then [`Chain::forward`] it.
    Apply,
    /// Do not take it: the queue is full (its sender retries).
    QueueFull,
}

impl Chain {
    /// The chain state of server `server_id`, between the racks `links` names.
    pub fn new(server_id: u8, links: ChainLinks) -> Chain {
        Chain {
            server_id,
            next_placement: RwLock::new(placement_of(&links.next)),
            links: RwLock::new(links),
            generation: AtomicU64::new(0),
            copied_to: AtomicU16::new(NOT_COPIED),
            queue: Mutex::default(),
            committed: Mutex::default(),
            stats: ChainStats::default(),
        }
    }

    fn links(&self) -> std::sync::RwLockReadGuard<'_, ChainLinks> {
        self.links.read().expect("chain links poisoned")
    }

    /// The links in force.
    pub fn current_links(&self) -> ChainLinks {
        self.links().clone()
    }

    /// The joining rack this store has copied every key to (each copy acknowledged), if it
    /// has finished since the links last changed.
    pub fn copied_to(&self) -> Option<u8> {
        match self.copied_to.load(Relaxed) {
            NOT_COPIED => None,
            rack => Some(rack as u8),
        }
    }

    /// Records that every key is copied to rack `rack` (see [`Chain::copied_to`]), unless the
    /// links changed since the copy began (`generation` is [`Chain::generation`] then).
    pub fn set_copied_to(&self, rack: u8, generation: u64) {
        let _links = self.links();
        if self.generation.load(Relaxed) == generation {
            self.copied_to.store(u16::from(rack), Relaxed);
        }
    }

    /// Counts changes of the links: a copy begun under one generation is void under another.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Where the store stands now, read under one lock (once per request).
    pub fn place(&self) -> Place {
        let links = self.links();
        Place {
            head: links.previous.is_empty() && !links.removed,
            tail: links.next.is_empty() && !links.removed,
            serves_reads: !links.removed && !links.joining,
            version_epoch: links.version_epoch,
        }
    }

    /// True in the tail rack: writes are answered here, and reads served.
    pub fn is_tail(&self) -> bool {
        self.place().tail
    }

    /// The previous rack's server id at `address`, if it is one (CHAIN_PUTs come only from
    /// them).
    pub fn previous_server_at(&self, address: IpAddr) -> Option<u8> {
        self.links()
            .previous
            .iter()
            .find(|(_, a)| a.ip() == address)
            .map(|&(id, _)| id)
    }

    /// True when `address` is one of the next rack's servers (CHAIN_ACKs come only from them).
    pub fn is_next_server(&self, address: IpAddr) -> bool {
        self.links().next.iter().any(|(_, a)| a.ip() == address)
    }

    /// Puts a new configuration in force. With a new next rack, every queued write is sent
    /// to it at once (chain replication's repair: the queue holds every write the tail has
    /// not acknowledged, a superset of what the new successor lacks). With no next rack any
    /// more, the queue is settled: this rack is the tail, every queued write is complete.
    /// A tail that gets a next rack (one joining) knows every version it holds committed
    /// (`held()`, called under the links' lock) and must copy every key to it
    /// ([`Reconfigured::copy`]).
    pub fn reconfigure(
        &self,
        new: ChainLinks,
        now: Instant,
        held: impl FnOnce() -> Vec<(u64, u64)>,
    ) -> Reconfigured {
        let mut links = self.links.write().expect("chain links poisoned");
        if *links == new {
            return Reconfigured::default();
        }
        self.generation.fetch_add(1, Relaxed);
        self.copied_to.store(NOT_COPIED, Relaxed);
        let next_changed = links.next != new.next;
        let was_tail = links.next.is_empty() && !links.removed && !links.joining;
        *self.next_placement.write().expect("placement poisoned") = placement_of(&new.next);
        *links = new;
        let mut done = Reconfigured::default();
        if !next_changed || links.removed {
            return done;
        }
        if was_tail && !links.next.is_empty() {
            // Everything held now was committed (this rack was the tail): its reads stay
            // served while the new successor catches up.
            let mut committed = self.committed.lock().expect("committed versions poisoned");
            for (keyhash, version) in held() {
                if committed.len() >= COMMITTED_KEYS_MAX {
                    break;
                }
                let known = committed.entry(keyhash).or_insert(version);
                *known = (*known).max(version);
            }
            done.copy = true;
        }
        let mut queue = self.lock();
        if links.next.is_empty() {
            for (_, waiting) in queue.by_key.drain() {
                done.settled.extend(waiting.into_iter().map(|w| Settled {
                    bytes: w.bytes,
                    upstream: w.upstream,
                }));
            }
            queue.len = 0;
            return done;
        }
        let placement = self.next_placement.read().expect("placement poisoned");
        let placement = placement.as_ref().expect("a next rack has its placement");
        for (&keyhash, waiting) in queue.by_key.iter_mut() {
            let to = home_in(&links.next, placement.home(keyhash));
            for w in waiting {
                w.to = to;
                w.timeout = CHAIN_RETRY_MIN;
                w.next_send = now + CHAIN_RETRY_MIN;
                done.resend.push((w.bytes.clone(), to));
            }
        }
        self.stats
            .retransmitted
            .fetch_add(done.resend.len() as u64, Relaxed);
        done
    }

    /// Writes waiting for their acknowledgement.
    pub fn queued(&self) -> usize {
        self.lock().len
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("chain queue poisoned")
    }

    /// Whether a write of `keyhash` may be taken (applied, then forwarded): not when the queue
    /// is full, unless the write is already queued (a retransmission costs no room).
    pub fn admit(&self, keyhash: u64, version: u64) -> Forward {
        let queue = self.lock();
        let queued = queue
            .by_key
            .get(&keyhash)
            .is_some_and(|w| w.iter().any(|w| w.version >= version));
        if queue.len >= CHAIN_QUEUE_MAX && !queued {
            self.stats.queue_full.fetch_add(1, Relaxed);
            return Forward::QueueFull;
        }
        Forward::Apply
    }

    /// Whether the write of `keyhash` with `version` is still waiting for its acknowledgement
    /// (false: the tail holds it or a newer version, or it was never forwarded).
    pub fn is_waiting(&self, keyhash: u64, version: u64) -> bool {
        self.lock()
            .by_key
            .get(&keyhash)
            .is_some_and(|w| w.iter().any(|w| w.version == version))
    }

    /// Forwards an applied write (`request`: the client's PUT or the CHAIN_PUT that brought
    /// it, with its stamped version) to the key's home in the next rack, and queues it. `from`
    /// is the previous rack's server that sent it (`None` in the head). Returns what to send
    /// now: the CHAIN_PUT (again, if it was queued already: its sender retried); `None` when
    /// there is no next rack any more (a reconfiguration made this rack the tail: the write's
    /// sender retries, and the tail answers it).
    pub fn forward(
        &self,
        request: &Message<'_>,
        reply_to: ReplyTo,
        from: Option<u8>,
        load: u16,
        now: Instant,
    ) -> Option<Outgoing> {
        let links = self.links();
        if links.next.is_empty() || links.removed {
            return None;
        }
        let h = &request.header;
        let upstream = from.map_or(0, directory::bit);
        let mut queue = self.lock();
        let waiting = queue.by_key.entry(h.keyhash).or_default();
        if let Some(w) = waiting.iter_mut().find(|w| w.version == h.version) {
            // Sent before: its sender retried, so send it again now.
            w.upstream |= upstream;
            self.stats.retransmitted.fetch_add(1, Relaxed);
            return Some((w.bytes.clone(), w.to));
        }
        // Even a write older than one already on its way is sent on: the tail answers its
        // client when it arrives there (with the newer version it holds).
        let to = {
            let placement = self.next_placement.read().expect("placement poisoned");
            let placement = placement.as_ref().expect("a next rack has its placement");
            home_in(&links.next, placement.home(h.keyhash))
        };
        let header = Header {
            op_code: Op::ChainPut as u8,
            server_id: self.server_id,
            flags: wire::flags::STAMPED | (h.flags & wire::flags::HOT),
            replica_bitmap: 0,
            load,
            status: 0,
            ..*h
        };
        let bytes = Message {
            header,
            key: request.key,
            value: request.value,
            reply_to: Some(reply_to),
        }
        .to_vec()
        .expect("a client's write fits in a CHAIN_PUT (wire::max_value_len)");
        waiting.push(Waiting {
            version: h.version,
            bytes: bytes.clone(),
            to,
            upstream,
            next_send: now + CHAIN_RETRY_MIN,
            timeout: CHAIN_RETRY_MIN,
        });
        queue.len += 1;
        self.stats.forwarded.fetch_add(1, Relaxed);
        Some((bytes, to))
    }

    /// The newest version of `keyhash` this store knows committed (0: none known).
    pub fn committed(&self, keyhash: u64) -> u64 {
        let committed = self.committed.lock().expect("committed versions poisoned");
        committed.get(&keyhash).copied().unwrap_or(0)
    }

    /// A CHAIN_ACK of `version` for `keyhash` from the next rack: trims what it covers,
    /// remembers the version as committed, and returns the acknowledgements to pass on to the
    /// previous rack.
    pub fn acknowledged(&self, ack: &Header, load: u16) -> Vec<Outgoing> {
        self.stats.acks_received.fetch_add(1, Relaxed);
        {
            let mut committed = self.committed.lock().expect("committed versions poisoned");
            let known = committed.len();
            match committed.get_mut(&ack.keyhash) {
                Some(v) => *v = (*v).max(ack.version),
                None if known < COMMITTED_KEYS_MAX => {
                    committed.insert(ack.keyhash, ack.version);
                }
                None => {}
            }
        }
        let mut upstream: ServerSet = 0;
        {
            let mut queue = self.lock();
            let Some(waiting) = queue.by_key.get_mut(&ack.keyhash) else {
                return Vec::new();
            };
            let before = waiting.len();
            waiting.retain(|w| {
                let covered = w.version <= ack.version;
                if covered {
                    upstream |= w.upstream;
                }
                !covered
            });
            let trimmed = before - waiting.len();
            if waiting.is_empty() {
                queue.by_key.remove(&ack.keyhash);
            }
            queue.len -= trimmed;
        }
        self.acks_to(upstream, ack.keyhash, ack.version, ack, load)
    }

    /// The CHAIN_ACK of `version` for `keyhash` to each previous-rack server in `to`.
    pub fn acks_to(
        &self,
        to: ServerSet,
        keyhash: u64,
        version: u64,
        write: &Header,
        load: u16,
    ) -> Vec<Outgoing> {
        let header = Header {
            keyhash,
            version,
            request_id: write.request_id,
            client_id: write.client_id,
            server_id: self.server_id,
            load,
            ..Header::new(Op::ChainAck)
        };
        let bytes = Message::new(header, &[], &[])
            .to_vec()
            .expect("an ack has no body");
        let acks: Vec<Outgoing> = self
            .links()
            .previous
            .iter()
            .filter(|&&(id, _)| to & directory::bit(id) != 0)
            .map(|&(_, address)| (bytes.clone(), address))
            .collect();
        self.stats.acks_sent.fetch_add(acks.len() as u64, Relaxed);
        acks
    }

    /// The writes whose timeout passed by `now`, to send again (each timeout doubles).
    pub fn due(&self, now: Instant) -> Vec<Outgoing> {
        let mut queue = self.lock();
        let mut due = Vec::new();
        for w in queue.by_key.values_mut().flatten() {
            if w.next_send <= now {
                w.timeout = (w.timeout * 2).min(CHAIN_RETRY_MAX);
                w.next_send = now + w.timeout;
                due.push((w.bytes.clone(), w.to));
            }
        }
        self.stats
            .retransmitted
            .fetch_add(due.len() as u64, Relaxed);
        due
    }
}

/// Where keys live in a rack of `servers` (none for no rack).
fn placement_of(servers: &[(u8, SocketAddr)]) -> Option<Placement> {
    (!servers.is_empty()).then(|| Placement::new(servers.iter().map(|&(id, _)| id)))
}

/// The address of server `home` among a rack's `servers`.
fn home_in(servers: &[(u8, SocketAddr)], home: u8) -> SocketAddr {
    servers
        .iter()
        .find(|&&(id, _)| id == home)
        .map(|&(_, a)| a)
        .expect("every rack of a chain has the same server ids")
}

/// The reply address of a CHAIN_PUT that copies a key to a joining rack: no client.
pub const NO_CLIENT: ReplyTo = ReplyTo {
    ipv4: [0; 4],
    port: 0,
};

/// A client's address as a CHAIN_PUT carries it (IPv4 only: the lab and the switch are).
pub fn reply_to_of(address: SocketAddr) -> Option<ReplyTo> {
    match address {
        SocketAddr::V4(a) => Some(ReplyTo {
            ipv4: a.ip().octets(),
            port: a.port(),
        }),
        SocketAddr::V6(_) => None,
    }
}

/// The address a CHAIN_PUT's reply goes to.
pub fn reply_address(reply_to: ReplyTo) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(reply_to.ipv4.into(), reply_to.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pegasus_common::hash::key_hash;

    fn addr(rack: u8, id: u8) -> SocketAddr {
        format!("10.{rack}.{id}.2:7400").parse().unwrap()
    }

    fn middle() -> Chain {
        Chain::new(
            1,
            ChainLinks {
                previous: (0..3).map(|i| (i, addr(1, i))).collect(),
                next: (0..3).map(|i| (i, addr(33, i))).collect(),
                ..ChainLinks::default()
            },
        )
    }

    const CLIENT: ReplyTo = ReplyTo {
        ipv4: [10, 2, 0, 2],
        port: 5000,
    };

    fn write(key: &'static [u8], version: u64) -> Message<'static> {
        let mut h = Header::new(Op::ChainPut);
        h.keyhash = key_hash(key);
        h.version = version;
        h.request_id = version as u32;
        h.flags = wire::flags::STAMPED | wire::flags::HOT;
        h.replica_bitmap = 0b110;
        Message {
            header: h,
            key,
            value: b"v",
            reply_to: Some(CLIENT),
        }
    }

    #[test]
    fn a_forwarded_write_goes_to_the_home_in_the_next_rack_and_waits_for_its_ack() {
        let c = middle();
        let now = Instant::now();
        let (bytes, to) = c.forward(&write(b"k", 5), CLIENT, Some(2), 7, now).unwrap();
        let m = Message::decode(&bytes).unwrap();
        let home = Placement::new(0..3).home(key_hash(b"k"));
        assert_eq!(to, addr(33, home));
        assert_eq!(m.header.op(), Some(Op::ChainPut));
        assert_eq!(
            (m.header.version, m.header.server_id, m.header.load),
            (5, 1, 7)
        );
        assert_eq!(
            m.header.replica_bitmap, 0,
            "copies are the next rack's business"
        );
        assert_eq!(m.reply_to, Some(CLIENT));
        assert_eq!(m.value, b"v");
        assert!(c.is_waiting(key_hash(b"k"), 5));
        // Not due before its timeout; due after, then later again (doubled).
        assert!(c.due(now).is_empty());
        assert_eq!(c.due(now + CHAIN_RETRY_MIN).len(), 1);
        assert!(c.due(now + CHAIN_RETRY_MIN * 2).is_empty());
        assert_eq!(c.due(now + CHAIN_RETRY_MIN * 3).len(), 1);
        // The ack trims it and goes back to the server that sent it.
        let mut ack = Header::new(Op::ChainAck);
        ack.keyhash = key_hash(b"k");
        ack.version = 5;
        let acks = c.acknowledged(&ack, 0);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].1, addr(1, 2));
        let back = Message::decode(&acks[0].0).unwrap().header;
        assert_eq!(
            (back.op(), back.version, back.server_id),
            (Some(Op::ChainAck), 5, 1)
        );
        assert_eq!(c.queued(), 0);
        assert!(c.due(now + CHAIN_RETRY_MAX * 4).is_empty());
    }

    #[test]
    fn an_ack_covers_older_versions_and_not_newer_ones() {
        let c = middle();
        let now = Instant::now();
        for (v, from) in [(3, 0), (4, 1), (9, 2)] {
            c.forward(&write(b"k", v), CLIENT, Some(from), 0, now)
                .unwrap();
        }
        c.forward(&write(b"other", 4), CLIENT, Some(0), 0, now)
            .unwrap();
        let mut ack = Header::new(Op::ChainAck);
        ack.keyhash = key_hash(b"k");
        ack.version = 4;
        let mut to: Vec<SocketAddr> = c.acknowledged(&ack, 0).into_iter().map(|a| a.1).collect();
        to.sort();
        assert_eq!(to, vec![addr(1, 0), addr(1, 1)]);
        assert_eq!(c.queued(), 2);
        assert!(c.is_waiting(key_hash(b"k"), 9) && c.is_waiting(key_hash(b"other"), 4));
    }

    #[test]
    fn a_repeated_write_is_sent_again_and_an_older_one_too() {
        let c = middle();
        let now = Instant::now();
        let first = c.forward(&write(b"k", 8), CLIENT, Some(0), 0, now).unwrap();
        // The same write from another sender: the same bytes sent again at once, both
        // senders acked later.
        assert_eq!(
            c.forward(&write(b"k", 8), CLIENT, Some(1), 0, now).unwrap(),
            first
        );
        // An older write of the key, after the newer one: sent on all the same (the tail
        // answers its client), and the newer one's ack covers it.
        let older = c.forward(&write(b"k", 6), CLIENT, Some(2), 0, now).unwrap();
        assert_eq!(Message::decode(&older.0).unwrap().header.version, 6);
        assert_eq!(c.queued(), 2);
        let mut ack = Header::new(Op::ChainAck);
        ack.keyhash = key_hash(b"k");
        ack.version = 8;
        assert_eq!(c.acknowledged(&ack, 0).len(), 3);
        // A stray ack changes nothing.
        assert!(c.acknowledged(&ack, 0).is_empty());
    }

    #[test]
    fn a_full_queue_takes_no_new_write_but_retransmissions() {
        let c = middle();
        let now = Instant::now();
        for v in 1..=CHAIN_QUEUE_MAX as u64 {
            let mut m = write(b"k", v);
            m.header.keyhash = v;
            c.forward(&m, CLIENT, Some(0), 0, now).unwrap();
        }
        assert_eq!(c.queued(), CHAIN_QUEUE_MAX);
        assert_eq!(c.admit(7, 7), Forward::Apply);
        assert_eq!(c.admit(key_hash(b"new"), 1), Forward::QueueFull);
    }

    #[test]
    fn acks_teach_the_committed_version() {
        let c = middle();
        let k = key_hash(b"k");
        assert_eq!(c.committed(k), 0);
        let mut ack = Header::new(Op::ChainAck);
        ack.keyhash = k;
        ack.version = 9;
        c.acknowledged(&ack, 0);
        assert_eq!(c.committed(k), 9);
        ack.version = 4;
        c.acknowledged(&ack, 0);
        assert_eq!(c.committed(k), 9, "it only grows");
    }

    #[test]
    fn senders_are_known_by_address() {
        let c = middle();
        assert_eq!(c.previous_server_at(addr(1, 2).ip()), Some(2));
        assert_eq!(c.previous_server_at(addr(33, 2).ip()), None);
        assert!(c.is_next_server(addr(33, 0).ip()) && !c.is_next_server(addr(1, 0).ip()));
        let place = c.place();
        assert!(!place.head && !place.tail && place.serves_reads);
    }
}
