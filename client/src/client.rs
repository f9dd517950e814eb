//! The async client: one UDP socket, many outstanding requests, replies matched by request id.
//!
//! A request goes to its key's home server (the switch may steer it to another); in a chain of
//! racks, a write to the home in the head rack, a read to the home in the tail rack (the tail
//! answers both: docs/chain.md). If no reply
//! comes within the timeout, the same bytes (same client id and request id, the RETRY flag set)
//! are sent again, up to `attempts` times, so that the switch gives the retry its write's
//! version again and a store that already applied it answers from its deduplication table.
//! Client ids are random and request ids start at a random point, so a restarted client does
//! not collide with its earlier self.
//!
//! At-most-once writes ([`pegasus_common::once`]) ask two things of a client, both kept here:
//! - writes take their request ids from their own sequence (with [`WRITE_ID_BIT`]), and
//!   write `r + WRITE_WINDOW` is not sent before write `r` has ended ([`WriteWindow`]);
//! - every write carries the switch epoch the client last learned (from write replies). A
//!   write refused with `StaleEpoch` that carried no epoch was never applied, and is sent
//!   again with the epoch the refusal taught; one that carried an older epoch was sent before
//!   a switch restart and may have been applied then: it ends as
//!   [`ClientError::Indeterminate`].

use crate::{cluster::Cluster, placement::Placement};
use pegasus_common::{
    hash::key_hash,
    once::WRITE_ID_BIT,
    version,
    wire::{self, Header, Message, Op, Status},
};
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU16, AtomicU32, Ordering},
    },
    time::Duration,
};
use tokio::{
    net::UdpSocket,
    sync::{Notify, oneshot},
    task::JoinHandle,
};

/// Most requests one client may have outstanding (bounds the pending table).
pub const OUTSTANDING_MAX: usize = 65_536;

/// Which rack of a chain a read goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// The tail, which holds every acknowledged write.
    #[default]
    Tail,
    /// Any rack, chosen at random for each read: a rack answers when it knows its version
    /// committed, and otherwise says so, and the read goes to the tail (docs/chain.md).
    Any,
}

impl std::str::FromStr for ReadFrom {
    type Err = String;
    fn from_str(text: &str) -> Result<ReadFrom, String> {
        match text {
            "tail" => Ok(ReadFrom::Tail),
            "any" => Ok(ReadFrom::Any),
            _ => Err(format!("{text:?}: reads go to the `tail` or to `any` rack")),
        }
    }
}

/// Timeouts and retries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long to wait for a reply before sending the request again.
    pub timeout: Duration,
    /// How many times a request is sent in all (first try included).
    pub attempts: u32,
    /// The client id; random when `None`.
    pub client_id: Option<u16>,
    /// In a chain of racks, where reads go.
    pub read_from: ReadFrom,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_millis(200),
            attempts: 5,
            client_id: None,
            read_from: ReadFrom::Tail,
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no reply after {attempts} attempts ({timeout:?} each)")]
    Timeout { attempts: u32, timeout: Duration },
    #[error("the store refused the request: {}", .0.describe())]
    Refused(Status),
    #[error("the key is longer than {} bytes", wire::MAX_KEY_LEN)]
    KeyTooLarge,
    #[error("the value is too large: at most {max} bytes fit in one datagram with this key")]
    ValueTooLarge { max: usize },
    #[error("too many outstanding requests (at most {OUTSTANDING_MAX})")]
    TooManyOutstanding,
    #[error("unexpected reply: {0}")]
    Protocol(String),
    #[error(
        "the last retry would leave {0:?} after the first attempt; the switch pins retries \
         for {window:?} (fewer attempts or a shorter timeout)",
        window = std::time::Duration::from_nanos(pegasus_common::switch::RETRY_WINDOW_NS)
    )]
    RetryWindow(Duration),
    #[error("a request must be sent at least once (attempts >= 1)")]
    NoAttempts,
    #[error(
        "the switch restarted, or the chain changed its head, while this write was \
         outstanding: it may or may not have been applied (it will not be applied later)"
    )]
    Indeterminate,
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
}

/// A read's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The value, or `None` if the key does not exist.
    pub value: Option<Vec<u8>>,
    /// Its version (0 if none).
    pub version: u64,
    /// The store that answered.
    pub server_id: u8,
    /// That store's load when it answered.
    pub load: u16,
}

/// A write's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// The version the store held for the key after the write: the write's own (stamped by
    /// the switch), or a newer one that had already superseded it; 0 when no switch stamps
    /// versions.
    pub version: u64,
    /// The store that applied it.
    pub server_id: u8,
    /// That store's load when it answered.
    pub load: u16,
}

/// First wait before a read refused as not committed by the tail is sent again (a rack is
/// joining behind it: the version is committed a round trip later); doubling up to
/// [`NOT_COMMITTED_WAIT_MAX`], then the read fails.
const NOT_COMMITTED_WAIT_MIN: Duration = Duration::from_millis(1);
const NOT_COMMITTED_WAIT_MAX: Duration = Duration::from_millis(128);

/// A decoded reply.
#[derive(Debug)]
struct Reply {
    header: Header,
    value: Vec<u8>,
}

type Pending = Mutex<HashMap<u32, oneshot::Sender<Reply>>>;

/// A client of one rack.
pub struct Client {
    socket: Arc<UdpSocket>,
    cluster: Cluster,
    /// Where requests go; replaced when a chain's membership changes.
    racks: Arc<RwLock<Racks>>,
    placement: Placement,
    client_id: u16,
    /// Reads' request ids (the write bit clear).
    next_request_id: AtomicU32,
    writes: WriteWindow,
    /// The switch epoch last learned (0: none yet).
    epoch: AtomicU16,
    pending: Arc<Pending>,
    options: ClientOptions,
    receiver: JoinHandle<()>,
    /// Follows a chain's membership in etcd (with a cluster that names it).
    follower: Option<JoinHandle<()>>,
}

/// The racks a client sends to.
struct Racks {
    /// The rack that takes writes (the head of a chain) and the one that takes reads (its
    /// tail); the same rack when there is one.
    writes_to: Arc<Cluster>,
    reads_from: Arc<Cluster>,
    /// Every rack, head first (one for a single rack).
    all: Vec<Arc<Cluster>>,
}

impl Racks {
    fn of(cluster: &Cluster) -> Racks {
        Racks {
            writes_to: Arc::new(cluster.head()),
            reads_from: Arc::new(cluster.tail()),
            all: (0..cluster.rack_count())
                .map(|r| Arc::new(cluster.rack(r).expect("a valid cluster has its racks")))
                .collect(),
        }
    }
}

/// Keeps `racks` as the chain's configuration in etcd says (head and tail), for as long as
/// the client lives; while etcd is away, the last ones stay.
async fn follow_membership(etcd: crate::cluster::EtcdRef, racks: Arc<RwLock<Racks>>) {
    let etcd = loop {
        match crate::membership::Etcd::connect(&etcd.url, &etcd.chain).await {
            Ok(e) => break e,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let (sender, mut configs) = tokio::sync::watch::channel(None);
    let (reachable, _) = tokio::sync::watch::channel(false);
    tokio::spawn(etcd.follow(sender, reachable));
    while configs.changed().await.is_ok() {
        let Some(v) = configs.borrow_and_update().clone() else {
            continue;
        };
        let cluster = v.config.to_cluster(None);
        *racks.write().expect("racks poisoned") = Racks::of(&cluster);
    }
}

impl Client {
    /// Opens a UDP socket (any local port) and starts the reply receiver.
    pub async fn connect(cluster: Cluster, options: ClientOptions) -> Result<Client, ClientError> {
        if options.attempts == 0 {
            return Err(ClientError::NoAttempts);
        }
        let last_retry = options.timeout * (options.attempts - 1);
        if last_retry.as_nanos() >= pegasus_common::switch::RETRY_WINDOW_NS as u128 {
            return Err(ClientError::RetryWindow(last_retry));
        }
        let socket = Arc::new(UdpSocket::bind("0.0.0.0:0").await?);
        let pending: Arc<Pending> = Arc::default();
        let receiver = tokio::spawn(receive_replies(socket.clone(), pending.clone()));
        let placement = Placement::new(cluster.server_ids());
        let racks = Arc::new(RwLock::new(Racks::of(&cluster)));
        let follower = cluster
            .etcd
            .clone()
            .filter(|_| !cluster.racks.is_empty())
            .map(|etcd| tokio::spawn(follow_membership(etcd, racks.clone())));
        Ok(Client {
            socket,
            placement,
            racks,
            follower,
            cluster,
            client_id: options
                .client_id
                .unwrap_or_else(|| rand::random_range(0..wire::CONTROLLER_CLIENT_ID)),
            next_request_id: AtomicU32::new(rand::random()),
            writes: WriteWindow::new(rand::random()),
            epoch: AtomicU16::new(0),
            pending,
            options,
            receiver,
        })
    }

    /// This client's id.
    pub fn client_id(&self) -> u16 {
        self.client_id
    }

    /// The rack.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The home server id of `key`.
    pub fn home_of(&self, key: &[u8]) -> u8 {
        self.placement.home(key_hash(key))
    }

    /// The switch epoch this client last learned (0: none yet).
    pub fn epoch(&self) -> u16 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Reads `key` (in a chain, from the tail, or from any rack: [`ReadFrom`]).
    pub async fn get(&self, key: &[u8]) -> Result<ReadResult, ClientError> {
        let (rack, tail) = {
            let racks = self.racks.read().expect("racks poisoned");
            let rack = match self.options.read_from {
                ReadFrom::Tail => racks.reads_from.clone(),
                ReadFrom::Any => racks.all[rand::random_range(0..racks.all.len())].clone(),
            };
            (rack, racks.reads_from.clone())
        };
        let not_committed = |r: &Reply| {
            r.header.op() == Some(Op::Error) && r.header.status() == Some(Status::NotCommitted)
        };
        let mut reply = self.read_at(&rack, key).await?;
        let mut wait = NOT_COMMITTED_WAIT_MIN;
        while not_committed(&reply) {
            // That rack's copy is not known committed yet: the tail holds what it must. (A
            // tail with a rack joining behind it serves committed versions only, and its
            // newest is committed a round trip later: ask again shortly.)
            if wait > NOT_COMMITTED_WAIT_MAX {
                return Err(unexpected(&reply.header, "GET"));
            }
            if Arc::ptr_eq(&rack, &tail) || wait > NOT_COMMITTED_WAIT_MIN {
                tokio::time::sleep(wait).await;
            }
            wait *= 2;
            reply = self.read_at(&tail, key).await?;
        }
        match (reply.header.op(), reply.header.status()) {
            (Some(Op::GetReply), Some(Status::Ok)) => Ok(ReadResult {
                value: Some(reply.value),
                version: reply.header.version,
                server_id: reply.header.server_id,
                load: reply.header.load,
            }),
            (Some(Op::GetReply), Some(Status::NotFound)) => Ok(ReadResult {
                value: None,
                version: reply.header.version,
                server_id: reply.header.server_id,
                load: reply.header.load,
            }),
            _ => Err(unexpected(&reply.header, "GET")),
        }
    }

    async fn read_at(&self, rack: &Cluster, key: &[u8]) -> Result<Reply, ClientError> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed) & !WRITE_ID_BIT;
        self.request(rack, Op::Get, key, &[], request_id, 0).await
    }

    /// Writes `value` under `key`. Waits first while the write that is a window older is
    /// outstanding ([`WriteWindow`]).
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<WriteResult, ClientError> {
        let ticket = self.writes.enter().await;
        let request_id = ticket.request_id();
        let mut sent_epoch = self.epoch();
        loop {
            let head = self.racks.read().expect("racks poisoned").writes_to.clone();
            let reply = self
                .request(&head, Op::Put, key, value, request_id, sent_epoch)
                .await?;
            let h = &reply.header;
            match (h.op(), h.status()) {
                (Some(Op::PutReply), Some(Status::Ok)) => {
                    self.learn_epoch(version::epoch(h.version));
                    return Ok(WriteResult {
                        version: h.version,
                        server_id: h.server_id,
                        load: h.load,
                    });
                }
                (Some(Op::Error), Some(Status::StaleEpoch)) => {
                    let current = version::epoch(h.version);
                    self.learn_epoch(current);
                    // Sent with no epoch, no copy of it can ever be applied: send it again,
                    // once, with the epoch just learned. Otherwise it may have been applied
                    // before the switch restarted.
                    if sent_epoch != 0 || current == 0 {
                        return Err(ClientError::Indeterminate);
                    }
                    sent_epoch = current;
                }
                _ => return Err(unexpected(h, "PUT")),
            }
        }
    }

    /// Keeps the newest switch epoch seen.
    fn learn_epoch(&self, epoch: u16) {
        self.epoch.fetch_max(epoch, Ordering::Relaxed);
    }

    async fn request(
        &self,
        rack: &Cluster,
        op: Op,
        key: &[u8],
        value: &[u8],
        request_id: u32,
        epoch: u16,
    ) -> Result<Reply, ClientError> {
        if key.len() > wire::MAX_KEY_LEN {
            return Err(ClientError::KeyTooLarge);
        }
        let max = wire::max_value_len(key.len());
        if value.len() > max {
            return Err(ClientError::ValueTooLarge { max });
        }
        let keyhash = key_hash(key);
        let home = self.placement.home(keyhash);
        let addr = rack
            .server(home)
            .expect("placement only names servers of the cluster")
            .addr;
        let header =
            Header::request(op, keyhash, self.client_id, request_id, home).with_client_epoch(epoch);
        let message = Message::new(header, key, value);
        let mut bytes = message.to_vec().expect("sizes were checked above");

        let (tx, mut rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending table poisoned");
            if pending.len() >= OUTSTANDING_MAX {
                return Err(ClientError::TooManyOutstanding);
            }
            pending.insert(request_id, tx);
        }
        let _unregister = Unregister {
            pending: &self.pending,
            request_id,
        };
        for attempt in 0..self.options.attempts {
            if attempt == 1 {
                // Same request id, marked as a retry for the switch (and nothing else).
                bytes[wire::offset::FLAGS] |= wire::flags::RETRY;
            }
            if attempt > 0 && op == Op::Put && !self.is_head(rack) {
                // The chain has a new head: the old one may have applied and forwarded this
                // write, and the new one refuses it (its epoch is older), so it ends now, its
                // outcome unknown, rather than after every retry to a rack that is gone.
                return Err(ClientError::Indeterminate);
            }
            self.send(&bytes, addr).await?;
            if let Ok(result) = tokio::time::timeout(self.options.timeout, &mut rx).await {
                return result.map_err(|_| ClientError::Protocol("receiver stopped".into()));
            }
        }
        Err(ClientError::Timeout {
            attempts: self.options.attempts,
            timeout: self.options.timeout,
        })
    }

    /// Whether `rack` is (still) the rack that takes writes.
    fn is_head(&self, rack: &Cluster) -> bool {
        let racks = self.racks.read().expect("racks poisoned");
        std::ptr::eq(rack, Arc::as_ptr(&racks.writes_to))
    }

    async fn send(&self, bytes: &[u8], addr: SocketAddr) -> Result<(), ClientError> {
        let sent = self.socket.send_to(bytes, addr).await?;
        debug_assert_eq!(sent, bytes.len());
        Ok(())
    }
}

/// The span rule of at-most-once writes: write `n + WRITE_WINDOW` waits until write `n` has
/// ended. Writes are numbered by a 64-bit count that never wraps; a write's request id is the
/// count's low 31 bits with [`WRITE_ID_BIT`].
struct WriteWindow {
    state: Mutex<WriteWindowState>,
    ended: Notify,
}

struct WriteWindowState {
    next: u64,
    outstanding: BTreeSet<u64>,
}

impl WriteWindow {
    fn new(start: u32) -> WriteWindow {
        WriteWindow {
            state: Mutex::new(WriteWindowState {
                next: start as u64,
                outstanding: BTreeSet::new(),
            }),
            ended: Notify::new(),
        }
    }

    /// Takes the next write number and waits until it is within a window of the oldest
    /// write outstanding. The number counts as outstanding from the moment it is taken (so
    /// that a later write cannot pass an earlier one still waiting here and take its slot at
    /// the switch), until its ticket is dropped, however the write ends.
    async fn enter(&self) -> WriteTicket<'_> {
        let ticket = {
            let mut state = self.state.lock().expect("write window poisoned");
            let n = state.next;
            state.next += 1;
            state.outstanding.insert(n);
            WriteTicket { window: self, n }
        };
        loop {
            let ended = self.ended.notified();
            {
                let state = self.state.lock().expect("write window poisoned");
                let oldest = state.outstanding.first().copied().unwrap_or(ticket.n);
                // The switch's own span rule, on the request ids the two writes carry.
                if pegasus_common::once::within_window(write_id(oldest), ticket.request_id()) {
                    return ticket;
                }
            }
            ended.await;
        }
    }
}

/// An outstanding write: leaves the window when dropped, however the write ended.
struct WriteTicket<'a> {
    window: &'a WriteWindow,
    n: u64,
}

impl WriteTicket<'_> {
    fn request_id(&self) -> u32 {
        write_id(self.n)
    }
}

/// The request id of write number `n`: its low 31 bits, with the write bit.
fn write_id(n: u64) -> u32 {
    WRITE_ID_BIT | (n as u32 & !WRITE_ID_BIT)
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.window.state.lock() {
            state.outstanding.remove(&self.n);
        }
        self.window.ended.notify_waiters();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.receiver.abort();
        if let Some(follower) = &self.follower {
            follower.abort();
        }
    }
}

/// Removes a request from the pending table however its future ends (reply, timeout, drop).
struct Unregister<'a> {
    pending: &'a Pending,
    request_id: u32,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&self.request_id);
        }
    }
}

fn unexpected(header: &Header, what: &str) -> ClientError {
    match header.status() {
        Some(status) if status != Status::Ok => ClientError::Refused(status),
        _ => ClientError::Protocol(format!(
            "{what} answered with op {} status {}",
            header.op_code, header.status
        )),
    }
}

/// Delivers each reply to the request waiting for it; late or unknown replies are dropped.
async fn receive_replies(socket: Arc<UdpSocket>, pending: Arc<Pending>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.recv_from(&mut buf).await {
            Ok((n, _from)) => n,
            Err(e) => {
                tracing::debug!("client receive: {e}");
                continue;
            }
        };
        let Ok(message) = Message::decode(&buf[..n]) else {
            tracing::debug!("client: dropped an undecodable datagram of {n} bytes");
            continue;
        };
        let waiter = pending
            .lock()
            .expect("pending table poisoned")
            .remove(&message.header.request_id);
        if let Some(tx) = waiter {
            let _ = tx.send(Reply {
                header: message.header,
                value: message.value.to_vec(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pegasus_common::once::WRITE_WINDOW;

    fn cluster() -> Cluster {
        Cluster {
            controllers: Vec::new(),
            racks: Vec::new(),
            etcd: None,
            servers: vec![crate::cluster::ServerEntry {
                id: 0,
                addr: "127.0.0.1:7400".parse().unwrap(),
            }],
        }
    }

    #[tokio::test]
    async fn options_whose_retries_outlast_the_switch_window_are_refused() {
        let too_long = ClientOptions {
            timeout: Duration::from_millis(500),
            attempts: 6,
            ..ClientOptions::default()
        };
        let err = Client::connect(cluster(), too_long).await.err().unwrap();
        assert!(matches!(err, ClientError::RetryWindow(d) if d == Duration::from_millis(2500)));
        assert!(err.to_string().contains("pins retries"), "{err}");
        let none = ClientOptions {
            attempts: 0,
            ..ClientOptions::default()
        };
        assert!(matches!(
            Client::connect(cluster(), none).await.err().unwrap(),
            ClientError::NoAttempts
        ));
        assert!(
            Client::connect(cluster(), ClientOptions::default())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_write_waits_while_the_write_a_window_older_is_outstanding() {
        let window = WriteWindow::new(u32::MAX - 3);
        let mut tickets = Vec::new();
        for _ in 0..WRITE_WINDOW {
            tickets.push(window.enter().await);
        }
        let ids: Vec<u32> = tickets.iter().map(WriteTicket::request_id).collect();
        assert!(ids.iter().all(|id| id & WRITE_ID_BIT != 0));
        assert_eq!(ids[0] & !WRITE_ID_BIT, (u32::MAX - 3) & !WRITE_ID_BIT);
        // The count wraps in 31 bits, the switch's serial arithmetic with it.
        assert_eq!(ids[4], WRITE_ID_BIT);
        let next = window.enter();
        tokio::pin!(next);
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut next).await;
        assert!(
            waited.is_err(),
            "write n + window went out before write n ended"
        );
        // Ending a newer write does not help; ending the oldest does.
        tickets.remove(5);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut next)
                .await
                .is_err()
        );
        tickets.remove(0);
        let ticket = tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .expect("the oldest write ended");
        assert!(pegasus_common::once::within_window(
            tickets[0].request_id(),
            ticket.request_id()
        ));
    }

    /// A write still waiting to enter keeps its place: 64 later writes cannot all pass it
    /// (the 64th would take its slot at the switch and make it a stale copy).
    #[tokio::test]
    async fn a_waiting_write_is_not_overtaken_by_a_window_of_later_ones() {
        let window = WriteWindow::new(7);
        let first: Vec<_> = futures_take(&window, WRITE_WINDOW as usize).await;
        let waiting = window.enter();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiting)
                .await
                .is_err()
        );
        drop(first);
        // Later writes may go while `waiting` has not been polled again, but not a window
        // of them.
        let later = futures_take(&window, WRITE_WINDOW as usize - 1).await;
        let one_more = window.enter();
        tokio::pin!(one_more);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut one_more)
                .await
                .is_err(),
            "write n + 64 went out while write n was still waiting"
        );
        let ticket = waiting.await;
        drop(ticket);
        drop(later);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), one_more)
                .await
                .is_ok()
        );
    }

    async fn futures_take(window: &WriteWindow, n: usize) -> Vec<WriteTicket<'_>> {
        let mut tickets = Vec::new();
        for _ in 0..n {
            tickets.push(window.enter().await);
        }
        tickets
    }

    /// A store that refuses a write carrying no epoch with `StaleEpoch` (as the switch makes
    /// it), and one carrying an old epoch likewise; a write with the right epoch is applied.
    async fn fake_store(switch_epoch: Arc<AtomicU16>) -> (Cluster, JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                let request = Message::decode(&buf[..n]).unwrap().header;
                let epoch = switch_epoch.load(Ordering::Relaxed);
                let reply = if request.client_epoch() == epoch {
                    let v = version::make(epoch, 1).unwrap();
                    Header::reply(Op::PutReply, &request, 0, v, Status::Ok, 0)
                } else {
                    let v = version::make(epoch, 0).unwrap();
                    Header::reply(Op::Error, &request, 0, v, Status::StaleEpoch, 0)
                };
                let bytes = Message::new(reply, &[], &[]).to_vec().unwrap();
                socket.send_to(&bytes, from).await.unwrap();
            }
        });
        let cluster = Cluster {
            controllers: Vec::new(),
            racks: Vec::new(),
            etcd: None,
            servers: vec![crate::cluster::ServerEntry { id: 0, addr }],
        };
        (cluster, task)
    }

    #[tokio::test]
    async fn a_client_learns_the_epoch_and_reports_writes_from_before_a_restart() {
        let switch_epoch = Arc::new(AtomicU16::new(6));
        let (cluster, store) = fake_store(switch_epoch.clone()).await;
        let client = Client::connect(cluster, ClientOptions::default())
            .await
            .unwrap();
        assert_eq!(client.epoch(), 0);
        // No epoch yet: refused, never applied, sent again with the epoch learned.
        let w = client.put(b"k", b"v").await.unwrap();
        assert_eq!(version::epoch(w.version), 6);
        assert_eq!(client.epoch(), 6);
        // The switch restarts with epoch 7: a write carrying 6 may have been applied before.
        switch_epoch.store(7, Ordering::Relaxed);
        let err = client.put(b"k", b"v").await.unwrap_err();
        assert!(matches!(err, ClientError::Indeterminate), "{err}");
        assert_eq!(client.epoch(), 7);
        assert!(client.put(b"k", b"v").await.is_ok());
        store.abort();
    }
}
