//! The UDP server: `threads` sockets bound to one address with SO_REUSEPORT (the kernel
//! spreads clients over them, one worker task each), and, with an emulated capacity, one
//! bounded queue drained at the service rate.
//!
//! Load reporting: every reply carries the store's load, which is what the switch's
//! least-loaded policy compares: the requests waiting (the queue length with an emulated
//! capacity, else the other requests in flight), in steps of 16, and below that, with an
//! emulated capacity, how busy the server has been (`capacity::Utilisation`, a decayed average),
//! which tells servers apart before any of them queues.

use crate::{
    capacity::{self, ServiceRate, Utilisation},
    chain::{ChainLinks, Outgoing},
    handler::{CopyOrder, Origin, Store, StoreOptions},
};
use anyhow::{Context, Result, ensure};
use pegasus_common::{
    directory::{self, SERVERS_MAX},
    wire,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};
use tokio::{net::UdpSocket, sync::mpsc, task::JoinSet};

/// How often a chain store looks for forwarded writes to send again.
const CHAIN_TICK: Duration = Duration::from_millis(10);

/// Requests that may wait for service before new ones are dropped (emulated capacity only).
pub const QUEUE_MAX_DEFAULT: usize = 4096;
/// Receive buffer: larger than any datagram, so an oversize one is seen whole and refused.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Kernel socket buffer size requested for each socket.
const SOCKET_BUF_BYTES: usize = 4 << 20;

/// How to run a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub listen: SocketAddr,
    pub server_id: u8,
    /// Sockets and worker tasks.
    pub threads: usize,
    /// Emulated service rate in requests per second; `None` serves as fast as possible.
    pub capacity_ops: Option<u32>,
    /// Queue bound with an emulated capacity.
    pub queue_max: usize,
    /// The other servers of the rack (id, address), for copies of hot keys' writes; their
    /// addresses are also the ones REPLICATE is accepted from.
    pub peers: Vec<(u8, SocketAddr)>,
    /// The controller's addresses: PUSH is accepted only from them, and their requests are
    /// served ahead of the queue.
    pub controllers: Vec<IpAddr>,
    /// Most bytes of data (see `table::charge`).
    pub memory_limit: usize,
    /// Refuse PUTs without a version (a store behind a switch).
    pub require_stamped: bool,
    /// The racks before and after this one in a chain (empty: a single rack).
    pub chain: ChainLinks,
}

/// Server id -> address, for sending copies.
#[derive(Clone, Debug)]
struct Peers([Option<SocketAddr>; SERVERS_MAX as usize]);

impl Peers {
    fn new(list: &[(u8, SocketAddr)]) -> Peers {
        let mut peers = Peers([None; SERVERS_MAX as usize]);
        for &(id, addr) in list {
            peers.0[id as usize % SERVERS_MAX as usize] = Some(addr);
        }
        peers
    }
}

/// A store whose sockets are bound, ready to [`Server::run`].
pub struct Server {
    config: StoreConfig,
    peers: Arc<Peers>,
    store: Arc<Store>,
    sockets: Vec<Arc<UdpSocket>>,
    local_addr: SocketAddr,
}

impl Server {
    /// Binds `config.threads` sockets to `config.listen` (port 0 picks a free port, shared by
    /// all of them). Must be called inside a tokio runtime.
    pub fn bind(config: StoreConfig) -> Result<Server> {
        ensure!(config.threads >= 1, "a store needs at least one thread");
        ensure!(
            config.queue_max >= 1,
            "the queue must hold at least one request"
        );
        let first = bind(config.listen)?;
        let local_addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..config.threads {
            sockets.push(bind(local_addr)?);
        }
        for &(id, _) in &config.peers {
            ensure!(
                u32::from(id) < SERVERS_MAX,
                "peer server id {id} out of range"
            );
        }
        let options = StoreOptions {
            memory_limit: config.memory_limit,
            require_stamped: config.require_stamped,
            members: config.peers.iter().map(|(_, a)| a.ip()).collect(),
            controllers: config.controllers.clone(),
            chain: config.chain.clone(),
        };
        Ok(Server {
            store: Arc::new(Store::with_options(config.server_id, options)),
            peers: Arc::new(Peers::new(&config.peers)),
            config,
            sockets,
            local_addr,
        })
    }

    /// The address the store listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store's state (for counters while it runs).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// A handle that puts new chain configurations in force while the store runs.
    pub fn reconfigurer(&self) -> Reconfigurer {
        Reconfigurer {
            store: self.store.clone(),
            socket: self.sockets[0].clone(),
        }
    }

    /// Serves until `shutdown` completes; returns the store (for its final counters).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Arc<Store>> {
        let Server {
            config,
            peers,
            store,
            sockets,
            local_addr,
        } = self;
        let load = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        if store.chain().is_some() {
            tasks.spawn(retransmit(store.clone(), sockets[0].clone()));
        }
        match config.capacity_ops {
            None => {
                for socket in sockets {
                    tasks.spawn(serve_directly(
                        store.clone(),
                        peers.clone(),
                        socket,
                        load.clone(),
                    ));
                }
            }
            Some(rate) => {
                let (tx, rx) = mpsc::channel(config.queue_max);
                for (index, socket) in sockets.iter().enumerate() {
                    tasks.spawn(enqueue(
                        store.clone(),
                        peers.clone(),
                        socket.clone(),
                        index,
                        tx.clone(),
                        load.clone(),
                    ));
                }
                tasks.spawn(serve_at_rate(
                    store.clone(),
                    peers.clone(),
                    sockets,
                    rx,
                    ServiceRate::new(rate),
                    rate,
                    load.clone(),
                ));
            }
        }
        tracing::info!(
            listen = %local_addr,
            server_id = config.server_id,
            threads = config.threads,
            capacity_ops = ?config.capacity_ops,
            "store listening"
        );
        shutdown.await;
        tasks.abort_all();
        Ok(store)
    }
}

/// Puts new chain configurations in force in a running store, and sends what each leaves to
/// send (queued writes to a new next rack; answers and acknowledgements in a new tail).
#[derive(Clone)]
pub struct Reconfigurer {
    store: Arc<Store>,
    socket: Arc<UdpSocket>,
}

impl Reconfigurer {
    /// Puts `links` in force (nothing happens if they are the ones in force). When this rack
    /// was the tail and `joining` joins behind it, every key is copied to it by a task of its
    /// own ([`copy_to_joining`]).
    pub async fn apply(&self, links: ChainLinks, joining: Option<u8>) {
        let done = self.store.reconfigure(links);
        send_all(&self.socket, done.send).await;
        if let (true, Some(rack), Some(chain)) = (done.copy, joining, self.store.chain()) {
            tokio::spawn(copy_to_joining(
                self.store.clone(),
                self.socket.clone(),
                rack,
                chain.generation(),
            ));
        }
    }

    /// The links in force (`None` outside a chain).
    pub fn current(&self) -> Option<ChainLinks> {
        self.store.chain().map(|c| c.current_links())
    }

    /// The store's counters now.
    pub fn snapshot(&self) -> crate::handler::StatsSnapshot {
        self.store.snapshot()
    }

    /// The joining rack every key has been copied to, if any ([`Chain::copied_to`]).
    ///
    /// [`Chain::copied_to`]: crate::chain::Chain::copied_to
    pub fn copied_to(&self) -> Option<u8> {
        self.store.chain().and_then(|c| c.copied_to())
    }
}

/// How many forwarded writes may wait before a copy to a joining rack pauses (half the
/// queue: clients' writes keep room).
const COPY_QUEUE_HIGH: usize = crate::chain::CHAIN_QUEUE_MAX / 2;
/// How often a copy checks its queue and its acknowledgements.
const COPY_POLL: Duration = Duration::from_millis(5);

/// Copies every key to the rack joining behind this one (the tail), shard by shard, as
/// forwarded writes (retransmitted until acknowledged), never filling more than half the
/// queue; once every copy is acknowledged, records it ([`crate::chain::Chain::copied_to`]),
/// which the store reports to etcd: the joining rack becomes the tail when every store of
/// the tail has. Stops if the links change meanwhile (`generation`).
async fn copy_to_joining(store: Arc<Store>, socket: Arc<UdpSocket>, rack: u8, generation: u64) {
    let Some(chain) = store.chain() else {
        return;
    };
    let started = Instant::now();
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let mut copied = 0usize;
    for shard in 0..store.shard_count() {
        while chain.queued() > COPY_QUEUE_HIGH {
            if chain.generation() != generation {
                return;
            }
            tokio::time::sleep(COPY_POLL).await;
        }
        if chain.generation() != generation {
            return;
        }
        let copies = store.copy_shard(shard);
        copied += copies.len();
        let mut out = Vec::with_capacity(copies.len());
        for (message, keyhash, version) in copies {
            out.push(message);
            pending.push((keyhash, version));
        }
        send_all(&socket, out).await;
        pending.retain(|&(k, v)| chain.is_waiting(k, v));
    }
    while !pending.is_empty() {
        if chain.generation() != generation {
            return;
        }
        tokio::time::sleep(COPY_POLL).await;
        pending.retain(|&(k, v)| chain.is_waiting(k, v));
    }
    chain.set_copied_to(rack, generation);
    tracing::info!(
        rack,
        keys = copied,
        ms = started.elapsed().as_millis() as u64,
        "every key copied to the joining rack"
    );
}

/// Binds and serves until `shutdown` completes; returns the store (for its final counters).
pub async fn serve(config: StoreConfig, shutdown: impl Future<Output = ()>) -> Result<Arc<Store>> {
    Server::bind(config)?.run(shutdown).await
}

fn bind(addr: SocketAddr) -> Result<Arc<UdpSocket>> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUF_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUF_BYTES);
    socket
        .bind(&addr.into())
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok(Arc::new(UdpSocket::from_std(socket.into())?))
}

/// Whether a datagram is a request of the rack controller.
fn is_from_controller(datagram: &[u8]) -> bool {
    let at = wire::offset::CLIENT_ID;
    datagram.get(at..at + 2) == Some(&wire::CONTROLLER_CLIENT_ID.to_be_bytes()[..])
}

/// A count of requests waiting as the 16-bit load a reply carries.
fn as_load(requests: usize) -> u16 {
    capacity::load(requests, 0)
}

/// Serves one request at a time: handles it, sends the reply and any copies. Its buffers are
/// allocated once.
struct Worker {
    store: Arc<Store>,
    peers: Arc<Peers>,
    out: Vec<u8>,
    copy: Vec<u8>,
}

impl Worker {
    fn new(store: Arc<Store>, peers: Arc<Peers>) -> Worker {
        Worker {
            store,
            peers,
            out: vec![0u8; wire::MAX_PAYLOAD_LEN],
            copy: vec![0u8; wire::MAX_PAYLOAD_LEN],
        }
    }

    /// Serves `request` from `from`, which came in on `socket`, reporting `load`.
    async fn serve(&mut self, request: &[u8], from: SocketAddr, socket: &UdpSocket, load: u16) {
        let handled = self
            .store
            .handle(request, from, load, &mut self.out, &mut self.copy);
        if let Some(len) = handled.reply {
            send(socket, &self.out[..len], handled.reply_to.unwrap_or(from)).await;
        }
        if let Some(c) = handled.copy {
            send_copies(&self.store, &self.peers, socket, &self.copy, c).await;
        }
        send_all(socket, handled.chain).await;
    }
}

async fn serve_directly(
    store: Arc<Store>,
    peers: Arc<Peers>,
    socket: Arc<UdpSocket>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let mut worker = Worker::new(store, peers);
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("receive: {e}");
                continue;
            }
        };
        // The load reported is the other requests in flight, as a queued server reports the
        // ones still waiting: an idle server reports 0.
        let others = as_load(in_flight.fetch_add(1, Relaxed));
        worker.serve(&buf[..n], from, &socket, others).await;
        in_flight.fetch_sub(1, Relaxed);
    }
}

/// A request waiting for service: its bytes, its sender, and the socket it came in on.
type Queued = (Vec<u8>, SocketAddr, usize);

/// Receives on one socket for a store with emulated capacity: client requests wait in the
/// service queue; the controller's requests (rare: a few per hot-key change; recognised by
/// their client id *and* the controller's address, so no client can jump the queue) are
/// served at once, as a real server would on a control thread, and so are datagrams too
/// large to be a request (answered with an error, never copied into the queue). That is safe whatever their order with
/// queued writes: every reply reports the version the store holds, and the switch's reply
/// rule keeps the directory right in any order.
async fn enqueue(
    store: Arc<Store>,
    peers: Arc<Peers>,
    socket: Arc<UdpSocket>,
    index: usize,
    queue: mpsc::Sender<Queued>,
    queued: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let mut control = Worker::new(store.clone(), peers);
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("receive: {e}");
                continue;
            }
        };
        let controller =
            is_from_controller(&buf[..n]) && store.origin(from.ip()) == Origin::Controller;
        if controller || n > wire::MAX_PAYLOAD_LEN {
            control
                .serve(&buf[..n], from, &socket, as_load(queued.load(Relaxed)))
                .await;
            continue;
        }
        queued.fetch_add(1, Relaxed);
        if queue.try_send((buf[..n].to_vec(), from, index)).is_err() {
            // A saturated server drops what it cannot queue, as a real one would.
            queued.fetch_sub(1, Relaxed);
            store.stats.overload_dropped.fetch_add(1, Relaxed);
        }
    }
}

async fn serve_at_rate(
    store: Arc<Store>,
    peers: Arc<Peers>,
    sockets: Vec<Arc<UdpSocket>>,
    mut queue: mpsc::Receiver<Queued>,
    mut rate: ServiceRate,
    ops_per_second: u32,
    queued: Arc<AtomicUsize>,
) {
    let mut worker = Worker::new(store, peers);
    let mut utilisation = Utilisation::new(ops_per_second, Instant::now());
    while let Some((bytes, from, index)) = queue.recv().await {
        let at = rate.admit(Instant::now());
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        queued.fetch_sub(1, Relaxed);
        let now = Instant::now();
        utilisation.served(now);
        let load = capacity::load(queued.load(Relaxed), utilisation.steps(now));
        worker.serve(&bytes, from, &sockets[index], load).await;
    }
}

/// Sends a copy to every target server whose address is known.
async fn send_copies(store: &Store, peers: &Peers, socket: &UdpSocket, copy: &[u8], c: CopyOrder) {
    for id in 0..SERVERS_MAX as u8 {
        if c.targets & directory::bit(id) == 0 {
            continue;
        }
        match peers.0[id as usize] {
            Some(addr) => {
                store.stats.copies_sent.fetch_add(1, Relaxed);
                send(socket, &copy[..c.len], addr).await;
            }
            None => {
                store.stats.copies_unroutable.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Sends forwarded writes again when their acknowledgement is late (chain stores only).
async fn retransmit(store: Arc<Store>, socket: Arc<UdpSocket>) {
    let chain = store.chain().expect("started for chain stores only");
    let mut tick = tokio::time::interval(CHAIN_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        send_all(&socket, chain.due(Instant::now())).await;
    }
}

async fn send_all(socket: &UdpSocket, messages: Vec<Outgoing>) {
    for (bytes, to) in messages {
        send(socket, &bytes, to).await;
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, to).await {
        tracing::debug!("send to {to}: {e}");
    }
}
