//! The XDP switch on synthetic packets through BPF_PROG_TEST_RUN: for every rule, the input
//! frame, the expected verdict and the expected output frame, byte for byte (rewritten MAC
//! addresses, TTL, version, and both checksums included), as Katran's fixture tests do.
//!
//! The program runs in a namespace made for the test, with two ports and static neighbours, so
//! that its FIB lookups give a known answer. Needs root (as CI runs).

use pegasus_common::{
    directory::{MIX_WINDOW, Policy, RecentMix, ServerSet, bit},
    hash::key_hash,
    once,
    switch::{self, Counter, hot_filter_slot},
    version,
    wire::{self, Header, Op},
};
use pegasus_control::{
    switch::{PacketVerdict, Switch, SwitchSettings, action},
    testkit::{
        fixtures::{self, CLIENT_ID, Fixture, check, forwarded},
        packet::{self, UdpFrame, addr},
        testbed::{self, CLIENT_MAC, CLIENT_PORT_MAC, Testbed, server_mac, server_port_mac},
    },
};
use proptest::prelude::*;

const PORT: u16 = 7400;
const EPOCH: u16 = 3;
const SERVER_PORT_MAC: [u8; 6] = [0x02, 0, 0, 1, 0, 1];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 1, 0, 2];
const HOT_KEY: &[u8] = b"hot";

/// The testbed (a namespace with ports `sv0`..`sv2` towards servers 0-2 at 10.1.I.2 and `cl0`
/// towards the client 10.2.0.2) with the switch loaded in it. The calling thread is moved
/// into the namespace.
fn setup(tag: &str, policy: Policy, replication: u8) -> Testbed {
    let settings = SwitchSettings {
        policy,
        replication,
        ..SwitchSettings::forwarding_only(PORT, EPOCH)
    };
    Testbed::new(tag, 3, settings).unwrap()
}

fn pegasus(op: Op, key: &[u8], value: &[u8], version: u64, flags: u8) -> Vec<u8> {
    message(op, key, value, version, flags, FIRST_REQUEST, 0)
}

/// The request id of the fixtures' first write (and of every message built by `pegasus`).
const FIRST_REQUEST: u32 = 0xabcd;

/// `pegasus(...)` as request `request_id`.
fn nth_request(op: Op, key: &[u8], version: u64, flags: u8, request_id: u32) -> Vec<u8> {
    message(op, key, b"value", version, flags, request_id, 0)
}

/// `payload` with its client epoch set to `epoch` (a request from before a switch restart,
/// or from a client that has learned no epoch).
fn with_client_epoch(mut payload: Vec<u8>, epoch: u16) -> Vec<u8> {
    let at = wire::offset::CLIENT_EPOCH;
    payload[at..at + 2].copy_from_slice(&epoch.to_be_bytes());
    payload
}

/// `payload` as the switch marks a write with a stale epoch: `STALE_EPOCH` set, the switch's
/// epoch in the version.
fn marked_stale(payload: Vec<u8>) -> Vec<u8> {
    let mut out = payload;
    out[wire::offset::FLAGS] |= wire::flags::STALE_EPOCH;
    let at = wire::offset::VERSION;
    out[at..at + 8].copy_from_slice(&version::make(EPOCH, 0).unwrap().to_be_bytes());
    out
}

/// A reply as a store sends it: the request's key hash, an empty key, maybe a value.
fn reply_msg(
    op: Op,
    key: &[u8],
    value: &[u8],
    version: u64,
    flags: u8,
    request_id: u32,
    server_id: u8,
) -> Vec<u8> {
    fixtures::reply_payload(
        header(op, key, version, flags, request_id, server_id),
        value,
    )
}

/// A header with every field the directory looks at, from the fixtures' client; a request
/// carries the switch's epoch, as a client that has learned it.
fn header(op: Op, key: &[u8], version: u64, flags: u8, request_id: u32, server_id: u8) -> Header {
    let epoch = if op.is_request() { EPOCH } else { 0 };
    Header {
        version,
        flags,
        ..Header::request(op, key_hash(key), CLIENT_ID, request_id, server_id)
            .with_client_epoch(epoch)
    }
}

/// A message with every header field the directory looks at.
fn message(
    op: Op,
    key: &[u8],
    value: &[u8],
    version: u64,
    flags: u8,
    request_id: u32,
    server_id: u8,
) -> Vec<u8> {
    fixtures::payload(
        header(op, key, version, flags, request_id, server_id),
        key,
        value,
    )
}

fn to_server(payload: Vec<u8>) -> UdpFrame {
    UdpFrame::new(addr("10.2.0.2:40000"), addr("10.1.0.2:7400"), payload)
}

fn to_client(payload: Vec<u8>) -> UdpFrame {
    UdpFrame::new(addr("10.1.0.2:7400"), addr("10.2.0.2:40000"), payload)
}

fn stamped(counter: u64) -> u64 {
    version::make(EPOCH, counter).unwrap()
}

/// `frame` with 4 bytes inserted at `at` (an IP option, a VLAN tag) and the IPv4 header's
/// fields changed by `edit`; its checksums are left as they were (the frame is dropped whole).
fn with_inserted(frame: &UdpFrame, at: usize, bytes: [u8; 4], edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut out = frame.build();
    out.splice(at..at, bytes);
    edit(&mut out);
    out
}

#[test]
fn every_rule_has_its_fixture() {
    let bench = setup("fx", Policy::RoundRobin, 1);
    let unchanged = |name, frame: Vec<u8>| Fixture {
        name,
        output: frame.clone(),
        input: frame,
        action: action::PASS,
    };
    let dropped = |name, frame: Vec<u8>| Fixture {
        name,
        output: frame.clone(),
        input: frame,
        action: action::DROP,
    };
    let put = to_server(pegasus(Op::Put, b"key", b"value", 0, 0));
    let put_stamped = |n| to_server(pegasus(Op::Put, b"key", b"value", stamped(n), 0));
    let nth_put = |id| to_server(nth_request(Op::Put, b"key", 0, 0, id));
    let nth_put_stamped = |id, n| to_server(nth_request(Op::Put, b"key", stamped(n), 0, id));
    let a_window_later = FIRST_REQUEST + once::WRITE_WINDOW;
    let mut zero_sum_put = to_server(message(Op::Put, b"z", b"v", 0, 0, FIRST_REQUEST + 2, 0));
    zero_sum_put.zero_udp_checksum = true;
    let mut zero_sum_expected = to_server(message(
        Op::Put,
        b"z",
        b"v",
        stamped(3),
        0,
        FIRST_REQUEST + 2,
        0,
    ));
    zero_sum_expected.zero_udp_checksum = true;
    let before_restart = with_client_epoch(nth_request(Op::Put, b"key", 0, 0, 7), EPOCH - 1);
    let no_epoch = with_client_epoch(nth_request(Op::Put, b"key", 0, 0, 8), 0);
    let get = to_server(pegasus(Op::Get, b"key", b"", 0, 0));
    // A server's PUT stamped upstream (server 1 to server 0, as a copy would go).
    let chained = UdpFrame::new(
        server_addr(1),
        server_addr(0),
        pegasus(Op::Put, b"key", b"v", 99, wire::flags::STAMPED),
    );
    // A client forging every switch-only field of a PUT: STAMPED, HOT, CACHED, a version and
    // a replica bitmap; only its RETRY flag is a client's to set.
    let forged_flags = wire::flags::STAMPED | wire::flags::HOT | wire::flags::CACHED;
    let forged_put = to_server(with_replicas(
        message(
            Op::Put,
            b"key",
            b"v",
            u64::MAX,
            forged_flags | wire::flags::RETRY,
            FIRST_REQUEST + 3,
            0,
        ),
        u64::MAX,
    ));
    let cleaned_put = to_server(message(
        Op::Put,
        b"key",
        b"v",
        stamped(4),
        wire::flags::RETRY,
        FIRST_REQUEST + 3,
        0,
    ));
    let forged_get = to_server(with_replicas(
        pegasus(Op::Get, b"key", b"", 77, forged_flags),
        0b110,
    ));
    let cleaned_get = to_server(pegasus(Op::Get, b"key", b"", 0, 0));
    let reply = reply_from(0, pegasus(Op::GetReply, b"", b"value", stamped(1), 0));
    // A reply sent from a client's address, and one from server 1 claiming to be server 0.
    let reply_from_client = UdpFrame::new(
        addr("10.2.0.2:7400"),
        server_addr(0),
        reply_msg(Op::GetReply, b"key", b"forged", u64::MAX, 0, 1, 0),
    );
    let reply_for_another = reply_from(
        1,
        reply_msg(Op::ReplicateAck, b"key", b"", u64::MAX, 0, 1, 0),
    );
    let from_client = |op, client: u16| {
        let mut m = pegasus(op, b"key", b"v", 5, 0);
        m[wire::offset::CLIENT_ID..wire::offset::CLIENT_ID + 2]
            .copy_from_slice(&client.to_be_bytes());
        to_server(m).build()
    };
    let mut ttl_one = get.clone();
    ttl_one.ttl = 1;
    let no_neighbour = UdpFrame::new(
        addr("10.2.0.2:40000"),
        addr("10.1.0.99:7400"),
        pegasus(Op::Get, b"k", b"", 0, 0),
    );
    let mut bad_magic = pegasus(Op::Get, b"k", b"", 0, 0);
    bad_magic[0] = 0x00;
    let mut bad_version = pegasus(Op::Put, b"k", b"v", 0, 0);
    bad_version[wire::offset::PROTO_VERSION] = 9;
    let mut unknown_op = pegasus(Op::Put, b"k", b"v", 0, 0);
    unknown_op[wire::offset::OP] = 200;
    let short = pegasus(Op::Put, b"k", b"v", 0, 0)[..wire::HEADER_LEN - 1].to_vec();
    let ip = packet::ETH_LEN;
    // IHL 6 with four NOP option bytes: the UDP header is 4 bytes further on.
    let with_ip_options = with_inserted(&put, ip + 20, [1, 1, 1, 1], |f| {
        f[ip] = 0x46;
        let total = u16::from_be_bytes([f[ip + 2], f[ip + 3]]) + 4;
        f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    });
    let vlan_tagged = with_inserted(&put, 12, [0x81, 0x00, 0x00, 0x07], |_| {});
    let mut first_fragment = put.build();
    first_fragment[ip + 6] |= 0x20; // more fragments, offset 0
    let mut later_fragment = put.build();
    later_fragment[ip + 6..ip + 8].copy_from_slice(&[0x00, 0x10]); // offset 128 bytes
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);

    let fixtures = [
        Fixture {
            name: "a PUT gets the next version and is forwarded to the server",
            input: put.build(),
            action: action::REDIRECT,
            output: forwarded(put_stamped(1), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "the next PUT gets a larger version",
            input: nth_put(FIRST_REQUEST + 1).build(),
            action: action::REDIRECT,
            output: forwarded(
                nth_put_stamped(FIRST_REQUEST + 1, 2),
                SERVER_PORT_MAC,
                SERVER_MAC,
            ),
        },
        Fixture {
            name: "a copy of the first PUT (a duplicate, a retry) gets its version again",
            input: put.build(),
            action: action::REDIRECT,
            output: forwarded(put_stamped(1), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "a zero UDP checksum stays zero when the version is stamped",
            input: zero_sum_put.build(),
            action: action::REDIRECT,
            output: forwarded(zero_sum_expected, SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "a GET is forwarded with its header untouched",
            input: get.build(),
            action: action::REDIRECT,
            output: forwarded(get.clone(), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "a server's PUT stamped upstream keeps its version",
            input: chained.build(),
            action: action::REDIRECT,
            output: forwarded(chained.clone(), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "client port: a PUT's version, bitmap, STAMPED, HOT, CACHED are cleared; stamped",
            input: forged_put.build(),
            action: action::REDIRECT,
            output: forwarded(cleaned_put, SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "a PUT a window after the first takes its slot in the client's window",
            input: nth_put(a_window_later).build(),
            action: action::REDIRECT,
            output: forwarded(
                nth_put_stamped(a_window_later, 5),
                SERVER_PORT_MAC,
                SERVER_MAC,
            ),
        },
        dropped(
            "then a copy of the first PUT is stale (its client has finished it): dropped",
            put.build(),
        ),
        Fixture {
            name: "a PUT from before a switch restart is marked STALE_EPOCH, not stamped",
            input: to_server(before_restart.clone()).build(),
            action: action::REDIRECT,
            output: forwarded(
                to_server(marked_stale(before_restart)),
                SERVER_PORT_MAC,
                SERVER_MAC,
            ),
        },
        Fixture {
            name: "a PUT from a client that has learned no epoch is marked STALE_EPOCH",
            input: to_server(no_epoch.clone()).build(),
            action: action::REDIRECT,
            output: forwarded(
                to_server(marked_stale(no_epoch)),
                SERVER_PORT_MAC,
                SERVER_MAC,
            ),
        },
        Fixture {
            name: "client port: a GET's switch-only fields are cleared",
            input: forged_get.build(),
            action: action::REDIRECT,
            output: forwarded(cleaned_get, SERVER_PORT_MAC, SERVER_MAC),
        },
        dropped(
            "client port: a REPLICATE is dropped",
            from_client(Op::Replicate, 7),
        ),
        dropped("client port: a PUSH is dropped", from_client(Op::Push, 7)),
        dropped(
            "client port: a CHAIN_PUT is dropped",
            from_client(Op::ChainPut, 7),
        ),
        dropped(
            "client port: the controller's client id is dropped",
            from_client(Op::Get, wire::CONTROLLER_CLIENT_ID),
        ),
        Fixture {
            name: "a server's reply is forwarded to the client",
            input: reply.build(),
            action: action::REDIRECT,
            output: forwarded(reply.clone(), CLIENT_PORT_MAC, CLIENT_MAC),
        },
        dropped("client port: a reply is dropped", reply_from_client.build()),
        dropped(
            "server port: a reply claiming another server's id is dropped",
            reply_for_another.build(),
        ),
        unchanged(
            "TTL 1 goes to the kernel (ICMP time exceeded)",
            ttl_one.build(),
        ),
        unchanged(
            "no neighbour entry: the kernel resolves and forwards",
            no_neighbour.build(),
        ),
        dropped(
            "bad magic on the store port: dropped",
            to_server(bad_magic).build(),
        ),
        dropped(
            "unknown protocol version: dropped",
            to_server(bad_version).build(),
        ),
        dropped("unknown op: dropped", to_server(unknown_op).build()),
        dropped("truncated header: dropped", to_server(short).build()),
        dropped(
            "a request sent from the store port: dropped",
            to_client(pegasus(Op::Put, b"k", b"v", 0, 0)).build(),
        ),
        unchanged(
            "other UDP traffic: passed",
            UdpFrame::new(addr("10.2.0.2:40000"), addr("10.1.0.2:53"), b"dns".to_vec()).build(),
        ),
        dropped(
            "IPv4 with options to the store port: dropped",
            with_ip_options,
        ),
        dropped(
            "a VLAN-tagged request to the store port: dropped",
            vlan_tagged,
        ),
        dropped(
            "a first fragment to the store port: dropped",
            first_fragment,
        ),
        unchanged(
            "a later fragment (no UDP header; its first is dropped): passed",
            later_fragment,
        ),
        unchanged("not IPv4 (ARP): passed", arp),
        unchanged("a runt frame: passed", vec![0u8; 14]),
    ];
    for f in &fixtures {
        check(&bench.switch, f);
    }

    let c = bench.switch.counters().unwrap();
    assert_eq!(c.get(Counter::Packets), fixtures.len() as u64);
    assert_eq!(c.get(Counter::VerdictRedirect), 12);
    assert_eq!(c.get(Counter::WritesStamped), 5);
    assert_eq!(c.get(Counter::StampsReused), 1);
    assert_eq!(c.get(Counter::StaleDuplicates), 1);
    assert_eq!(c.get(Counter::StaleEpochs), 2);
    assert_eq!(c.get(Counter::RequestsCleaned), 2);
    assert_eq!(c.get(Counter::RoleDrops), 6);
    assert_eq!(c.get(Counter::ParseFailures), 5);
    assert_eq!(c.get(Counter::Unparseable), 3);
    assert_eq!(c.get(Counter::FibMisses), 1);
    assert_eq!(bench.switch.version_counter().unwrap(), 5);
}

/// Random payloads from a client to the store port: the program either treats the packet as
/// a client's GET or PUT (then only the version, flags, replica bitmap, MACs, TTL and
/// checksums may change, and the switch-only fields end up cleared) or drops it untouched.
#[test]
fn random_payloads_are_forwarded_cleaned_or_dropped() {
    let bench = setup("fz", Policy::RoundRobin, 1);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
    runner
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..200),
                any::<bool>(),
                1u8..=12,
            ),
            |(mut payload, valid_prefix, op)| {
                if valid_prefix && payload.len() >= 4 {
                    payload[..4].copy_from_slice(&[0x50, 0x47, 1, op]);
                }
                let input = to_server(payload.clone()).build();
                let PacketVerdict { action, packet } = bench.switch.run_on_packet(&input).unwrap();
                prop_assert_eq!(packet.len(), input.len());
                match action {
                    action::DROP => prop_assert_eq!(&packet, &input),
                    action::REDIRECT => {
                        prop_assert!(payload.len() >= wire::HEADER_LEN);
                        prop_assert!(payload[3] == Op::Get as u8 || payload[3] == Op::Put as u8);
                        let out = &packet[packet::PAYLOAD_OFFSET..];
                        let (v, f, b) = (
                            wire::offset::VERSION,
                            wire::offset::FLAGS,
                            wire::offset::REPLICA_BITMAP,
                        );
                        // Everything but the version, flags and bitmap is as sent.
                        prop_assert_eq!(&out[..v], &payload[..v]);
                        prop_assert_eq!(&out[v + 8..f], &payload[v + 8..f]);
                        prop_assert_eq!(&out[b + 4..], &payload[b + 4..]);
                        prop_assert_eq!(out[f], payload[f] & wire::flags::RETRY);
                        prop_assert_eq!(&out[b..b + 4], &[0u8; 4][..]);
                        prop_assert!(packet::ipv4_checksum_ok(&packet));
                        prop_assert_eq!(
                            packet::udp_checksum_field(&packet),
                            packet::udp_checksum(&packet)
                        );
                    }
                    other => prop_assert!(false, "unexpected verdict {}", action::name(other)),
                }
                Ok(())
            },
        )
        .unwrap();
}

fn server_addr(i: u8) -> std::net::SocketAddrV4 {
    testbed::server_addr(i, PORT)
}

/// A request from the client to server `i`.
fn request_to(i: u8, payload: Vec<u8>) -> UdpFrame {
    testbed::request_to(i, PORT, payload)
}

/// A reply from server `i` to the client.
fn reply_from(i: u8, payload: Vec<u8>) -> UdpFrame {
    testbed::reply_from(i, PORT, payload)
}

/// Sets the replica bitmap of a built Pegasus payload.
fn with_replicas(mut payload: Vec<u8>, replicas: ServerSet) -> Vec<u8> {
    let at = wire::offset::REPLICA_BITMAP;
    payload[at..at + 8].copy_from_slice(&replicas.to_be_bytes());
    payload
}

/// Runs a read reply of `version` from home (server 0) through the program: it ends the new
/// entry's installing state.
fn confirm_from_home(switch: &Switch, version: u64) {
    let reply = reply_from(0, reply_msg(Op::GetReply, HOT_KEY, b"v", version, 0, 1, 0));
    assert_eq!(
        switch.run_on_packet(&reply.build()).unwrap().action,
        action::REDIRECT
    );
    let e = switch.directory_entry(key_hash(HOT_KEY)).unwrap().unwrap();
    assert_eq!(e.installing, 0, "home's reply ends the installing state");
}

fn entry_state(switch: &Switch) -> (u64, ServerSet) {
    let e = switch
        .directory_entry(key_hash(HOT_KEY))
        .unwrap()
        .expect("the hot key has an entry");
    (e.ver_completed, e.rset)
}

/// A hot key's directory entry, as a fixture row sets it before its packet.
#[derive(Clone, Copy, Debug)]
struct EntryState {
    version: u64,
    rset: ServerSet,
    /// Installing: only home's replies count (a new entry).
    installing: bool,
    evicting: bool,
    /// The entry's read and write sequences (round robin takes turns by them).
    reads: u64,
    writes: u64,
}

/// An entry of the hot key (home: server 0) with `version` complete at `rset`.
const fn entry(version: u64, rset: ServerSet) -> EntryState {
    EntryState {
        version,
        rset,
        installing: false,
        evicting: false,
        reads: 0,
        writes: 0,
    }
}

/// The retry-route slot of the row's request, set before its packet.
#[derive(Clone, Copy, Debug)]
enum RouteState {
    /// Empty (no route remembered there).
    Empty,
    /// This request's route, to server I.
    Mine(u8),
    /// Another request's route, written just now.
    Others,
}

/// One rule of the directory: the map state, the packet, the verdict and bytes, and the
/// entry and counters after.
struct DirectoryRow {
    fixture: Fixture,
    /// The hot key's entry before the packet; `None`: not in the directory.
    before: Option<EntryState>,
    /// The retry slot of the packet's request (client 7, its request id).
    route: Option<(u32, RouteState)>,
    /// (completed version, replica set, installing) after; `None`: not in the directory.
    after: Option<(u64, ServerSet, bool)>,
    /// Counters the packet must raise by one each.
    counted: &'static [Counter],
}

/// Puts the switch in the row's state: the hot key's entry (or none), its evicting mark, the
/// version counter at 0 (a stamped PUT gets counter 1) with the client's write window empty,
/// the request's retry slot.
fn set_state(switch: &mut Switch, row: &DirectoryRow) {
    let keyhash = key_hash(HOT_KEY);
    switch.set_version_counter(0).unwrap();
    switch
        .set_write_window(CLIENT_ID, once::ClientWindow::default())
        .unwrap();
    match row.before {
        Some(e) => {
            let mut value = switch::DirEntry::new(keyhash, 0);
            value.ver_completed = e.version;
            value.rset = e.rset;
            value.installing = e.installing as u8;
            value.reads = e.reads;
            value.writes = e.writes;
            switch.set_directory_entry(keyhash, value).unwrap();
            switch.set_evicting(keyhash, e.evicting).unwrap();
        }
        None => {
            if switch.directory_entry(keyhash).unwrap().is_some() {
                switch.set_evicting(keyhash, false).unwrap();
                switch.directory_remove(keyhash).unwrap();
            }
        }
    }
    if let Some((request_id, state)) = row.route {
        let route = switch::retry_route(CLIENT_ID, request_id);
        let slot = match state {
            RouteState::Empty => switch::RetrySlot::default(),
            RouteState::Mine(server) => switch::RetrySlot {
                word: route.word(testbed::server_ip(server).octets()),
                written_ns: 0,
            },
            RouteState::Others => {
                let other = (request_id + 1..)
                    .map(|id| switch::retry_route(CLIENT_ID, id))
                    .find(|r| r.slot == route.slot)
                    .unwrap();
                switch::RetrySlot {
                    word: other.word([10, 1, 2, 2]),
                    written_ns: coarse_now_ns(),
                }
            }
        };
        switch.set_retry_slot(route.slot, slot).unwrap();
    }
}

/// The clock the program stamps retry routes with (`bpf_ktime_get_coarse_ns`).
fn coarse_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) },
        0
    );
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The directory's rules as a table, one row per rule, each from a state of its own: round
/// robin (so that choices are predictable), three servers, replication 2; the hot key's home
/// is server 0.
#[test]
fn directory_rules_have_their_fixtures() {
    let mut bench = setup("dir", Policy::RoundRobin, 2);
    let hot = HOT_KEY;
    let hot_flag = wire::flags::HOT;
    let retry = wire::flags::RETRY;
    let get = |req| message(Op::Get, hot, b"", 0, 0, req, 0);
    let get_steered = |req, to: u8| {
        forwarded(
            request_to(to, message(Op::Get, hot, b"", 0, hot_flag, req, 0)),
            server_port_mac(to),
            server_mac(to),
        )
    };
    let to_client = |frame: UdpFrame| forwarded(frame, CLIENT_PORT_MAC, CLIENT_MAC);
    let dropped = |frame: UdpFrame| (frame.build(), frame.build());
    let installing = EntryState {
        installing: true,
        ..entry(0, bit(0))
    };
    let set_12 = bit(1) | bit(2);
    let evicting = EntryState {
        evicting: true,
        ..entry(50, set_12)
    };
    let frozen = EntryState {
        evicting: true,
        ..entry(stamped(1), bit(0))
    };

    let stale_steered = reply_from(1, reply_msg(Op::GetReply, hot, b"s", 30, hot_flag, 1, 1));
    let from_home = reply_from(0, reply_msg(Op::GetReply, hot, b"h", 20, hot_flag, 1, 0));
    let newer = reply_from(1, reply_msg(Op::PutReply, hot, b"", 50, hot_flag, 9, 1));
    let ack = UdpFrame::new(
        server_addr(2),
        server_addr(1),
        reply_msg(Op::ReplicateAck, hot, b"", 50, 0, 9, 2),
    );
    let older = reply_from(0, reply_msg(Op::GetReply, hot, b"old", 49, 0, 3, 0));
    let cold = request_to(2, message(Op::Get, b"cold", b"", 0, 0, 7, 2));
    let mut stray = reply_from(2, reply_msg(Op::GetReply, hot, b"x", 60, hot_flag, 8, 2));
    stray.payload[wire::offset::KEYHASH..wire::offset::KEYHASH + 8]
        .copy_from_slice(&key_hash(b"cold").to_be_bytes());
    let home_reply = reply_from(0, reply_msg(Op::PutReply, hot, b"", stamped(1), 0, 102, 0));
    let late = reply_from(
        1,
        reply_msg(Op::PutReply, hot, b"", stamped(9), hot_flag, 101, 1),
    );
    let unroutable = request_to(0, message(Op::Put, hot, b"y", 0, retry, 900, 0));
    let unroutable_stamped = request_to(0, message(Op::Put, hot, b"y", stamped(1), retry, 900, 0));

    let rows = [
        DirectoryRow {
            fixture: Fixture {
                name: "a new (installing) entry: a read goes to home, marked HOT",
                input: request_to(0, get(1)).build(),
                action: action::REDIRECT,
                output: get_steered(1, 0),
            },
            before: Some(installing),
            route: None,
            after: Some((0, bit(0), true)),
            counted: &[Counter::HotReads],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "installing: a steered reply from another server is dropped",
                input: dropped(stale_steered.clone()).0,
                action: action::DROP,
                output: dropped(stale_steered).1,
            },
            before: Some(installing),
            route: None,
            after: Some((0, bit(0), true)),
            counted: &[Counter::RepliesDropped],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "installing: home's reply is applied and ends the installing state",
                input: from_home.build(),
                action: action::REDIRECT,
                output: to_client(from_home),
            },
            before: Some(installing),
            route: None,
            after: Some((20, bit(0), false)),
            counted: &[Counter::DirectoryUpdates],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "a newer version: the replica set becomes the sender",
                input: newer.build(),
                action: action::REDIRECT,
                output: to_client(newer),
            },
            before: Some(entry(20, bit(0))),
            route: None,
            after: Some((50, bit(1), false)),
            counted: &[Counter::DirectoryUpdates],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "a hot read goes to the replica set: destination rewritten",
                input: request_to(0, get(2)).build(),
                action: action::REDIRECT,
                output: get_steered(2, 1),
            },
            before: Some(entry(50, bit(1))),
            route: None,
            after: Some((50, bit(1), false)),
            counted: &[Counter::HotReads],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "the same version: the sender joins; its replicate ack ends here",
                input: ack.build(),
                action: action::DROP,
                output: ack.build(),
            },
            before: Some(entry(50, bit(1))),
            route: None,
            after: Some((50, set_12, false)),
            counted: &[Counter::DirectoryUpdates, Counter::ReplicateAcks],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "an older version changes nothing and is forwarded",
                input: older.build(),
                action: action::REDIRECT,
                output: to_client(older),
            },
            before: Some(entry(50, set_12)),
            route: None,
            after: Some((50, set_12, false)),
            counted: &[],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "hot reads take turns over the replica set (read 2: server 1)",
                input: request_to(0, get(4)).build(),
                action: action::REDIRECT,
                output: get_steered(4, 1),
            },
            before: Some(EntryState {
                reads: 2,
                ..entry(50, set_12)
            }),
            route: None,
            after: Some((50, set_12, false)),
            counted: &[Counter::HotReads],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "hot reads take turns over the replica set (read 3: server 2)",
                input: request_to(0, get(5)).build(),
                action: action::REDIRECT,
                output: get_steered(5, 2),
            },
            before: Some(EntryState {
                reads: 3,
                ..entry(50, set_12)
            }),
            route: None,
            after: Some((50, set_12, false)),
            counted: &[Counter::HotReads],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "a hot write: stamped, a primary by the policy, copies in its bitmap",
                input: request_to(0, message(Op::Put, hot, b"v", 0, 0, 100, 0)).build(),
                action: action::REDIRECT,
                output: forwarded(
                    request_to(
                        0,
                        with_replicas(
                            message(Op::Put, hot, b"v", stamped(1), hot_flag, 100, 0),
                            bit(1),
                        ),
                    ),
                    server_port_mac(0),
                    server_mac(0),
                ),
            },
            before: Some(entry(50, set_12)),
            route: Some((100, RouteState::Empty)),
            after: Some((50, set_12, false)),
            counted: &[Counter::HotWrites, Counter::WritesStamped],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "the next hot write goes to the next primary, copied to the next server",
                input: request_to(0, message(Op::Put, hot, b"w", 0, 0, 101, 0)).build(),
                action: action::REDIRECT,
                output: forwarded(
                    request_to(
                        1,
                        with_replicas(
                            message(Op::Put, hot, b"w", stamped(1), hot_flag, 101, 0),
                            bit(2),
                        ),
                    ),
                    server_port_mac(1),
                    server_mac(1),
                ),
            },
            before: Some(EntryState {
                writes: 1,
                ..entry(50, set_12)
            }),
            route: Some((101, RouteState::Empty)),
            after: Some((50, set_12, false)),
            counted: &[Counter::HotWrites],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "a retried write goes where its first attempt went",
                input: request_to(0, message(Op::Put, hot, b"w", 0, retry, 101, 0)).build(),
                action: action::REDIRECT,
                output: forwarded(
                    request_to(
                        1,
                        message(Op::Put, hot, b"w", stamped(1), retry | hot_flag, 101, 0),
                    ),
                    server_port_mac(1),
                    server_mac(1),
                ),
            },
            before: Some(entry(50, set_12)),
            route: Some((101, RouteState::Mine(1))),
            after: Some((50, set_12, false)),
            counted: &[Counter::RetriesPinned],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "a retry with no remembered route goes where it is addressed",
                input: request_to(0, message(Op::Put, hot, b"x", 0, retry, 555, 0)).build(),
                action: action::REDIRECT,
                output: forwarded(
                    request_to(0, message(Op::Put, hot, b"x", stamped(1), retry, 555, 0)),
                    server_port_mac(0),
                    server_mac(0),
                ),
            },
            before: Some(entry(50, set_12)),
            route: Some((555, RouteState::Empty)),
            after: Some((50, set_12, false)),
            counted: &[],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "a retry whose slot holds another request's fresh route is dropped",
                input: unroutable.build(),
                action: action::DROP,
                output: unroutable_stamped.build(),
            },
            before: Some(entry(50, set_12)),
            route: Some((900, RouteState::Others)),
            after: Some((50, set_12, false)),
            counted: &[Counter::RetriesDropped],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "a cold key's read goes home untouched",
                input: cold.build(),
                action: action::REDIRECT,
                output: forwarded(cold, server_port_mac(2), server_mac(2)),
            },
            before: None,
            route: None,
            after: None,
            counted: &[],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "a steered reply for a key not in the directory is dropped",
                input: stray.build(),
                action: action::DROP,
                output: stray.build(),
            },
            before: None,
            route: None,
            after: None,
            counted: &[Counter::RepliesDropped],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "evicting: a write goes home, unsteered",
                input: request_to(0, message(Op::Put, hot, b"h", 0, 0, 102, 0)).build(),
                action: action::REDIRECT,
                output: forwarded(
                    request_to(0, message(Op::Put, hot, b"h", stamped(1), 0, 102, 0)),
                    server_port_mac(0),
                    server_mac(0),
                ),
            },
            before: Some(evicting),
            route: Some((102, RouteState::Empty)),
            after: Some((50, set_12, false)),
            counted: &[Counter::WritesStamped],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "evicting: home's newer reply brings it up to date (frozen on home)",
                input: home_reply.build(),
                action: action::REDIRECT,
                output: to_client(home_reply),
            },
            before: Some(evicting),
            route: None,
            after: Some((stamped(1), bit(0), false)),
            counted: &[Counter::DirectoryUpdates],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "frozen on home: reads go home",
                input: request_to(0, get(6)).build(),
                action: action::REDIRECT,
                output: get_steered(6, 0),
            },
            before: Some(frozen),
            route: None,
            after: Some((stamped(1), bit(0), false)),
            counted: &[Counter::HotReads],
        },
        DirectoryRow {
            fixture: Fixture {
                name: "frozen on home: a steered reply from another server is dropped",
                input: late.build(),
                action: action::DROP,
                output: late.build(),
            },
            before: Some(frozen),
            route: None,
            after: Some((stamped(1), bit(0), false)),
            counted: &[Counter::RepliesDropped],
        },
    ];
    for row in &rows {
        set_state(&mut bench.switch, row);
        let counters_before = bench.switch.counters().unwrap();
        check(&bench.switch, &row.fixture);
        let name = row.fixture.name;
        let after = bench
            .switch
            .directory_entry(key_hash(HOT_KEY))
            .unwrap()
            .map(|e| (e.ver_completed, e.rset, e.installing != 0));
        assert_eq!(after, row.after, "{name}: the entry after");
        let counters_after = bench.switch.counters().unwrap();
        for &c in row.counted {
            assert_eq!(
                counters_after.get(c),
                counters_before.get(c) + 1,
                "{name}: counter {}",
                c.name()
            );
        }
        for c in [Counter::LockBusy, Counter::VerdictPass] {
            assert_eq!(
                counters_after.get(c),
                counters_before.get(c),
                "{name}: {}",
                c.name()
            );
        }
    }
}

/// The controller's side of an entry: a new one is installing with home as its only replica,
/// a live one is never overwritten, and removal takes its evicting mark with it.
#[test]
fn directory_entries_are_added_and_removed_safely() {
    let mut bench = setup("dir-life", Policy::RoundRobin, 2);
    let keyhash = key_hash(HOT_KEY);
    bench.switch.directory_insert(keyhash, 0).unwrap();
    let e = bench.switch.directory_entry(keyhash).unwrap().unwrap();
    assert_eq!((e.ver_completed, e.rset, e.installing), (0, bit(0), 1));
    assert!(
        bench.switch.directory_insert(keyhash, 0).is_err(),
        "never overwrite a live entry"
    );
    bench.switch.set_evicting(keyhash, true).unwrap();
    bench.switch.directory_remove(keyhash).unwrap();
    assert!(bench.switch.directory_entry(keyhash).unwrap().is_none());
    assert!(!bench.switch.is_evicting(keyhash).unwrap());
}

/// A new entry listens to home only until home answers: writes go home unsteered (reads go
/// to the replica set, which is {home}); home's reply then lets the policy steer writes.
#[test]
fn installing_entries_send_writes_home_until_home_answers() {
    let bench = setup("in", Policy::RoundRobin, 2);
    let mut switch = bench.switch;
    switch.directory_insert(key_hash(HOT_KEY), 1).unwrap();
    let put = |req| request_to(1, message(Op::Put, HOT_KEY, b"v", 0, 0, req, 0));
    // Installing: home (server 1), unstamped flags, no replica bitmap.
    check(
        &switch,
        &Fixture {
            name: "installing: a write goes home, unsteered",
            input: put(1).build(),
            action: action::REDIRECT,
            output: forwarded(
                request_to(1, message(Op::Put, HOT_KEY, b"v", stamped(1), 0, 1, 0)),
                server_port_mac(1),
                server_mac(1),
            ),
        },
    );
    // Home answers that write: the entry is confirmed at its version.
    let home_reply = reply_from(
        1,
        reply_msg(Op::PutReply, HOT_KEY, b"", stamped(1), 0, 1, 1),
    );
    assert_eq!(
        switch.run_on_packet(&home_reply.build()).unwrap().action,
        action::REDIRECT
    );
    assert_eq!(entry_state(&switch), (stamped(1), bit(1)));
    // Now writes are steered: round robin over all servers at write sequence 1: server 1,
    // copied to server 2.
    check(
        &switch,
        &Fixture {
            name: "confirmed: writes are steered",
            input: put(2).build(),
            action: action::REDIRECT,
            output: forwarded(
                request_to(
                    1,
                    with_replicas(
                        message(Op::Put, HOT_KEY, b"v", stamped(2), wire::flags::HOT, 2, 0),
                        bit(2),
                    ),
                ),
                server_port_mac(1),
                server_mac(1),
            ),
        },
    );
    assert_eq!(switch.counters().unwrap().get(Counter::HotWrites), 1);
}

/// Least loaded: the switch learns loads from replies and sends a hot read to the least
/// loaded member of the replica set.
#[test]
fn least_loaded_follows_reported_loads() {
    let bench = setup("ll", Policy::LeastLoaded, 1);
    let mut switch = bench.switch;
    let keyhash = key_hash(HOT_KEY);
    switch.directory_insert(keyhash, 0).unwrap();
    // All three servers hold version 5, with loads 9, 2 and 7.
    for (server, load) in [(0u8, 9u16), (1, 2), (2, 7)] {
        let mut payload = reply_msg(Op::GetReply, HOT_KEY, b"v", 5, 0, 1, server);
        payload[wire::offset::LOAD..wire::offset::LOAD + 2].copy_from_slice(&load.to_be_bytes());
        switch
            .run_on_packet(&reply_from(server, payload).build())
            .unwrap();
    }
    assert_eq!(switch.server_loads().unwrap(), vec![(0, 9), (1, 2), (2, 7)]);
    assert_eq!(entry_state(&switch), (5, bit(0) | bit(1) | bit(2)));
    for req in 0..20 {
        let out = switch
            .run_on_packet(&request_to(0, message(Op::Get, HOT_KEY, b"", 0, 0, req, 0)).build())
            .unwrap();
        assert_eq!(out.action, action::REDIRECT);
        assert_eq!(
            &out.packet[packet::ETH_LEN + 16..packet::ETH_LEN + 20],
            &[10, 1, 1, 2],
            "server 1 is the least loaded"
        );
    }
}

/// One first attempt of a GET or PUT in `sample_period` reaches the samples ring buffer, with
/// its key; retries, replies and other ops are never sampled.
#[test]
fn requests_are_sampled_with_their_keys() {
    // The sampler's countdown is per CPU: every run of the program must see the same one.
    pegasus_control::testkit::pin_to_cpu(0).unwrap();
    let settings = SwitchSettings {
        sample_period: 3,
        ..SwitchSettings::forwarding_only(PORT, EPOCH)
    };
    let mut bench = Testbed::new("smp", 3, settings).unwrap();
    let mut reader = bench.switch.take_samples().unwrap();
    assert!(bench.switch.take_samples().is_err(), "one reader");
    let run = |payload: Vec<u8>| {
        bench
            .switch
            .run_on_packet(&request_to(0, payload).build())
            .unwrap();
    };
    let long_key = vec![b'k'; wire::MAX_KEY_LEN];
    for i in 0..9u32 {
        let key = if i == 8 {
            long_key.clone()
        } else {
            format!("key{i}").into_bytes()
        };
        let op = if i % 2 == 0 { Op::Get } else { Op::Put };
        run(message(op, &key, b"v", 0, 0, i, 0));
        // Never sampled: retries, replies.
        run(message(Op::Put, &key, b"v", 0, wire::flags::RETRY, i, 0));
        bench
            .switch
            .run_on_packet(&to_client(reply_msg(Op::GetReply, &key, b"v", 5, 0, i, 0)).build())
            .unwrap();
    }
    let mut samples = Vec::new();
    assert_eq!(reader.drain(|s| samples.push(*s)), 3);
    let seen: Vec<(Vec<u8>, u64, u8)> = samples
        .iter()
        .map(|s| (s.key().unwrap().to_vec(), s.keyhash, s.op))
        .collect();
    // The countdown starts at 0: the 1st, 4th and 7th first attempts are sampled.
    let expected: Vec<(Vec<u8>, u64, u8)> = [0u32, 3, 6]
        .iter()
        .map(|&i| {
            let key = format!("key{i}").into_bytes();
            let op = if i % 2 == 0 { Op::Get } else { Op::Put };
            (key.clone(), key_hash(&key), op as u8)
        })
        .collect();
    assert_eq!(seen, expected);
    let counters = bench.switch.counters().unwrap();
    assert_eq!(counters.get(Counter::Samples), 3);
    assert_eq!(counters.get(Counter::SamplesLost), 0);
    // The longest key fits whole.
    let settings = SwitchSettings {
        sample_period: 1,
        ..SwitchSettings::forwarding_only(PORT, EPOCH)
    };
    let mut bench = Testbed::new("smq", 3, settings).unwrap();
    let mut reader = bench.switch.take_samples().unwrap();
    bench
        .switch
        .run_on_packet(&request_to(0, message(Op::Get, &long_key, b"", 0, 0, 1, 0)).build())
        .unwrap();
    let mut keys = Vec::new();
    reader.drain(|s| keys.push(s.key().unwrap().to_vec()));
    assert_eq!(keys, vec![long_key]);
    // Every key length, with and without bytes after the key: short keys are copied by
    // direct loads (16 bytes, whatever follows), longer ones by the helper; each record holds
    // its key whole and nothing else counts.
    let mut sent = Vec::new();
    for (i, len) in [1usize, 4, 15, 16, 17, 24, 32, 255, 256]
        .into_iter()
        .enumerate()
    {
        for (j, value) in [&b""[..], b"v", &[7u8; 100]].into_iter().enumerate() {
            let key: Vec<u8> = (0..len).map(|b| b'a' + ((b + i + j) % 26) as u8).collect();
            let op = if j == 0 { Op::Get } else { Op::Put };
            let request_id = (i * 3 + j) as u32 + 10;
            bench
                .switch
                .run_on_packet(
                    &request_to(0, message(op, &key, value, 0, 0, request_id, 0)).build(),
                )
                .unwrap();
            sent.push((key.clone(), key_hash(&key), op as u8));
        }
    }
    let mut seen = Vec::new();
    reader.drain(|s| seen.push((s.key().unwrap().to_vec(), s.keyhash, s.op)));
    assert_eq!(seen, sent);
}

/// A restarted switch fences its retry routes: a retried write it did not steer itself is
/// dropped (its first attempt may have been steered by the switch before it), while its own
/// steered writes are still pinned on retry, and first attempts are untouched.
#[test]
fn a_fenced_switch_drops_retries_it_cannot_place() {
    let bench = setup("fen", Policy::RoundRobin, 1);
    let mut switch = bench.switch;
    switch.directory_insert(key_hash(HOT_KEY), 0).unwrap();
    confirm_from_home(&switch, 5);
    switch.fence_retries().unwrap();
    let put = |req, flags| request_to(0, message(Op::Put, HOT_KEY, b"v", 0, flags, req, 0));
    let cold_put = |req, flags| request_to(0, message(Op::Put, b"cold", b"v", 0, flags, req, 0));
    let verdict = |frame: UdpFrame| switch.run_on_packet(&frame.build()).unwrap().action;
    assert_eq!(
        verdict(put(40, wire::flags::RETRY)),
        action::DROP,
        "a retry from before the restart"
    );
    assert_eq!(
        verdict(cold_put(41, wire::flags::RETRY)),
        action::DROP,
        "cold or hot, its first attempt may have been steered"
    );
    assert_eq!(verdict(put(42, 0)), action::REDIRECT, "first attempts pass");
    let retry = switch
        .run_on_packet(&put(42, wire::flags::RETRY).build())
        .unwrap();
    assert_eq!(
        retry.action,
        action::REDIRECT,
        "this switch's own route is pinned"
    );
    assert_eq!(switch.counters().unwrap().get(Counter::RetriesDropped), 2);
    assert_eq!(switch.counters().unwrap().get(Counter::RetriesPinned), 1);
}

/// The hot filter counts keys per slot: removing one of two hot keys that share a slot must
/// not make the other look cold (its reads would then go home, past its newer replicas).
#[test]
fn hot_keys_sharing_a_filter_slot_stay_hot() {
    let bench = setup("hf", Policy::RoundRobin, 1);
    let mut switch = bench.switch;
    let keyhash = key_hash(HOT_KEY);
    let neighbour = (0u32..)
        .map(|i| format!("k{i}").into_bytes())
        .find(|k| {
            let h = key_hash(k);
            h != keyhash && hot_filter_slot(h) == hot_filter_slot(keyhash)
        })
        .unwrap();
    let flags_of_read = |switch: &Switch| {
        let out = switch
            .run_on_packet(&request_to(0, message(Op::Get, HOT_KEY, b"", 0, 0, 1, 0)).build())
            .unwrap();
        out.packet[packet::ETH_LEN + 28 + wire::offset::FLAGS]
    };
    assert_eq!(flags_of_read(&switch), 0, "cold before insertion");
    switch.directory_insert(key_hash(&neighbour), 1).unwrap();
    assert_eq!(
        flags_of_read(&switch),
        0,
        "a slot neighbour does not make it hot"
    );
    switch.directory_insert(keyhash, 0).unwrap();
    confirm_from_home(&switch, 7);
    assert_eq!(flags_of_read(&switch), wire::flags::HOT);
    switch.directory_remove(key_hash(&neighbour)).unwrap();
    assert_eq!(
        flags_of_read(&switch),
        wire::flags::HOT,
        "still hot after its slot neighbour left"
    );
    switch.directory_remove(keyhash).unwrap();
    assert_eq!(flags_of_read(&switch), 0, "cold again");
    switch.directory_remove(keyhash).unwrap(); // removing twice is harmless
    switch.directory_insert(keyhash, 0).unwrap();
    assert_eq!(flags_of_read(&switch), wire::flags::HOT, "and hot again");
}

/// A removed key's directory entry is not given to another key at once: a packet that found
/// the old key just before the removal may still be updating it. Until the entry has waited,
/// a full directory stays full; then the new key gets it, and its requests are steered by
/// its own entry.
#[test]
fn a_removed_keys_entry_waits_before_another_key_gets_it() {
    let settings = SwitchSettings {
        policy: Policy::RoundRobin,
        replication: 1,
        directory_capacity: 2,
        ..SwitchSettings::forwarding_only(PORT, EPOCH)
    };
    let bench = Testbed::new("reuse", 3, settings).unwrap();
    let mut switch = bench.switch;
    let (first, second, third) = (key_hash(b"first"), key_hash(b"second"), key_hash(HOT_KEY));
    switch.directory_insert(first, 1).unwrap();
    switch.directory_insert(second, 2).unwrap();
    let full = switch.directory_insert(third, 0).unwrap_err();
    assert!(format!("{full:#}").contains("full"), "{full:#}");
    switch.directory_remove(first).unwrap();
    let waiting = switch.directory_insert(third, 0).unwrap_err();
    assert!(
        format!("{waiting:#}").contains("full"),
        "the freed entry is not reused at once: {waiting:#}"
    );
    assert_eq!(switch.directory_entry(first).unwrap(), None);
    std::thread::sleep(std::time::Duration::from_millis(150));
    switch.directory_insert(third, 0).unwrap();
    let entry = switch.directory_entry(third).unwrap().unwrap();
    assert_eq!((entry.keyhash, entry.home), (third, 0));
    assert_eq!(switch.directory_entry(second).unwrap().unwrap().home, 2);
    confirm_from_home(&switch, 7);
    let out = switch
        .run_on_packet(&request_to(0, message(Op::Get, HOT_KEY, b"", 0, 0, 1, 0)).build())
        .unwrap();
    assert_eq!(
        out.packet[packet::ETH_LEN + 28 + wire::offset::FLAGS],
        wire::flags::HOT,
        "steered by its new entry"
    );
}

/// The entry update is atomic on both CPUs at once: two threads, pinned to different CPUs,
/// deliver replies of the same versions from servers 1 and 2 in lock step. After every round
/// the entry must hold that version with exactly the senders whose replies were applied; a
/// lost update (one CPU's "newer" overwriting the other's "join") would leave one out. A reply
/// that could not get the lock is dropped (XDP_DROP, `lock_busy`) and must not count; that
/// happens only when a lock holder is preempted, so it must stay rare.
#[test]
fn concurrent_replies_on_two_cpus_never_lose_an_update() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    const ROUNDS: u64 = 20_000;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "the concurrency test needs two CPUs");
    let bench = setup("cc", Policy::RoundRobin, 1);
    let keyhash = key_hash(HOT_KEY);
    let mut switch = bench.switch;
    switch.directory_insert(keyhash, 0).unwrap();
    confirm_from_home(&switch, 1);
    let switch = std::sync::Arc::new(switch);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let applied = [AtomicBool::new(false), AtomicBool::new(false)];
    let (lost, dropped) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for (cpu, server) in [(0usize, 1u8), (1, 2)] {
            let (switch, barrier) = (switch.clone(), barrier.clone());
            let (applied, lost, dropped) = (&applied, &lost, &dropped);
            s.spawn(move || {
                pegasus_control::testkit::pin_to_cpu(cpu).unwrap();
                for round in 2..=ROUNDS {
                    let reply = reply_from(
                        server,
                        reply_msg(Op::PutReply, HOT_KEY, b"", round, 0, round as u32, server),
                    )
                    .build();
                    barrier.wait();
                    // No panics between barriers: the other thread would wait forever.
                    let verdict = switch
                        .run_on_packet(&reply)
                        .map_or(action::ABORTED, |v| v.action);
                    applied[cpu].store(verdict == action::REDIRECT, SeqCst);
                    if verdict == action::DROP {
                        dropped.fetch_add(1, SeqCst);
                    }
                    barrier.wait();
                    if cpu == 0 {
                        let expected = [1u8, 2]
                            .iter()
                            .zip(applied)
                            .filter(|(_, a)| a.load(SeqCst))
                            .fold(0, |set, (&s, _)| set | bit(s));
                        let (v, rset) = match switch.directory_entry(keyhash) {
                            Ok(Some(e)) => (e.ver_completed, e.rset),
                            _ => (u64::MAX, 0),
                        };
                        let consistent = if expected == 0 {
                            v < round
                        } else {
                            v == round && rset == expected
                        };
                        if !consistent {
                            lost.fetch_add(1, SeqCst);
                        }
                    }
                }
            });
        }
    });
    assert_eq!(lost.load(SeqCst), 0, "lost directory updates");
    let busy = switch.counters().unwrap().get(Counter::LockBusy);
    assert_eq!(busy, dropped.load(SeqCst), "every drop was a busy lock");
    assert!(
        busy * 100 < ROUNDS,
        "{busy} of {ROUNDS} rounds found the lock busy after 64 attempts"
    );
}

/// The forwarding cache: a decision is reused until the control plane starts a new generation,
/// then asked of the FIB again (here: the server's MAC address changed).
#[test]
fn the_forwarding_cache_is_renewed_by_a_new_generation() {
    // The cache is per CPU: every run of the program must see the same CPU's copy.
    pegasus_control::testkit::pin_to_cpu(0).unwrap();
    let bench = setup("fc", Policy::RoundRobin, 1);
    let mut switch = bench.switch;
    let get = request_to(0, message(Op::Get, b"cold", b"", 0, 0, 1, 0));
    let dst_mac = |switch: &Switch| {
        let out = switch.run_on_packet(&get.build()).unwrap();
        assert_eq!(out.action, action::REDIRECT);
        out.packet[..6].to_vec()
    };
    assert_eq!(dst_mac(&switch), server_mac(0));
    let lookups = switch.counters().unwrap().get(Counter::FibLookups);
    // The server moves to another MAC address; the thread is in the testbed's namespace.
    let moved = [0x02, 0, 0, 9, 9, 9];
    pegasus_control::lab::netns::ip(&[
        "neigh",
        "replace",
        "10.1.0.2",
        "lladdr",
        "02:00:00:09:09:09",
        "dev",
        "sv0",
        "nud",
        "permanent",
    ])
    .unwrap();
    assert_eq!(dst_mac(&switch), server_mac(0), "cached until renewed");
    assert_eq!(
        switch.counters().unwrap().get(Counter::FibLookups),
        lookups,
        "a cache hit asks nothing of the FIB"
    );
    switch.bump_fib_generation().unwrap();
    assert_eq!(dst_mac(&switch), moved.to_vec(), "renewed");
    assert_eq!(
        switch.counters().unwrap().get(Counter::FibLookups),
        lookups + 1
    );
}

/// `pegasus switch cost` measures every path; each must be forwarded (the benchmark checks
/// the verdicts) and cost something.
#[test]
fn the_benchmark_measures_every_path() {
    let report = pegasus_control::testkit::cost::run(pegasus_control::testkit::cost::CostOptions {
        packets: pegasus_control::testkit::cost::BATCH * 4,
        rounds: 1,
        sample_period: 4,
    })
    .unwrap();
    let paths: Vec<&str> = report.paths.iter().map(|p| p.path).collect();
    assert_eq!(
        paths,
        [
            "cold_forward",
            "cold_write",
            "hot_read",
            "hot_write",
            "hot_write_retry",
            "reply_update"
        ]
    );
    for p in &report.paths {
        assert!(
            p.ns_per_packet > 0.0 && p.baseline_ns_per_packet > 0.0,
            "{p:?}"
        );
        assert!(p.forwarder_ns_per_packet > 0.0, "{p:?}");
        assert_eq!(p.meets_target, p.forwarder_ratio <= p.target_ratio, "{p:?}");
    }
    // The version counter's contention is measured on any machine with two CPUs for it.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match &report.counter_contention {
        Some(c) => {
            assert_eq!(c.cpus, 2);
            for ns in [
                c.reflect_alone_ns,
                c.stamp_alone_ns,
                c.reflect_contended_ns,
                c.stamp_contended_ns,
            ] {
                assert!(ns > 0.0, "{c:?}");
            }
        }
        None => assert_eq!(cpus, 1, "two CPUs but no contention measured"),
    }
    // The JSON the command prints (`--json`) has every field under its documented name.
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "packets",
        "rounds",
        "sample_period",
        "paths",
        "counter_contention",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    for field in [
        "path",
        "ns_per_packet",
        "baseline_ns_per_packet",
        "ratio",
        "forwarder_ns_per_packet",
        "forwarder_ratio",
        "target_ratio",
        "meets_target",
    ] {
        assert!(json["paths"][0].get(field).is_some(), "no paths[].{field}");
    }
}

/// A hot key's writes are copied while it is read at least as often as it is written
/// (`RecentMix::copies_pay`), and not while writes dominate: the entry's recent mix decides,
/// and follows the key's mix as it changes.
#[test]
fn write_heavy_keys_are_not_copied() {
    let bench = setup("mix", Policy::RoundRobin, 2);
    let mut switch = bench.switch;
    let keyhash = key_hash(HOT_KEY);
    switch.directory_insert(keyhash, 0).unwrap();
    confirm_from_home(&switch, 1);
    let payload_at = 14 + 20 + 8 + wire::offset::REPLICA_BITMAP;
    let run = |op: Op, req: u32| {
        let out = switch
            .run_on_packet(&request_to(0, message(op, HOT_KEY, b"v", 0, 0, req, 0)).build())
            .unwrap();
        assert_eq!(out.action, action::REDIRECT);
        u64::from_be_bytes(out.packet[payload_at..payload_at + 8].try_into().unwrap())
    };
    let mix = |switch: &Switch| {
        let e = switch.directory_entry(keyhash).unwrap().unwrap();
        RecentMix {
            reads: e.mix_reads,
            writes: e.mix_writes,
        }
    };
    assert_eq!(mix(&switch), RecentMix::NEW);
    // A new key is taken to be read-mostly: its first writes are copied (to one server, at
    // replication 2).
    let mut copied = Vec::new();
    for req in 0..20 {
        copied.push(run(Op::Put, req).count_ones());
    }
    let expected: Vec<u32> = (1..=20u16)
        .map(|writes| {
            RecentMix {
                reads: RecentMix::NEW.reads,
                writes,
            }
            .copies_pay() as u32
        })
        .collect();
    assert_eq!(copied, expected);
    assert_eq!(&copied[..16], &[1; 16], "16 reads of prior cover 16 writes");
    assert_eq!(copied[19], 0, "then writes dominate: no copies");
    // Reads come back: within a window the key is read-mostly again, and copied.
    for req in 100..100 + 2 * MIX_WINDOW as u32 {
        run(Op::Get, req);
    }
    assert!(mix(&switch).copies_pay(), "{:?}", mix(&switch));
    assert_eq!(run(Op::Put, 500).count_ones(), 1);
}

/// A hot key's writes are copied to as many servers as its replica target says (set by the
/// controller from its share of the load), not the configured replication.
#[test]
fn hot_writes_follow_the_keys_replica_target() {
    let mut bench = setup("target", Policy::RoundRobin, 2);
    let keyhash = key_hash(HOT_KEY);
    bench.switch.directory_insert(keyhash, 0).unwrap();
    confirm_from_home(&bench.switch, 1);
    let hot_flag = wire::flags::HOT;
    for (target, request_id, copies) in [
        (3u8, 300u32, bit(1) | bit(2)),
        (1, 301, 0),
        (0, 302, bit(0)),
    ] {
        bench.switch.set_replica_target(keyhash, target).unwrap();
        assert_eq!(bench.switch.replica_target(keyhash).unwrap(), Some(target));
        bench.switch.set_version_counter(0).unwrap();
        // Round robin over the writes: the first to server 0, the next to 1, then 2.
        let primary = (request_id - 300) as u8;
        let input = request_to(0, message(Op::Put, HOT_KEY, b"v", 0, 0, request_id, 0));
        let expected = forwarded(
            request_to(
                primary,
                with_replicas(
                    message(Op::Put, HOT_KEY, b"v", stamped(1), hot_flag, request_id, 0),
                    copies,
                ),
            ),
            server_port_mac(primary),
            server_mac(primary),
        );
        check(
            &bench.switch,
            &Fixture {
                name: "a hot write's copies follow the key's replica target",
                input: input.build(),
                action: action::REDIRECT,
                output: expected,
            },
        );
    }
    bench.switch.directory_remove(keyhash).unwrap();
    assert!(
        bench.switch.set_replica_target(keyhash, 2).is_err(),
        "no entry, no target"
    );
}

/// The uplink rules of a switch in the middle of a chain (docs/chain.md): a CHAIN_PUT is
/// believed only from a chain port (its version and STAMPED kept, never stamped again; the
/// previous rack's HOT and copies cleared), is steered by this rack's directory as a write,
/// and leaves for the next rack from a server as it is, telling the directory the version
/// that server applied; a CHAIN_ACK is believed only from a chain port and speaks for none of
/// this rack's servers. (Which rack is the previous one and which the next is the stores'
/// to check: it changes when a rack fails.)
#[test]
fn chain_rules_have_their_fixtures() {
    let settings = SwitchSettings {
        policy: Policy::RoundRobin,
        replication: 2,
        mark_committed: true,
        ..SwitchSettings::forwarding_only(PORT, EPOCH)
    };
    let bench = Testbed::in_chain("chn", 3, settings).unwrap();
    let mut switch = bench.switch;
    let (previous, next) = (testbed::PREVIOUS_RACK, testbed::NEXT_RACK);
    let (next_port_mac, next_mac) = (next.addressing().tor_mac, next.addressing().host_mac);
    let stamped_flag = wire::flags::STAMPED;
    let chain_put = |key, version, flags, server_id| {
        message(Op::ChainPut, key, b"v", version, flags, 11, server_id)
    };
    let from_previous_rack =
        |payload| UdpFrame::new(previous.server_addr(PORT), server_addr(0), payload);
    let forged = from_previous_rack(with_replicas(
        chain_put(b"key", 99, stamped_flag | wire::flags::HOT, 5),
        0b110,
    ));
    let cleaned = from_previous_rack(chain_put(b"key", 99, stamped_flag, 5));
    let from_client = UdpFrame::new(
        addr("10.2.0.2:40000"),
        server_addr(0),
        chain_put(b"key", 99, stamped_flag, 5),
    );
    let leaving = UdpFrame::new(
        server_addr(1),
        next.server_addr(PORT),
        chain_put(b"key", 99, stamped_flag, 1),
    );
    let ack = |source| {
        UdpFrame::new(
            source,
            server_addr(0),
            reply_msg(Op::ChainAck, b"key", b"", 99, 0, 11, 0),
        )
    };
    let dropped = |name, frame: UdpFrame| Fixture {
        name,
        input: frame.build(),
        output: frame.build(),
        action: action::DROP,
    };
    let fixtures = [
        Fixture {
            name: "chain port: a CHAIN_PUT keeps version and STAMPED, loses HOT and copies, is not stamped",
            input: forged.build(),
            action: action::REDIRECT,
            output: forwarded(cleaned.clone(), SERVER_PORT_MAC, SERVER_MAC),
        },
        Fixture {
            name: "chain port: a clean CHAIN_PUT is forwarded untouched",
            input: cleaned.build(),
            action: action::REDIRECT,
            output: forwarded(cleaned, SERVER_PORT_MAC, SERVER_MAC),
        },
        dropped("client port: a CHAIN_PUT is dropped", from_client),
        Fixture {
            name: "a server's CHAIN_PUT leaves for the next rack as it is",
            input: leaving.build(),
            action: action::REDIRECT,
            output: forwarded(leaving.clone(), next_port_mac, next_mac),
        },
        Fixture {
            name: "chain port: a CHAIN_ACK goes on to the server it is addressed to",
            input: ack(next.server_addr(PORT)).build(),
            action: action::REDIRECT,
            output: forwarded(ack(next.server_addr(PORT)), SERVER_PORT_MAC, SERVER_MAC),
        },
        dropped(
            "client port: a CHAIN_ACK is dropped",
            ack(addr("10.2.0.2:7400")),
        ),
    ];
    for f in &fixtures {
        check(&switch, f);
    }
    let counters = switch.counters().unwrap();
    assert_eq!(
        counters.get(Counter::WritesStamped),
        0,
        "nothing was stamped"
    );
    assert_eq!(counters.get(Counter::RoleDrops), 2);

    // A hot key (home: server 0, complete at version 10 on server 0).
    let keyhash = key_hash(HOT_KEY);
    let mut value = switch::DirEntry::new(keyhash, 0);
    value.ver_completed = 10;
    value.rset = bit(0);
    value.installing = 0;
    switch.set_directory_entry(keyhash, value).unwrap();
    // From the previous rack: steered as a write (HOT, copies), its version kept.
    let hot_in = from_previous_rack(chain_put(HOT_KEY, 20, stamped_flag, 5));
    let out = switch.run_on_packet(&hot_in.build()).unwrap();
    assert_eq!(out.action, action::REDIRECT);
    let h = Header::decode(&out.packet[packet::PAYLOAD_OFFSET..]).unwrap();
    assert_eq!(h.version, 20, "a chain's version is never stamped again");
    assert_eq!(h.flags, stamped_flag | wire::flags::HOT);
    assert_ne!(h.replica_bitmap, 0, "copied as a hot write");
    assert_eq!(switch.counters().unwrap().get(Counter::HotWrites), 1);
    // Server 2 sends version 20 on: the directory learns that server 2 holds it.
    let hot_out = |from: u8, claimed: u8| {
        UdpFrame::new(
            server_addr(from),
            next.server_addr(PORT),
            chain_put(HOT_KEY, 20, stamped_flag | wire::flags::HOT, claimed),
        )
    };
    check(
        &switch,
        &Fixture {
            name: "a hot key's CHAIN_PUT leaving from server 2 reports version 20 at server 2",
            input: hot_out(2, 2).build(),
            action: action::REDIRECT,
            output: forwarded(hot_out(2, 2), next_port_mac, next_mac),
        },
    );
    assert_eq!(entry_state(&switch), (20, bit(2)));
    // A steered write's CHAIN_PUT for a key the directory no longer has (evicted, or a
    // restarted switch): a reply would be dropped; the write goes on, teaching nothing.
    let forgotten = UdpFrame::new(
        server_addr(1),
        next.server_addr(PORT),
        chain_put(b"forgotten", 30, stamped_flag | wire::flags::HOT, 1),
    );
    check(
        &switch,
        &Fixture {
            name: "a steered CHAIN_PUT of a key not in the directory still leaves",
            input: forgotten.build(),
            action: action::REDIRECT,
            output: forwarded(forgotten.clone(), next_port_mac, next_mac),
        },
    );
    // A server speaking for another is dropped, and teaches nothing.
    check(
        &switch,
        &dropped(
            "a CHAIN_PUT from server 1 claiming server 0 is dropped",
            hot_out(1, 0),
        ),
    );
    assert_eq!(entry_state(&switch), (20, bit(2)));
    // Reads from every rack: a hot read carries what the rack knows committed (nothing yet).
    let hot_get = |req| request_to(0, message(Op::Get, HOT_KEY, b"", 0, 0, req, 0));
    let marked_get = |req, committed| {
        forwarded(
            request_to(
                2,
                message(
                    Op::Get,
                    HOT_KEY,
                    b"",
                    committed,
                    wire::flags::HOT | wire::flags::COMMITTED,
                    req,
                    0,
                ),
            ),
            server_port_mac(2),
            server_mac(2),
        )
    };
    check(
        &switch,
        &Fixture {
            name: "a hot read carries COMMITTED and the committed version (none known: 0)",
            input: hot_get(12).build(),
            action: action::REDIRECT,
            output: marked_get(12, 0),
        },
    );
    // An ack from the next rack does not set the load of this rack's server it names; it
    // tells the directory that version 20 is committed.
    let mut loaded_ack = reply_msg(Op::ChainAck, HOT_KEY, b"", 20, 0, 11, 1);
    loaded_ack[wire::offset::LOAD..wire::offset::LOAD + 2].copy_from_slice(&999u16.to_be_bytes());
    let before = switch.server_loads().unwrap();
    let out = switch
        .run_on_packet(&UdpFrame::new(next.server_addr(PORT), server_addr(1), loaded_ack).build())
        .unwrap();
    assert_eq!(out.action, action::REDIRECT);
    assert_eq!(switch.server_loads().unwrap(), before);
    let entry = switch.directory_entry(keyhash).unwrap().unwrap();
    assert_eq!(entry.ver_committed, 20);
    check(
        &switch,
        &Fixture {
            name: "after the ack, a hot read carries committed version 20",
            input: hot_get(13).build(),
            action: action::REDIRECT,
            output: marked_get(13, 20),
        },
    );
    // An older ack teaches nothing; one from a client port is dropped and teaches nothing.
    let older_ack = reply_msg(Op::ChainAck, HOT_KEY, b"", 15, 0, 11, 1);
    let from_next = UdpFrame::new(next.server_addr(PORT), server_addr(1), older_ack.clone());
    assert_eq!(
        switch.run_on_packet(&from_next.build()).unwrap().action,
        action::REDIRECT
    );
    let newer_from_client = UdpFrame::new(
        addr("10.2.0.2:7400"),
        server_addr(1),
        reply_msg(Op::ChainAck, HOT_KEY, b"", 99, 0, 11, 1),
    );
    check(
        &switch,
        &dropped(
            "a CHAIN_ACK from a client port teaches nothing",
            newer_from_client,
        ),
    );
    let entry = switch.directory_entry(keyhash).unwrap().unwrap();
    assert_eq!(entry.ver_committed, 20);
    // A store's read reply that says its version is committed teaches the switch too.
    let committed_reply = reply_from(
        2,
        reply_msg(
            Op::GetReply,
            HOT_KEY,
            b"v",
            25,
            wire::flags::HOT | wire::flags::COMMITTED,
            14,
            2,
        ),
    );
    assert_eq!(
        switch
            .run_on_packet(&committed_reply.build())
            .unwrap()
            .action,
        action::REDIRECT
    );
    let entry = switch.directory_entry(keyhash).unwrap().unwrap();
    assert_eq!((entry.ver_completed, entry.ver_committed), (25, 25));
}

/// `pegasus switch capacity` forwards through every forwarder across real veth ports, and the
/// sink counts what each one forwarded (a forwarder that drops or misroutes the generator's
/// frames leaves the sink empty).
#[test]
fn the_capacity_measurement_forwards_through_every_forwarder() {
    use pegasus_control::testkit::capacity::{self, CapacityOptions};
    let options = CapacityOptions {
        seconds: 0.2,
        rounds: 1,
        sample_period: 8,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = match capacity::run(options) {
        Ok(report) => report,
        Err(e) if cpus < 2 => {
            assert!(format!("{e:#}").contains("two CPUs"), "{e:#}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let names: Vec<&str> = report.forwarders.iter().map(|f| f.forwarder).collect();
    assert_eq!(
        names,
        ["kernel", "xdp_forwarder", "switch_cold", "switch_hot"]
    );
    assert_ne!(report.tor_cpu, report.generator_cpu);
    for f in &report.forwarders {
        assert!(f.packets_per_second > 1_000.0, "{f:?}");
        assert!(f.offered_per_second >= f.packets_per_second * 0.9, "{f:?}");
        assert!(
            f.tor_ns_per_packet > 0.0 && f.tor_ns_per_packet.is_finite(),
            "{f:?}"
        );
        assert!(f.tor_cpu_busy > 0.0 && f.tor_cpu_busy <= 1.05, "{f:?}");
    }
    let kernel = &report.forwarders[0];
    assert_eq!(kernel.capacity_ratio_to_kernel, 1.0);
    assert_eq!(kernel.rate_ratio_to_kernel, 1.0);
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "seconds",
        "rounds",
        "sample_period",
        "tor_cpu",
        "generator_cpu",
        "forwarders",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    for field in [
        "forwarder",
        "packets_per_second",
        "offered_per_second",
        "lower_bound",
        "tor_cpu_busy",
        "tor_ns_per_packet",
        "capacity_per_cpu",
        "capacity_ratio_to_kernel",
        "rate_ratio_to_kernel",
    ] {
        assert!(
            json["forwarders"][0].get(field).is_some(),
            "no {field} in {json}"
        );
    }
}
