//! The store through its real UDP socket on loopback, driven by the real client library.

use pegasus_client::{Client, ClientOptions, Cluster, cluster::ServerEntry};
use pegasus_common::{
    hash::key_hash,
    wire::{self, Header, Message, Op, Status},
};
use pegasus_store::{Server, StoreConfig, handler::Store};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{net::UdpSocket, sync::oneshot};

struct Running {
    addr: SocketAddr,
    store: Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<Arc<Store>>>,
}

async fn start(threads: usize, capacity_ops: Option<u32>, queue_max: usize) -> Running {
    let server = Server::bind(StoreConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        server_id: 5,
        threads,
        capacity_ops,
        queue_max,
        peers: Vec::new(),
        controllers: Vec::new(),
        memory_limit: pegasus_store::table::MEMORY_LIMIT_DEFAULT,
        require_stamped: false,
        chain: Default::default(),
    })
    .unwrap();
    let (addr, store) = (server.local_addr(), server.store());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        store,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn client(&self) -> Client {
        let cluster = Cluster {
            controllers: Vec::new(),
            racks: Vec::new(),
            servers: vec![ServerEntry {
                id: 5,
                addr: self.addr,
            }],
            ..Cluster::default()
        };
        Client::connect(cluster, ClientOptions::default())
            .await
            .unwrap()
    }

    async fn stop(mut self) -> Arc<Store> {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_not_found_through_the_socket() {
    let server = start(2, None, 16).await;
    let client = server.client().await;
    let w = client.put(b"alpha", b"one").await.unwrap();
    assert_eq!((w.version, w.server_id), (0, 5));
    let r = client.get(b"alpha").await.unwrap();
    assert_eq!((r.value.as_deref(), r.server_id), (Some(&b"one"[..]), 5));
    assert_eq!(client.get(b"beta").await.unwrap().value, None);
    // The largest value that fits goes through whole.
    let big = vec![7u8; wire::max_value_len(3)];
    client.put(b"big", &big).await.unwrap();
    assert_eq!(client.get(b"big").await.unwrap().value, Some(big));
    let stats = server.stop().await.snapshot();
    assert_eq!((stats.puts, stats.gets, stats.keys), (2, 3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients_all_succeed() {
    let server = start(2, None, 16).await;
    let client = Arc::new(server.client().await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000u32 {
        let c = client.clone();
        tasks.spawn(async move {
            let key = format!("key-{i}");
            c.put(key.as_bytes(), &i.to_be_bytes()).await.unwrap();
            let r = c.get(key.as_bytes()).await.unwrap();
            assert_eq!(r.value.unwrap(), i.to_be_bytes());
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(server.stop().await.snapshot().keys, 2000);
}

/// Sends one raw datagram and returns the decoded reply header (or None after 300 ms).
async fn exchange(socket: &UdpSocket, to: SocketAddr, bytes: &[u8]) -> Option<Header> {
    socket.send_to(bytes, to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::decode(&buf[..n]).unwrap().header)
}

fn put_bytes(key: &[u8], value: &[u8], version: u64, request_id: u32) -> Vec<u8> {
    let mut h = Header::new(Op::Put);
    h.keyhash = key_hash(key);
    h.version = version;
    h.client_id = 42;
    h.request_id = request_id;
    let m = Message::new(h, key, value);
    m.to_vec().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_datagram_is_applied_once_and_garbage_is_dropped() {
    let server = start(1, None, 16).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = put_bytes(b"k", b"old", 10, 1);
    assert_eq!(
        exchange(&socket, server.addr, &first)
            .await
            .unwrap()
            .version,
        10
    );
    exchange(&socket, server.addr, &put_bytes(b"k", b"new", 11, 2))
        .await
        .unwrap();
    // The network delivers the first write again, late: answered from the table, with the
    // version the store holds, and not applied again.
    assert_eq!(
        exchange(&socket, server.addr, &first)
            .await
            .unwrap()
            .version,
        11
    );
    // Garbage gets no reply; a malformed Pegasus request gets an error reply.
    assert!(
        exchange(&socket, server.addr, b"GET / HTTP/1.0\r\n\r\n")
            .await
            .is_none()
    );
    let h = exchange(&socket, server.addr, &first[..first.len() - 2])
        .await
        .unwrap();
    assert_eq!(
        (h.op(), h.status()),
        (Some(Op::Error), Some(Status::Malformed))
    );
    let client = server.client().await;
    assert_eq!(
        client.get(b"k").await.unwrap().value.as_deref(),
        Some(&b"new"[..])
    );
    let stats = server.stop().await.snapshot();
    assert_eq!(
        (
            stats.dedup_hits,
            stats.writes_applied,
            stats.not_pegasus_dropped
        ),
        (1, 2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_store_drops_what_it_cannot_queue_and_reports_its_load() {
    // 200 requests per second with room for 8 waiting: a burst of 300 overflows the queue.
    let server = start(1, Some(200), 8).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..300u32 {
        socket
            .send_to(&put_bytes(b"k", b"v", 1, i), server.addr)
            .await
            .unwrap();
    }
    // Replies report a non-zero load while the queue is full.
    let mut buf = vec![0u8; 2048];
    let mut max_load = 0;
    for _ in 0..5 {
        let n = socket.recv(&mut buf).await.unwrap();
        max_load = max_load.max(Message::decode(&buf[..n]).unwrap().header.load);
    }
    assert!(max_load > 0, "a saturated store reports its queue");
    let stats = server.store.snapshot();
    assert!(stats.overload_dropped > 0, "{stats:?}");
    server.stop().await;
}
