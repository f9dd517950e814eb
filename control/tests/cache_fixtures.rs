//! The in-switch cache baseline (`pegasus_cache`) on synthetic packets through
//! BPF_PROG_TEST_RUN: for each of its rules, the input frame, the expected verdict and the
//! expected output frame byte for byte (a cache hit is the request turned into its reply:
//! value appended, endpoints swapped, lengths and the IPv4 checksum redone, no UDP checksum).
//! Runs in a namespace made for the test (see `testbed`). Needs root.

use pegasus_common::{
    cache::{CACHE_VALUE_MAX, CacheState, SWITCH_SERVER_ID},
    hash::key_hash,
    switch::Counter,
    version,
    wire::{self, CONTROLLER_CLIENT_ID, Header, Op},
};
use pegasus_control::{
    switch::{PacketVerdict, Switch, SwitchMode, SwitchSettings, action},
    testkit::{
        fixtures::{self, Fixture, check, forwarded},
        packet::UdpFrame,
        testbed::{self, Testbed, server_mac, server_port_mac},
    },
};

const PORT: u16 = 7400;
const EPOCH: u16 = 5;
const HOT_KEY: &[u8] = b"hot";
/// The hot key's home in these fixtures.
const HOME: u8 = 1;
const CLIENT: u16 = 7;

fn setup(tag: &str) -> Testbed {
    let settings = SwitchSettings {
        mode: SwitchMode::Cache,
        ..SwitchSettings::forwarding_only(PORT, EPOCH)
    };
    let mut bench = Testbed::new(tag, 3, settings).unwrap();
    bench
        .switch
        .directory_insert(key_hash(HOT_KEY), HOME)
        .unwrap();
    bench
}

fn stamped(counter: u64) -> u64 {
    version::make(EPOCH, counter).unwrap()
}

/// A version home got before this switch's epoch (the load phase's, say).
fn before_epoch() -> u64 {
    version::make(EPOCH - 1, 7).unwrap()
}

/// A Pegasus message about the hot key.
fn message(op: Op, value: &[u8], version: u64, request_id: u32, client: u16) -> Vec<u8> {
    let epoch = if op.is_request() { EPOCH } else { 0 };
    let header = Header {
        version,
        ..Header::request(op, key_hash(HOT_KEY), client, request_id, HOME).with_client_epoch(epoch)
    };
    fixtures::payload(header, HOT_KEY, value)
}

fn request(op: Op, value: &[u8], request_id: u32) -> UdpFrame {
    testbed::request_to(HOME, PORT, message(op, value, 0, request_id, CLIENT))
}

fn reply(op: Op, value: &[u8], version: u64, request_id: u32, client: u16) -> UdpFrame {
    testbed::reply_from(HOME, PORT, message(op, value, version, request_id, client))
}

/// A request to home as the switch forwards it (stamped with `version` if a write).
fn forwarded_home(op: Op, value: &[u8], version: u64, request_id: u32) -> Vec<u8> {
    let frame = testbed::request_to(HOME, PORT, message(op, value, version, request_id, CLIENT));
    forwarded(frame, server_port_mac(HOME), server_mac(HOME))
}

/// A reply from home as the switch forwards it to the client.
fn forwarded_to_client(frame: UdpFrame) -> Vec<u8> {
    forwarded(frame, testbed::CLIENT_PORT_MAC, testbed::CLIENT_MAC)
}

/// The reply the switch makes of the GET `request_id` from its cache: the request's frame
/// with endpoints swapped, the value and version, server id SWITCH_SERVER_ID, flag CACHED.
fn answered(value: &[u8], version: u64, request_id: u32) -> Vec<u8> {
    let get = request(Op::Get, b"", request_id);
    let header = Header {
        version,
        flags: wire::flags::CACHED,
        ..Header::request(
            Op::GetReply,
            key_hash(HOT_KEY),
            CLIENT,
            request_id,
            SWITCH_SERVER_ID,
        )
    };
    let payload = fixtures::payload(header, HOT_KEY, value);
    let mut out = UdpFrame::new(get.dst, get.src, payload);
    out.src_mac = get.dst_mac;
    out.dst_mac = get.src_mac;
    out.ttl = get.ttl;
    out.zero_udp_checksum = true;
    out.build()
}

fn run(switch: &Switch, name: &'static str, input: &UdpFrame, action: u32, output: &[u8]) {
    let fixture = Fixture {
        name,
        input: input.build(),
        action,
        output: output.to_vec(),
    };
    check(switch, &fixture);
}

fn state(switch: &Switch) -> CacheState {
    switch
        .cache_entry(key_hash(HOT_KEY))
        .unwrap()
        .expect("the hot key has a cache entry")
        .meta()
        .state
}

/// The whole life of a cached key, one fixture per rule, in the order a key lives it.
#[test]
fn the_cache_rules_have_their_fixtures() {
    let bench = setup("cache");
    let switch = &bench.switch;
    assert_eq!(
        state(switch),
        CacheState::Filling,
        "a new entry fills first"
    );

    // Filling: reads go home; a client's read reply does not fill (it may be older than
    // writes the switch never saw).
    let get = request(Op::Get, b"", 1);
    run(
        switch,
        "filling: a read goes home",
        &get,
        action::REDIRECT,
        &forwarded_home(Op::Get, b"", 0, 1),
    );
    let client_reply = reply(Op::GetReply, b"old", before_epoch() - 1, 1, CLIENT);
    run(
        switch,
        "filling: a client's read reply is forwarded",
        &client_reply,
        action::REDIRECT,
        &forwarded_to_client(client_reply.clone()),
    );
    assert_eq!(state(switch), CacheState::Filling);

    // The controller's read of home fills it.
    let fill = reply(Op::GetReply, b"v1", before_epoch(), 2, CONTROLLER_CLIENT_ID);
    run(
        switch,
        "the controller's read reply fills the entry",
        &fill,
        action::REDIRECT,
        &forwarded_to_client(fill.clone()),
    );
    assert_eq!(state(switch), CacheState::Valid);

    // Valid: the switch answers.
    run(
        switch,
        "valid: a read is answered by the switch",
        &request(Op::Get, b"", 3),
        action::REDIRECT,
        &answered(b"v1", before_epoch(), 3),
    );

    // A write goes home (stamped as by the switch); until its reply crosses it has not
    // completed, and the value before it is still answered.
    run(
        switch,
        "a write goes home, stamped",
        &request(Op::Put, b"v2", 4),
        action::REDIRECT,
        &forwarded_home(Op::Put, b"v2", stamped(1), 4),
    );
    assert_eq!(state(switch), CacheState::Valid);
    run(
        switch,
        "a write in flight: the value before it is answered",
        &request(Op::Get, b"", 5),
        action::REDIRECT,
        &answered(b"v1", before_epoch(), 5),
    );

    // The write's reply makes the value it carried the cached one.
    let ack = reply(Op::PutReply, b"", stamped(1), 4, CLIENT);
    run(
        switch,
        "the write's reply validates its value",
        &ack,
        action::REDIRECT,
        &forwarded_to_client(ack.clone()),
    );
    assert_eq!(state(switch), CacheState::Valid);
    run(
        switch,
        "validated: the new value is answered",
        &request(Op::Get, b"", 6),
        action::REDIRECT,
        &answered(b"v2", stamped(1), 6),
    );
    // An older read reply changes nothing.
    let stale = reply(Op::GetReply, b"v1", before_epoch(), 5, CLIENT);
    run(
        switch,
        "an older read reply is forwarded, not cached",
        &stale,
        action::REDIRECT,
        &forwarded_to_client(stale.clone()),
    );
    run(
        switch,
        "still the newest value",
        &request(Op::Get, b"", 6),
        action::REDIRECT,
        &answered(b"v2", stamped(1), 6),
    );

    // A value too long to cache: reads go home after it.
    let long = vec![b'x'; CACHE_VALUE_MAX + 1];
    run(
        switch,
        "a write too long to cache goes home",
        &request(Op::Put, &long, 7),
        action::REDIRECT,
        &forwarded_home(Op::Put, &long, stamped(2), 7),
    );
    let ack = reply(Op::PutReply, b"", stamped(2), 7, CLIENT);
    run(
        switch,
        "its reply does not validate",
        &ack,
        action::REDIRECT,
        &forwarded_to_client(ack.clone()),
    );
    assert_eq!(state(switch), CacheState::Invalid);
    run(
        switch,
        "uncacheable: a read goes home",
        &request(Op::Get, b"", 8),
        action::REDIRECT,
        &forwarded_home(Op::Get, b"", 0, 8),
    );

    // An empty value and the longest one are cached and answered exactly.
    for (i, value) in [Vec::new(), vec![b'y'; CACHE_VALUE_MAX]].iter().enumerate() {
        let id = 10 + 2 * i as u32;
        let version = stamped(3 + i as u64);
        run(
            switch,
            "a write of a cacheable value",
            &request(Op::Put, value, id),
            action::REDIRECT,
            &forwarded_home(Op::Put, value, version, id),
        );
        let ack = reply(Op::PutReply, b"", version, id, CLIENT);
        run(
            switch,
            "its reply validates",
            &ack,
            action::REDIRECT,
            &forwarded_to_client(ack.clone()),
        );
        run(
            switch,
            "answered with the value, whatever its length",
            &request(Op::Get, b"", id + 1),
            action::REDIRECT,
            &answered(value, version, id + 1),
        );
    }

    let counters = switch.counters().unwrap();
    assert_eq!(counters.get(Counter::CacheHits), 6);
    assert_eq!(
        counters.get(Counter::VerdictTx),
        0,
        "hits are redirected, not XDP_TX"
    );
    let entry = switch.cache_entry(key_hash(HOT_KEY)).unwrap().unwrap();
    assert_eq!(entry.hits, 6);
}

/// A GET whose body disagrees with its lengths is not answered (home says what is wrong),
/// and a cold key's requests are forwarded as by the switch.
#[test]
fn malformed_and_cold_reads_go_home() {
    let bench = setup("cache-odd");
    let switch = &bench.switch;
    let fill = reply(Op::GetReply, b"v1", stamped(1), 1, CONTROLLER_CLIENT_ID);
    switch.run_on_packet(&fill.build()).unwrap();
    assert_eq!(state(switch), CacheState::Valid);

    let mut trailing = message(Op::Get, b"", 0, 2, CLIENT);
    trailing.push(0);
    let get = testbed::request_to(HOME, PORT, trailing.clone());
    let expected = forwarded(
        testbed::request_to(HOME, PORT, trailing),
        server_port_mac(HOME),
        server_mac(HOME),
    );
    run(
        switch,
        "a GET with bytes after its body goes home",
        &get,
        action::REDIRECT,
        &expected,
    );

    let cold = fixtures::payload(
        Header::request(Op::Get, key_hash(b"cold"), CLIENT, 3, 0),
        b"cold",
        b"",
    );
    run(
        switch,
        "a cold key's read goes home",
        &testbed::request_to(HOME, PORT, cold.clone()),
        action::REDIRECT,
        &forwarded(
            testbed::request_to(HOME, PORT, cold),
            server_port_mac(HOME),
            server_mac(HOME),
        ),
    );
    assert_eq!(switch.counters().unwrap().get(Counter::CacheHits), 0);
}

/// Ethernet padding after a GET's datagram is not part of its reply.
#[test]
fn a_padded_get_is_answered_without_its_padding() {
    let bench = setup("cache-pad");
    let fill = reply(Op::GetReply, b"v1", before_epoch(), 1, CONTROLLER_CLIENT_ID);
    bench.switch.run_on_packet(&fill.build()).unwrap();
    let mut padded = request(Op::Get, b"", 2).build();
    padded.extend_from_slice(&[0xee; 6]);
    let PacketVerdict {
        action: got,
        packet,
    } = bench.switch.run_on_packet(&padded).unwrap();
    assert_eq!(action::name(got), action::name(action::REDIRECT));
    assert_eq!(packet, answered(b"v1", before_epoch(), 2));
}

/// Removing the key (eviction) sends its reads home again.
#[test]
fn an_evicted_key_is_read_from_home() {
    let mut bench = setup("cache-evict");
    let fill = reply(Op::GetReply, b"v1", stamped(1), 1, CONTROLLER_CLIENT_ID);
    bench.switch.run_on_packet(&fill.build()).unwrap();
    run(
        &bench.switch,
        "cached",
        &request(Op::Get, b"", 2),
        action::REDIRECT,
        &answered(b"v1", stamped(1), 2),
    );
    bench.switch.directory_remove(key_hash(HOT_KEY)).unwrap();
    assert!(
        bench
            .switch
            .cache_entry(key_hash(HOT_KEY))
            .unwrap()
            .is_none()
    );
    run(
        &bench.switch,
        "evicted: home",
        &request(Op::Get, b"", 3),
        action::REDIRECT,
        &forwarded_home(Op::Get, b"", 0, 3),
    );
}

/// The port roles hold in the cache program too: a fill forged from a client port fills
/// nothing, a reply from another server's address is not believed, and a client's forged
/// version is cleared before the write is stamped.
#[test]
fn the_port_roles_hold_in_the_cache_program() {
    let bench = setup("cache-roles");
    let switch = &bench.switch;
    // The controller's read of home, sent by a client: its client id is the controller's.
    let forged_fill = UdpFrame::new(
        testbed::client_addr(PORT),
        testbed::server_addr(HOME, PORT),
        message(
            Op::GetReply,
            b"forged",
            u64::MAX >> 1,
            1,
            CONTROLLER_CLIENT_ID,
        ),
    );
    run(
        switch,
        "client port: a forged fill is dropped",
        &forged_fill,
        action::DROP,
        &forged_fill.build(),
    );
    // The same fill from server 2's address, claiming to be home.
    let mut spoofed = reply(
        Op::GetReply,
        b"forged",
        u64::MAX >> 1,
        2,
        CONTROLLER_CLIENT_ID,
    );
    spoofed.src = testbed::server_addr(2, PORT);
    run(
        switch,
        "server port: a reply from another server's address is dropped",
        &spoofed,
        action::DROP,
        &spoofed.build(),
    );
    assert_eq!(state(switch), CacheState::Filling, "nothing was filled");
    // A client's PUT claiming to be stamped upstream with a huge version.
    let forged_put = testbed::request_to(
        HOME,
        PORT,
        message(Op::Put, b"v", u64::MAX, 3, CLIENT)
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                if i == wire::offset::FLAGS {
                    b | wire::flags::STAMPED
                } else {
                    b
                }
            })
            .collect(),
    );
    run(
        switch,
        "client port: a forged version is cleared, then stamped",
        &forged_put,
        action::REDIRECT,
        &forwarded_home(Op::Put, b"v", stamped(1), 3),
    );
    let c = switch.counters().unwrap();
    assert_eq!(c.get(Counter::RoleDrops), 2);
    assert_eq!(c.get(Counter::RequestsCleaned), 1);
    assert_eq!(c.get(Counter::CacheFills), 0);
}
