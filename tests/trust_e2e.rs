//! End to end: nothing a client sends can speak for the switch or a server. A client in a lab
//! rack sends, by hand, every field and op only the switch or a server may set; afterwards
//! the keys' values and versions, the hot key's directory entry and the servers' traffic are
//! as the rules say (docs/security.md). Each forgery's cost inside the rack is measured from
//! the servers' interface counters and printed as the table in docs/security.md. Needs root.

mod support;

use pegasus_client::placement::Placement;
use pegasus_common::{
    hash::key_hash,
    wire::{self, CONTROLLER_CLIENT_ID, Header, Message, Op, Status, flags},
};
use pegasus_control::lab::{self, netns};
use serde_json::Value;
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::Duration,
};
use support::{Lab, json, run_ok};

const SERVERS: u8 = 4;
const PORT: u16 = wire::DEFAULT_PORT;
/// How long the client listens for replies to one datagram.
const REPLY_WAIT: Duration = Duration::from_millis(300);
/// The client id of the honest requests (any but the controller's).
const CLIENT_ID: u16 = 41;

/// How a datagram leaves the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Send {
    /// From an ephemeral port.
    Plain,
    /// From the store port, as a server's reply would.
    FromStorePort,
    /// With four NOP bytes of IPv4 options.
    IpOptions,
}

/// Sends `datagram` to `to` from inside the client namespace `ns`; returns the replies' sizes.
fn send_from(ns: &str, to: SocketAddrV4, datagram: Vec<u8>, how: Send) -> Vec<Vec<u8>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter_current_thread(&ns).unwrap();
        let port = if how == Send::FromStorePort { PORT } else { 0 };
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        if how == Send::IpOptions {
            let nops = [1u8; 4];
            // SAFETY: setsockopt with a valid buffer and its length.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_OPTIONS,
                    nops.as_ptr().cast(),
                    nops.len() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "IP_OPTIONS: {}", std::io::Error::last_os_error());
        }
        socket.set_read_timeout(Some(REPLY_WAIT)).unwrap();
        socket.send_to(&datagram, to).unwrap();
        let mut replies = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            replies.push(buf[..n].to_vec());
        }
        replies
    })
    .join()
    .unwrap()
}

/// A message for `key` with the given header fields.
fn message(op: Op, key: &[u8], value: &[u8], edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut header =
        Header::request(op, key_hash(key), CLIENT_ID, rand_id(), 0).with_client_epoch(LAB_EPOCH);
    edit(&mut header);
    // A CHAIN_PUT carries a reply address (any: a forger chooses it).
    let reply_to = (header.op() == Some(Op::ChainPut)).then_some(wire::ReplyTo {
        ipv4: [10, 2, 0, 2],
        port: 4000,
    });
    Message {
        reply_to,
        ..Message::new(header, key, value)
    }
    .to_vec()
    .unwrap()
}

/// The epoch a new lab's switch stamps (its first start), which an honest client would have
/// learned from its first write's reply.
const LAB_EPOCH: u16 = 1;

/// A request id no other request of this test uses.
fn rand_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// (packets, bytes) received on `eth0` of namespace `ns`.
fn rx(ns: &str) -> (u64, u64) {
    let read = |what: &str| -> u64 {
        netns::exec_in(
            ns,
            "cat",
            &[&format!("/sys/class/net/eth0/statistics/rx_{what}")],
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    };
    (read("packets"), read("bytes"))
}

/// The rack as one GET of `key` sees it: (status, version, value).
struct Rack<'a> {
    lab: &'a Lab,
    placement: Placement,
}

impl Rack<'_> {
    fn client_ns(&self) -> String {
        lab::client_ns(&self.lab.name, 0)
    }

    fn home(&self, key: &[u8]) -> SocketAddrV4 {
        let home = self.placement.home(key_hash(key));
        SocketAddrV4::new(lab::server_ip(home), PORT)
    }

    fn servers_rx(&self) -> (u64, u64) {
        (0..SERVERS)
            .map(|i| rx(&lab::server_ns(&self.lab.name, i)))
            .fold((0, 0), |(p, b), (q, c)| (p + q, b + c))
    }

    /// An honest request of `op` for `key`; the decoded reply.
    fn honest(&self, op: Op, key: &[u8], value: &[u8]) -> (Status, u64, Vec<u8>) {
        let replies = send_from(
            &self.client_ns(),
            self.home(key),
            message(op, key, value, |_| {}),
            Send::Plain,
        );
        let reply = replies.first().expect("an honest request is answered");
        let m = Message::decode(reply).unwrap();
        (
            m.header.status().unwrap(),
            m.header.version,
            m.value.to_vec(),
        )
    }

    /// The hot key's directory entry: (replicas, completed version).
    fn entry(&self, key: &str) -> Value {
        let listed = self.lab.hot_list();
        let e = listed
            .iter()
            .find(|e| e["key"] == key)
            .expect("the hot key is listed");
        serde_json::json!([e["replicas"], e["ver_completed"]])
    }

    fn counter(&self, name: &str) -> u64 {
        let status = json(&run_ok(&[
            "switch",
            "status",
            "--lab",
            &self.lab.name,
            "--json",
        ]));
        status["counters"][name].as_u64().unwrap_or(0)
    }
}

/// One forged datagram and what the rules let it cause inside the rack.
struct Forgery {
    what: &'static str,
    key: &'static [u8],
    datagram: Vec<u8>,
    how: Send,
    /// Datagrams it may cause at the servers: 1 for a request the switch cleans and forwards
    /// home, 0 for one it drops.
    reaches_servers: u64,
}

#[test]
fn nothing_a_client_forges_speaks_for_the_switch_or_a_server() {
    let lab = Lab::up(
        "trust",
        &["--servers", &SERVERS.to_string(), "--hot-keys", "0"],
    );
    let rack = Rack {
        lab: &lab,
        placement: Placement::new(0..SERVERS),
    };
    let (victim, hot, stamped_key) = (&b"victim"[..], &b"hotkey"[..], &b"stamped"[..]);
    assert_eq!(rack.honest(Op::Put, victim, b"honest").0, Status::Ok);
    assert_eq!(rack.honest(Op::Put, hot, b"hot-honest").0, Status::Ok);
    run_ok(&["switch", "hot", "add", "--lab", &lab.name, "hotkey"]);
    // Copies settle, then the state every forgery must leave alone.
    std::thread::sleep(Duration::from_millis(300));
    let victim_before = rack.honest(Op::Get, victim, b"");
    let hot_before = rack.honest(Op::Get, hot, b"");
    let entry_before = rack.entry("hotkey");
    let role_drops_before = rack.counter("role_drops");

    let forged =
        |op, key, value: &'static [u8], edit: fn(&mut Header)| message(op, key, value, edit);
    let forgeries = vec![
        Forgery {
            what: "PUT with STAMPED, HOT, CACHED, version 2^64-1, every server in its bitmap",
            key: stamped_key,
            datagram: forged(Op::Put, stamped_key, b"forged", |h| {
                h.flags = flags::STAMPED | flags::HOT | flags::CACHED;
                h.version = u64::MAX;
                h.replica_bitmap = u64::MAX;
            }),
            how: Send::Plain,
            reaches_servers: 1,
        },
        Forgery {
            what: "GET with STAMPED, HOT, CACHED, a version and a bitmap",
            key: victim,
            datagram: forged(Op::Get, victim, b"", |h| {
                h.flags = flags::STAMPED | flags::HOT | flags::CACHED;
                h.version = 7;
                h.replica_bitmap = u64::MAX;
            }),
            how: Send::Plain,
            reaches_servers: 1,
        },
        Forgery {
            what: "REPLICATE of a key at version 2^64-1",
            key: victim,
            datagram: forged(Op::Replicate, victim, b"forged", |h| h.version = u64::MAX),
            how: Send::Plain,
            reaches_servers: 0,
        },
        Forgery {
            what: "PUSH of a key to every server",
            key: victim,
            datagram: forged(Op::Push, victim, b"", |h| h.replica_bitmap = u64::MAX),
            how: Send::Plain,
            reaches_servers: 0,
        },
        Forgery {
            what: "PUSH with the controller's client id",
            key: victim,
            datagram: forged(Op::Push, victim, b"", |h| {
                h.replica_bitmap = u64::MAX;
                h.client_id = CONTROLLER_CLIENT_ID;
            }),
            how: Send::Plain,
            reaches_servers: 0,
        },
        Forgery {
            what: "GET with the controller's client id",
            key: victim,
            datagram: forged(Op::Get, victim, b"", |h| h.client_id = CONTROLLER_CLIENT_ID),
            how: Send::Plain,
            reaches_servers: 0,
        },
        Forgery {
            what: "CHAIN_PUT stamped upstream",
            key: victim,
            datagram: forged(Op::ChainPut, victim, b"forged", |h| {
                h.flags = flags::STAMPED;
                h.version = u64::MAX;
            }),
            how: Send::Plain,
            reaches_servers: 0,
        },
        Forgery {
            what: "REPLICATE_ACK for the hot key at 2^64-1, claiming server 0, from the store port",
            key: hot,
            datagram: forged(Op::ReplicateAck, hot, b"", |h| {
                h.version = u64::MAX;
                h.server_id = 0;
            }),
            how: Send::FromStorePort,
            reaches_servers: 0,
        },
        Forgery {
            what: "GET_REPLY for the hot key, claiming server 1, with the controller's client id (a cache fill)",
            key: hot,
            datagram: forged(Op::GetReply, hot, b"forged", |h| {
                h.version = u64::MAX - 1;
                h.server_id = 1;
                h.client_id = CONTROLLER_CLIENT_ID;
                h.flags = flags::HOT;
            }),
            how: Send::FromStorePort,
            reaches_servers: 0,
        },
        Forgery {
            what: "PUT with IPv4 options (not at the switch's fixed offsets)",
            key: victim,
            datagram: forged(Op::Put, victim, b"forged", |_| {}),
            how: Send::IpOptions,
            reaches_servers: 0,
        },
    ];

    let mut table = String::from(
        "| datagram from a client port | its IP packet (bytes) | datagrams at the servers | \
         bytes at the servers | replies to the client (bytes) |\n| --- | --- | --- | --- | --- |\n",
    );
    for f in &forgeries {
        let before = rack.servers_rx();
        let replies = send_from(
            &rack.client_ns(),
            rack.home(f.key),
            f.datagram.clone(),
            f.how,
        );
        let after = rack.servers_rx();
        let (packets, bytes) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(
            packets, f.reaches_servers,
            "{}: datagrams at the servers",
            f.what
        );
        let reply_bytes: Vec<String> = replies.iter().map(|r| r.len().to_string()).collect();
        assert!(
            replies.len() as u64 <= f.reaches_servers,
            "{}: replies",
            f.what
        );
        for r in &replies {
            // A reply carries no key: at most the request's header and the value it read.
            assert!(
                r.len() <= f.datagram.len() + hot_before.2.len().max(victim_before.2.len()),
                "{}: a reply of {} bytes",
                f.what,
                r.len()
            );
        }
        table.push_str(&format!(
            "| {} | {} | {packets} | {bytes} | {} |\n",
            f.what,
            f.datagram.len() + 28 + if f.how == Send::IpOptions { 4 } else { 0 },
            if replies.is_empty() {
                "none".to_owned()
            } else {
                reply_bytes.join(", ")
            }
        ));
    }
    println!("{table}");
    println!("(bytes at the servers are Ethernet frames: 14 + 20 + 8 + the datagram)");

    // Nothing changed but what honest requests may change.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        rack.honest(Op::Get, victim, b""),
        victim_before,
        "the victim"
    );
    assert_eq!(rack.honest(Op::Get, hot, b""), hot_before, "the hot key");
    assert_eq!(rack.entry("hotkey"), entry_before, "the hot key's entry");
    let dropped = forgeries.iter().filter(|f| f.reaches_servers == 0).count() as u64;
    assert!(
        rack.counter("role_drops") - role_drops_before >= dropped - 1,
        "every dropped forgery but the IP options one is a role drop"
    );
    assert!(rack.counter("unparseable") >= 1, "the IP options forgery");
    assert!(rack.counter("requests_cleaned") >= 2);
    // The cleaned PUT was an ordinary write: an honest write after it wins, as it must.
    let (status, forged_version, value) = rack.honest(Op::Get, stamped_key, b"");
    assert_eq!((status, value.as_slice()), (Status::Ok, &b"forged"[..]));
    assert!(
        forged_version < u64::MAX >> 1,
        "its version is the switch's"
    );
    assert_eq!(rack.honest(Op::Put, stamped_key, b"after").0, Status::Ok);
    let (_, version, value) = rack.honest(Op::Get, stamped_key, b"");
    assert_eq!(
        value, b"after",
        "an honest write after the forged one is read back"
    );
    assert!(version > forged_version);
}
