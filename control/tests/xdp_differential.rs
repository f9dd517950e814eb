//! The XDP switch against its reference (`testkit::reference`: the rules of
//! `pegasus_common` composed in plain Rust). Seeded random frames (requests, replies, server
//! traffic, other traffic) and mutations of them (flipped bytes, truncations, VLAN tags, IP
//! options, fragments, TTLs, lengths, addresses) go through the real program with
//! BPF_PROG_TEST_RUN and through the reference; the verdict and every output byte must agree
//! for every frame, and the counters and maps (versions, write windows, directory entries,
//! server loads) at the end. The directory changes under the traffic as a controller would
//! change it: keys go hot and cold, are evicted, are sized, take arbitrary states.
//!
//! `PEGASUS_DIFFERENTIAL_FRAMES` sets the frames per test (default 20,000, the CI run;
//! docs/measurements.md reports a run of millions), `PEGASUS_DIFFERENTIAL_SEED` the seed (a
//! failure prints it). Needs root, as CI runs.

use pegasus_common::{
    directory::{Policy, ServerSet, bit},
    hash::key_hash,
    once::{self, WRITE_ID_BIT},
    switch::{Counter, DirEntry},
    version,
    wire::{self, Header, Op},
};
use pegasus_control::{
    switch::{PacketVerdict, SwitchSettings, action},
    testkit::{
        fixtures,
        packet::UdpFrame,
        reference::{ClockInterval, Expected, Reference},
        testbed::{Testbed, client_ip, server_ip},
    },
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Instant,
};

const PORT: u16 = 7400;
const EPOCH: u16 = 5;
const SERVERS: u8 = 4;
const KEYS: usize = 48;
/// Keys in the directory at the start (and at most, well below its capacity of 64).
const HOT_AT_START: usize = 6;
const HOT_MAX: usize = 24;
/// Clients sending requests; the last is the controller's id, which a client may not use.
const CLIENTS: [u16; 5] = [7, 8, 300, 65_000, wire::CONTROLLER_CLIENT_ID];
/// Counters the reference does not model: per-CPU caches and sampling (off here).
const UNMODELLED: [Counter; 3] = [Counter::FibLookups, Counter::Samples, Counter::SamplesLost];

#[test]
fn round_robin_switch_agrees_with_its_reference() {
    differential("dfr", Policy::RoundRobin, 2);
}

#[test]
fn least_loaded_switch_agrees_with_its_reference() {
    differential("dfl", Policy::LeastLoaded, 3);
}

fn frames() -> u64 {
    std::env::var("PEGASUS_DIFFERENTIAL_FRAMES")
        .ok()
        .map(|v| v.parse().expect("PEGASUS_DIFFERENTIAL_FRAMES is a count"))
        .unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("PEGASUS_DIFFERENTIAL_SEED")
        .ok()
        .map(|v| v.parse().expect("PEGASUS_DIFFERENTIAL_SEED is a number"))
        .unwrap_or_else(rand::random)
}

fn differential(tag: &str, policy: Policy, replication: u8) {
    let seed = seed();
    let frames = frames();
    let settings = SwitchSettings {
        policy,
        replication,
        ..SwitchSettings::forwarding_only(PORT, EPOCH)
    };
    let mut bench = Testbed::new(tag, SERVERS, settings).unwrap();
    let config = pegasus_common::switch::SwitchConfig {
        all_servers: (0..SERVERS).fold(0, |set, i| set | bit(i)),
        store_port: PORT,
        epoch: EPOCH,
        policy: policy as u8,
        replication,
        sample_period: 0,
        mark_committed: 0,
        reserved: [0; 7],
    };
    let mut reference = Reference::new(config, SERVERS);
    let mut traffic = Traffic::new(seed);
    for _ in 0..HOT_AT_START {
        traffic.control(&mut bench, &mut reference, Control::Insert);
    }
    let mut verdicts = [0u64; 5];
    let mut clock_dependent = 0u64;
    let started = Instant::now();
    for n in 0..frames {
        if n % 500 == 499 {
            let what = traffic.pick_control();
            traffic.control(&mut bench, &mut reference, what);
        }
        let frame = traffic.frame();
        let earliest = coarse_now_ns();
        let PacketVerdict { action, packet } = bench.switch.run_on_packet(&frame).unwrap();
        let now = ClockInterval {
            earliest,
            latest: coarse_now_ns(),
        };
        let candidates = reference.process(&frame, now);
        clock_dependent += (candidates.len() > 1) as u64;
        let Some(outcome) = candidates
            .iter()
            .find(|c| c.verdict == action && c.bytes == packet)
        else {
            panic!(
                "frame {n} (seed {seed}, {policy:?}): the program and its reference disagree\n\
                 input:    {}\nprogram:  {} {}\n{}",
                hex(&frame),
                action::name(action),
                hex(&packet),
                describe(&candidates, &packet)
            );
        };
        reference.settle(outcome);
        verdicts[action as usize % 5] += 1;
        traffic.observe(&packet);
    }
    let elapsed = started.elapsed().as_secs_f64();
    compare_maps(&bench, &reference, seed);
    println!(
        "{policy:?}: {frames} frames agree (seed {seed}) in {elapsed:.1} s, {:.0} frames/s: \
         {} redirected, {} passed, {} dropped; {clock_dependent} retries whose answer \
         depended on the clock",
        frames as f64 / elapsed,
        verdicts[action::REDIRECT as usize],
        verdicts[action::PASS as usize],
        verdicts[action::DROP as usize],
    );
    // The traffic must have reached every rule, or agreement proves little.
    for counter in [
        Counter::WritesStamped,
        Counter::StampsReused,
        Counter::StaleDuplicates,
        Counter::StaleEpochs,
        Counter::HotReads,
        Counter::HotWrites,
        Counter::RetriesPinned,
        Counter::DirectoryUpdates,
        Counter::RepliesDropped,
        Counter::ReplicateAcks,
        Counter::RoleDrops,
        Counter::RequestsCleaned,
        Counter::ParseFailures,
        Counter::Unparseable,
        Counter::FibMisses,
    ] {
        assert!(
            reference.counters.get(counter.name()).copied().unwrap_or(0) > 0 || frames < 5_000,
            "no frame reached {} (seed {seed})",
            counter.name()
        );
    }
}

/// Counters, the version counter, every write window, directory entry and server load.
fn compare_maps(bench: &Testbed, reference: &Reference, seed: u64) {
    let counters = bench.switch.counters().unwrap();
    for &counter in Counter::ALL {
        if UNMODELLED.contains(&counter) {
            continue;
        }
        assert_eq!(
            counters.get(counter),
            reference.counters.get(counter.name()).copied().unwrap_or(0),
            "counter {} (seed {seed})",
            counter.name()
        );
    }
    assert_eq!(
        bench.switch.version_counter().unwrap(),
        reference.version_counter,
        "version counter (seed {seed})"
    );
    for (&client, window) in &reference.windows {
        assert_eq!(
            &bench.switch.write_window(client).unwrap(),
            window,
            "client {client}'s write window (seed {seed})"
        );
    }
    let mut program: Vec<(u64, DirEntry)> = bench.switch.directory_list().unwrap();
    program.sort_by_key(|&(k, _)| k);
    let mut modelled: Vec<(u64, DirEntry)> =
        reference.directory.iter().map(|(&k, &e)| (k, e)).collect();
    modelled.sort_by_key(|&(k, _)| k);
    let comparable = |(k, e): (u64, DirEntry)| {
        (
            k,
            DirEntry {
                replica_slot: 0, // the program's slot numbers are the controller's choice
                ..e
            },
        )
    };
    assert_eq!(
        program.into_iter().map(comparable).collect::<Vec<_>>(),
        modelled.into_iter().map(comparable).collect::<Vec<_>>(),
        "directory (seed {seed})"
    );
    let loads: Vec<(u8, u16)> = (0..SERVERS)
        .map(|i| (i, reference.server_table.slots[i as usize].load))
        .collect();
    assert_eq!(
        bench.switch.server_loads().unwrap(),
        loads,
        "loads (seed {seed})"
    );
}

/// A change to the directory, as a controller makes them.
#[derive(Clone, Copy, Debug)]
enum Control {
    Insert,
    Remove,
    ToggleEvicting,
    SetReplicaTarget,
    /// An arbitrary entry: installed, a random replica set and completed version.
    SetEntry,
}

/// The seeded traffic: what it sends, and what it knows of the switch to make its frames
/// interesting (keys in the directory, client request ids, versions stamped).
struct Traffic {
    rng: StdRng,
    keys: Vec<Vec<u8>>,
    /// Keys (indexes into `keys`) in the directory.
    hot: Vec<usize>,
    /// Each client's next write id.
    next_write: Vec<u32>,
    /// Versions the switch stamped lately.
    stamped: Vec<u64>,
}

impl Traffic {
    fn new(seed: u64) -> Traffic {
        let mut rng = StdRng::seed_from_u64(seed);
        let next_write = CLIENTS
            .iter()
            .map(|_| WRITE_ID_BIT | rng.random_range(0..1 << 20))
            .collect();
        Traffic {
            rng,
            keys: (0..KEYS).map(|i| format!("key-{i}").into_bytes()).collect(),
            hot: Vec::new(),
            next_write,
            stamped: vec![version::make(EPOCH, 1).unwrap()],
        }
    }

    fn pick_control(&mut self) -> Control {
        match self.rng.random_range(0..10) {
            0..=2 => Control::Insert,
            3..=4 => Control::Remove,
            5..=6 => Control::ToggleEvicting,
            7 => Control::SetReplicaTarget,
            _ => Control::SetEntry,
        }
    }

    fn control(&mut self, bench: &mut Testbed, reference: &mut Reference, what: Control) {
        let switch = &mut bench.switch;
        let home = |key: usize| (key % SERVERS as usize) as u8;
        match what {
            Control::Insert if self.hot.len() < HOT_MAX => {
                let key = self.rng.random_range(0..KEYS);
                if self.hot.contains(&key) {
                    return;
                }
                let keyhash = key_hash(&self.keys[key]);
                switch.directory_insert(keyhash, home(key)).unwrap();
                reference.directory_insert(keyhash, home(key));
                self.hot.push(key);
            }
            Control::Remove if !self.hot.is_empty() => {
                let key = self
                    .hot
                    .swap_remove(self.rng.random_range(0..self.hot.len()));
                let keyhash = key_hash(&self.keys[key]);
                switch.directory_remove(keyhash).unwrap();
                reference.directory_remove(keyhash);
            }
            Control::ToggleEvicting => {
                // Any key: a mark on a key not in the directory must change nothing.
                let keyhash = key_hash(&self.keys[self.rng.random_range(0..KEYS)]);
                let evicting = !reference.evicting.contains(&keyhash);
                switch.set_evicting(keyhash, evicting).unwrap();
                if evicting {
                    reference.evicting.insert(keyhash);
                } else {
                    reference.evicting.remove(&keyhash);
                }
            }
            Control::SetReplicaTarget if !self.hot.is_empty() => {
                let key = self.hot[self.rng.random_range(0..self.hot.len())];
                let keyhash = key_hash(&self.keys[key]);
                let target = self.rng.random_range(0..=SERVERS);
                switch.set_replica_target(keyhash, target).unwrap();
                reference.replica_targets.insert(keyhash, target);
            }
            Control::SetEntry if !self.hot.is_empty() => {
                let key = self.hot[self.rng.random_range(0..self.hot.len())];
                let keyhash = key_hash(&self.keys[key]);
                let rset: ServerSet = self.rng.random_range(1..1 << SERVERS);
                let entry = DirEntry {
                    ver_completed: self.version(),
                    rset,
                    installing: self.rng.random_bool(0.2) as u8,
                    reads: self.rng.random_range(0..1000),
                    writes: self.rng.random_range(0..1000),
                    mix_reads: self.rng.random_range(0..64),
                    mix_writes: self.rng.random_range(0..64),
                    ..DirEntry::new(keyhash, home(key))
                };
                switch.set_directory_entry(keyhash, entry).unwrap();
                reference.directory.insert(keyhash, entry);
            }
            _ => {}
        }
    }

    /// Learns the versions the switch stamps, for replies to carry.
    fn observe(&mut self, output: &[u8]) {
        let at = fixtures_payload_offset() + wire::offset::VERSION;
        if output.len() >= fixtures_payload_offset() + wire::HEADER_LEN
            && output[fixtures_payload_offset() + wire::offset::OP] == Op::Put as u8
        {
            let v = u64::from_be_bytes(output[at..at + 8].try_into().unwrap());
            if version::epoch(v) == EPOCH && version::counter(v) != 0 {
                if self.stamped.len() >= 64 {
                    self.stamped.remove(0);
                }
                self.stamped.push(v);
            }
        }
    }

    /// A version for a reply or a directory entry: mostly one the switch stamped lately.
    fn version(&mut self) -> u64 {
        match self.rng.random_range(0..10) {
            0 => 0,
            1 => self.rng.random(),
            2 => version::make(EPOCH - 1, self.rng.random_range(1..100)).unwrap(),
            _ => self.stamped[self.rng.random_range(0..self.stamped.len())],
        }
    }

    fn frame(&mut self) -> Vec<u8> {
        let mut frame = match self.rng.random_range(0..100) {
            0..=49 => self.client_request(),
            50..=79 => self.server_reply(),
            80..=91 => self.server_request(),
            _ => self.other_traffic(),
        };
        if self.rng.random_bool(0.25) {
            for _ in 0..self.rng.random_range(1..=3) {
                self.mutate(&mut frame);
            }
        }
        frame
    }

    fn key(&mut self) -> usize {
        // Half the requests on keys in the directory.
        if !self.hot.is_empty() && self.rng.random_bool(0.5) {
            self.hot[self.rng.random_range(0..self.hot.len())]
        } else {
            self.rng.random_range(0..KEYS)
        }
    }

    fn client_request(&mut self) -> Vec<u8> {
        let key = self.key();
        // Now and then the controller's id, which no client may use.
        let honest = self.rng.random_bool(0.98);
        let c = if honest {
            self.rng.random_range(0..CLIENTS.len() - 1)
        } else {
            CLIENTS.len() - 1
        };
        let op = if self.rng.random_bool(0.45) {
            Op::Put
        } else if self.rng.random_bool(0.95) {
            Op::Get
        } else {
            [Op::Replicate, Op::Push, Op::ChainPut][self.rng.random_range(0..3)]
        };
        let request_id = if op == Op::Put {
            let next = self.next_write[c];
            match self.rng.random_range(0..100) {
                0..=69 => {
                    self.next_write[c] = next.wrapping_add(1) | WRITE_ID_BIT;
                    next
                }
                // A copy of a recent write (a duplicate or a retry).
                70..=89 => next.wrapping_sub(self.rng.random_range(1..8)) | WRITE_ID_BIT,
                // A copy of one a window or more older: its client has finished it.
                90..=95 => {
                    next.wrapping_sub(once::WRITE_WINDOW + self.rng.random_range(0..64))
                        | WRITE_ID_BIT
                }
                _ => self.rng.random(),
            }
        } else {
            self.rng.random()
        };
        let home = (key % SERVERS as usize) as u8;
        let mut header =
            Header::request(op, key_hash(&self.keys[key]), CLIENTS[c], request_id, home)
                .with_client_epoch(match self.rng.random_range(0..20) {
                    0 => 0,
                    1 => EPOCH - 1,
                    _ => EPOCH,
                });
        header.flags = match self.rng.random_range(0..20) {
            0..=14 => 0,
            15..=17 => wire::flags::RETRY,
            _ => self.rng.random(),
        };
        if self.rng.random_bool(0.1) {
            header.version = self.rng.random();
            header.replica_bitmap = self.rng.random();
        }
        let to = match self.rng.random_range(0..20) {
            0..=13 => server_ip(home),
            14..=17 => server_ip(self.rng.random_range(0..SERVERS)),
            _ => self.odd_address(),
        };
        let value = if op == Op::Put { &b"value"[..] } else { b"" };
        let payload = fixtures::payload(header, &self.keys[key].clone(), value);
        UdpFrame::new(
            SocketAddrV4::new(client_ip(), 40_000),
            SocketAddrV4::new(to, PORT),
            payload,
        )
        .build()
    }

    fn server_reply(&mut self) -> Vec<u8> {
        let key = self.key();
        let sender = self.rng.random_range(0..SERVERS);
        let op = [
            Op::GetReply,
            Op::GetReply,
            Op::PutReply,
            Op::PutReply,
            Op::ReplicateAck,
            Op::PushReply,
            Op::ChainAck,
        ][self.rng.random_range(0..7)];
        let header = Header {
            op_code: op as u8,
            keyhash: key_hash(&self.keys[key]),
            version: self.version(),
            request_id: self.rng.random(),
            client_id: CLIENTS[self.rng.random_range(0..CLIENTS.len())],
            server_id: if self.rng.random_bool(0.9) {
                sender
            } else {
                self.rng.random_range(0..70)
            },
            flags: if self.rng.random_bool(0.5) {
                wire::flags::HOT
            } else {
                self.rng.random_range(0..4)
            },
            replica_bitmap: 0,
            load: self.rng.random_range(0..40),
            status: if self.rng.random_bool(0.9) { 0 } else { 1 },
        };
        let from = if self.rng.random_bool(0.97) {
            server_ip(sender)
        } else {
            client_ip() // a client posing as a server
        };
        let to = if self.rng.random_bool(0.9) {
            client_ip()
        } else {
            server_ip(self.rng.random_range(0..SERVERS))
        };
        UdpFrame::new(
            SocketAddrV4::new(from, PORT),
            SocketAddrV4::new(to, 40_000),
            fixtures::reply_payload(header, b"value"),
        )
        .build()
    }

    /// A server's request to another server: a copy, a chained or stamped write, a read.
    fn server_request(&mut self) -> Vec<u8> {
        let key = self.key();
        let (from, to) = (
            self.rng.random_range(0..SERVERS),
            self.rng.random_range(0..SERVERS),
        );
        let op =
            [Op::Put, Op::Replicate, Op::ChainPut, Op::Push, Op::Get][self.rng.random_range(0..5)];
        let mut header = Header::request(op, key_hash(&self.keys[key]), 0, self.rng.random(), to);
        header.version = self.version();
        header.flags = if self.rng.random_bool(0.7) {
            wire::flags::STAMPED
        } else {
            self.rng.random_range(0..8)
        };
        header.replica_bitmap = if self.rng.random_bool(0.2) {
            self.rng.random_range(0..16)
        } else {
            0
        };
        UdpFrame::new(
            SocketAddrV4::new(server_ip(from), 41_000),
            SocketAddrV4::new(server_ip(to), PORT),
            fixtures::payload(header, &self.keys[key].clone(), b"v"),
        )
        .build()
    }

    /// Traffic that is not the store's: other UDP ports, other protocols, runts.
    fn other_traffic(&mut self) -> Vec<u8> {
        let mut frame = UdpFrame::new(
            SocketAddrV4::new(client_ip(), 5353),
            SocketAddrV4::new(server_ip(self.rng.random_range(0..SERVERS)), 53),
            (0..self.rng.random_range(0..60))
                .map(|_| self.rng.random())
                .collect(),
        )
        .build();
        match self.rng.random_range(0..4) {
            0 => frame[12..14].copy_from_slice(&[0x08, 0x06]), // ARP's ethertype
            1 => frame[14 + 9] = 6,                            // TCP
            2 => frame.truncate(self.rng.random_range(14..frame.len())),
            _ => {}
        }
        frame
    }

    /// An address the FIB has no port for, or a host's address where it was not sent.
    fn odd_address(&mut self) -> Ipv4Addr {
        match self.rng.random_range(0..6) {
            0 => Ipv4Addr::new(10, 1, 0, 99), // no neighbour
            1 => Ipv4Addr::new(10, 3, 0, 2),  // no route
            2 => Ipv4Addr::new(10, 1, 9, 2),  // a server the rack does not have
            3 => Ipv4Addr::new(10, 1, 0, 1),  // the switch's own address
            4 => client_ip(),                 // the client itself
            _ => Ipv4Addr::from(0x0a00_0000 | self.rng.random::<u32>() & 0x00ff_ffff),
        }
    }

    fn mutate(&mut self, frame: &mut Vec<u8>) {
        let ip = 14;
        let len = frame.len();
        match self.rng.random_range(0..12) {
            0 if len > 0 => {
                let at = self.rng.random_range(0..len);
                frame[at] ^= 1 << self.rng.random_range(0..8);
            }
            1 if len > 42 => {
                // A byte of the Pegasus header (or just after it).
                let at = self
                    .rng
                    .random_range(42..len.min(42 + wire::HEADER_LEN + 4));
                frame[at] = self.rng.random();
            }
            2 if len > 14 => frame.truncate(self.rng.random_range(14..len)),
            3 => frame.extend((0..self.rng.random_range(1..20)).map(|_| self.rng.random::<u8>())),
            4 if len >= 14 => {
                let tag = [0x81, 0x00, 0x00, self.rng.random_range(1..10)];
                frame.splice(12..12, tag);
            }
            5 if len >= ip + 20 => {
                // IHL 6, four bytes of options (NOPs).
                frame.splice(ip + 20..ip + 20, [1, 1, 1, 1]);
                frame[ip] = 0x46;
            }
            6 if len >= ip + 20 => {
                frame[ip + 6..ip + 8].copy_from_slice(match self.rng.random_range(0..3) {
                    0 => &[0x20, 0x00], // more fragments
                    1 => &[0x00, 0x10], // a later fragment
                    _ => &[0x00, 0x00],
                });
            }
            7 if len >= ip + 20 => frame[ip + 8] = self.rng.random_range(0..3), // TTL
            8 if len >= 42 => frame[40..42].copy_from_slice(&[0, 0]),           // no UDP checksum
            9 if len >= ip + 20 => {
                let total: u16 = if self.rng.random_bool(0.5) {
                    self.rng.random_range(1400..1600)
                } else {
                    self.rng.random()
                };
                frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
            }
            10 if len >= ip + 20 => {
                let to = self.odd_address().octets();
                frame[ip + 16..ip + 20].copy_from_slice(&to);
            }
            11 if len >= ip + 20 => {
                let from = match self.rng.random_range(0..3) {
                    0 => server_ip(self.rng.random_range(0..SERVERS)),
                    1 => client_ip(),
                    _ => Ipv4Addr::new(10, 9, 9, 9),
                };
                frame[ip + 12..ip + 16].copy_from_slice(&from.octets());
            }
            _ => {}
        }
    }
}

fn fixtures_payload_offset() -> usize {
    pegasus_control::testkit::packet::PAYLOAD_OFFSET
}

/// CLOCK_MONOTONIC_COARSE, the clock of `bpf_ktime_get_coarse_ns`.
fn coarse_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only `now`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    assert_eq!(rc, 0);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(candidates: &[Expected], got: &[u8]) -> String {
    candidates
        .iter()
        .map(|c| {
            let first_difference = c
                .bytes
                .iter()
                .zip(got)
                .position(|(a, b)| a != b)
                .map_or("none".to_owned(), |at| at.to_string());
            format!(
                "reference: {} {}\n  (first differing byte: {first_difference}; counters {:?})",
                action::name(c.verdict),
                hex(&c.bytes),
                c.counts.iter().map(|c| c.name()).collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
