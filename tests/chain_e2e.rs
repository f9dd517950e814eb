//! End to end: a chain of three racks (docs/chain.md). First, three servers each, whose links
//! to the fabric between racks lose, duplicate and reorder packets in both directions. Two clients record reads and
//! writes of hot and cold keys (each rack's controller finds its own hot keys), one reading
//! from the tail, the other from any rack; every key is read back at the end. The whole history must be linearizable, and once the chain's queues
//! have drained, every rack's stores must hold the same version of every key. Needs root, as
//! CI runs.

mod support;

use pegasus_client::Cluster;
use pegasus_common::{
    hash::key_hash,
    wire::{self, Header, Message, Op},
};
use pegasus_control::lab::{
    chain,
    fault::{DirectionFaults, Injector, LinkPlan},
    lab_dir, netns,
};
use std::{collections::BTreeMap, net::UdpSocket, thread, time::Duration};
use support::{Lab, assert_linearizable};

const RACKS: u8 = 3;
/// The racks' ids when the lab comes up.
const ALL_RACKS: [u8; RACKS as usize] = [0, 1, 2];
const SERVERS: u8 = 3;
const CLIENTS: u8 = 2;
const HOT: usize = 3;
const COLD: usize = 30;
const RUN: Duration = Duration::from_secs(6);
/// Longer than a forwarded write's longest retransmission timeout, several times over.
const DRAIN: Duration = Duration::from_secs(3);

#[test]
fn a_chain_under_lossy_links_stays_linearizable_and_converges() {
    let (lab, scratch, prefix) = chain_lab("e2echain", SERVERS);
    let file = |name: &str| scratch.join(format!("{name}.jsonl")).display().to_string();
    let seed: u64 = rand::random();
    eprintln!("fault seed {seed}");
    let faults = DirectionFaults {
        drop: 0.05,
        duplicate: 0.03,
        duplicate_delay: (Duration::from_millis(1), Duration::from_millis(300)),
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(2),
        ..DirectionFaults::default()
    };
    let injectors: Vec<Injector> = (0..RACKS)
        .map(|rack| {
            let plan = LinkPlan {
                to_switch: faults.clone(),
                from_switch: faults.clone(),
                seed: seed ^ u64::from(rack),
            };
            Injector::start(&chain::chain_link(&lab.name, rack), &plan).unwrap()
        })
        .collect();

    let files: Vec<String> = (0..CLIENTS).map(|j| file(&format!("client{j}"))).collect();
    record(&lab, &files, &prefix, || {});
    let reports: Vec<_> = injectors.into_iter().map(|i| i.stop().unwrap()).collect();
    let dropped: u64 = reports
        .iter()
        .map(|r| r.to_switch.dropped + r.from_switch.dropped)
        .sum();
    assert!(dropped >= 20, "the links lost little: {reports:?}");

    read_back_and_check(&lab, &prefix, files, file("read-back"), &ALL_RACKS);

    // Every rack's switch steered: the head stamped every write, and its hot writes were
    // spread; the tail spread hot reads; nothing crossed a port that may not send it.
    let counters: Vec<serde_json::Value> = (0..RACKS)
        .map(|rack| {
            let suffix = if rack == 0 {
                String::new()
            } else {
                format!("-r{rack}")
            };
            let socket = lab_dir(&lab.name).join(format!("switch{suffix}.sock"));
            let status = support::json(&support::run_ok(&[
                "switch",
                "status",
                "--admin",
                &socket.display().to_string(),
                "--json",
            ]));
            status["counters"].clone()
        })
        .collect();
    eprintln!("switch counters by rack: {counters:?}");
    let count = |rack: usize, name: &str| counters[rack][name].as_u64().unwrap();
    assert!(count(0, "writes_stamped") > 0);
    assert!((1..RACKS as usize).all(|r| count(r, "writes_stamped") == 0));
    assert!(count(0, "hot_writes") > 0, "the head spread no hot write");
    assert!(count(2, "hot_reads") > 0, "the tail spread no hot read");
    assert!(
        count(0, "hot_reads") + count(1, "hot_reads") > 0,
        "no hot read reached a rack but the tail"
    );
    assert!((0..RACKS as usize).all(|r| count(r, "role_drops") == 0));
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A chain lab of [`RACKS`] racks of `servers` stores and [`CLIENTS`] clients named after
/// `tag`, a scratch directory for its histories, and a key prefix of its own.
fn chain_lab(tag: &str, servers: u8) -> (Lab, std::path::PathBuf, String) {
    chain_lab_with(tag, servers, &[])
}

/// [`chain_lab`] with more `lab up` flags.
fn chain_lab_with(tag: &str, servers: u8, extra: &[&str]) -> (Lab, std::path::PathBuf, String) {
    let (racks, servers, clients) = (RACKS.to_string(), servers.to_string(), CLIENTS.to_string());
    let mut args = vec![
        "--racks",
        &racks,
        "--servers",
        &servers,
        "--clients",
        &clients,
    ];
    args.extend_from_slice(extra);
    let lab = Lab::up(tag, &args);
    let scratch = std::env::temp_dir().join(format!("pegasus-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    (lab, scratch, format!("{tag}{}", std::process::id()))
}

/// Client 0 (reading from the tail) and client 1 (reading from any rack) record reads and
/// writes of the hot and cold keys of `prefix` into `files` for [`RUN`], while `during`
/// runs; each must have done some work.
fn record(lab: &Lab, files: &[String], prefix: &str, during: impl FnOnce()) {
    thread::scope(|s| {
        let recorders: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(j, file)| {
                s.spawn(move || {
                    let read_from = if j == 0 { "tail" } else { "any" };
                    lab.record_history(
                        j as u8,
                        file,
                        prefix,
                        &[
                            "--read-from",
                            read_from,
                            "--hot",
                            &HOT.to_string(),
                            "--hot-share",
                            "0.7",
                            "--cold",
                            &COLD.to_string(),
                            "--write-share",
                            "0.4",
                            "--seconds",
                            &RUN.as_secs_f64().to_string(),
                            "--workers",
                            "4",
                        ],
                    )
                })
            })
            .collect();
        during();
        for r in recorders {
            let summary = r.join().unwrap();
            eprintln!("recorder: {summary}");
            assert!(
                summary["operations"].as_u64().unwrap() >= 300,
                "a recorder barely ran: {summary}"
            );
        }
    });
}

/// After the queues drain, reads every key of `prefix` back from client 0 into `read_back`,
/// checks the histories in `files` and the read-back linearizable, and that `racks` hold the
/// same newest version of every key.
fn read_back_and_check(
    lab: &Lab,
    prefix: &str,
    mut files: Vec<String>,
    read_back: String,
    racks: &[u8],
) {
    thread::sleep(DRAIN);
    lab.read_back(prefix, &read_back, HOT, COLD);
    files.push(read_back);
    let report = assert_linearizable(&files);
    assert_eq!(report["keys"], (HOT + COLD) as u64, "{report}");
    assert_racks_converged(&lab.name, prefix, racks);
}

/// Racks `racks` hold the same newest version of every key of `prefix`, each written.
fn assert_racks_converged(lab: &str, prefix: &str, racks: &[u8]) {
    let keys: Vec<String> = (0..HOT)
        .map(|i| format!("{prefix}-hot-{i}"))
        .chain((0..COLD).map(|i| format!("{prefix}-cold-{i}")))
        .collect();
    let versions: Vec<BTreeMap<String, u64>> = racks
        .iter()
        .map(|&rack| rack_versions(lab, rack, &keys))
        .collect();
    for (rack, held) in versions.iter().enumerate().skip(1) {
        assert_eq!(held, &versions[0], "rack {rack} differs from the head");
    }
    assert!(
        versions[0].values().all(|&v| v != 0),
        "every key was written: {:?}",
        versions[0]
    );
}

/// A chain's switches crash and come back under load (the middle rack's, then the head's,
/// which starts a new epoch): writes stall while a rack forwards nothing and resume after
/// (retransmitted by the stores, retried by the clients); the histories stay linearizable,
/// and every rack ends with the same newest version of every key. (It caught a restarted
/// switch dropping for good the retransmitted CHAIN_PUT of a steered write whose key it no
/// longer had: `directory::admit_report`.)
#[test]
fn switches_restarted_in_a_chain_lose_nothing() {
    // A lease longer than a restart: the racks stay in the chain.
    let (lab, scratch, prefix) = chain_lab_with("e2echrs", 2, &["--lease-ttl-secs", "5"]);
    let file = |name: &str| scratch.join(format!("{name}.jsonl")).display().to_string();
    let files: Vec<String> = (0..CLIENTS).map(|j| file(&format!("client{j}"))).collect();
    record(&lab, &files, &prefix, || {
        for rack in ["1", "0"] {
            thread::sleep(Duration::from_millis(1500));
            support::run_ok(&[
                "lab",
                "restart-switch",
                "--name",
                &lab.name,
                "--rack",
                rack,
                "--down-ms",
                "200",
            ]);
        }
    });
    read_back_and_check(&lab, &prefix, files, file("read-back"), &ALL_RACKS);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A rack of the chain is killed (switch, controller and stores) two seconds into the run:
/// its lease expires, a live controller takes it out of etcd's configuration, the racks
/// around it reconnect (a middle's predecessor resends its queue to the successor; a tail's
/// predecessor answers what it holds; a head's successor stamps in a newer version epoch),
/// and the clients follow the head and tail in etcd. The histories (through the failure) and
/// a read of every key from the new tail afterwards must be linearizable, and the racks left
/// must hold the same newest version of every key.
fn a_rack_fails_under_load(tag: &str, victim: u8) {
    let (lab, scratch, prefix) = chain_lab(tag, 2);
    let file = |name: &str| scratch.join(format!("{name}.jsonl")).display().to_string();
    let files: Vec<String> = (0..CLIENTS).map(|j| file(&format!("client{j}"))).collect();
    let mut killed = serde_json::Value::Null;
    record(&lab, &files, &prefix, || {
        thread::sleep(Duration::from_secs(2));
        killed = support::json(&support::run_ok(&[
            "lab",
            "kill-rack",
            "--name",
            &lab.name,
            "--rack",
            &victim.to_string(),
            "--json",
        ]));
    });
    eprintln!("killed: {killed}");
    let left: Vec<u8> = (0..RACKS).filter(|&r| r != victim).collect();
    assert_eq!(killed["racks"], serde_json::json!(left), "{killed}");
    assert!(
        killed["reconfigured_ms"].as_u64().unwrap() <= 2_500,
        "slow to reconfigure: {killed}"
    );
    let status = support::json(&support::run_ok(&[
        "chain", "status", "--lab", &lab.name, "--json",
    ]));
    let roles: Vec<&str> = status["racks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["head", "tail"], "{status}");
    if victim == 0 {
        assert!(
            status["config"]["version_epoch"].as_u64().unwrap() >= 2,
            "the new head stamps in a newer epoch: {status}"
        );
    }
    read_back_and_check(&lab, &prefix, files, file("read-back"), &left);
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn the_head_fails_and_nothing_acknowledged_is_lost() {
    a_rack_fails_under_load("e2ekhd", 0);
}

#[test]
fn a_middle_rack_fails_and_nothing_acknowledged_is_lost() {
    a_rack_fails_under_load("e2ekmd", 1);
}

#[test]
fn the_tail_fails_and_nothing_acknowledged_is_lost() {
    a_rack_fails_under_load("e2ektl", 2);
}

/// A rack joins as the new tail under load (every key copied to it while writes go on),
/// then the old tail is killed: the histories and a read of every key afterwards, from the
/// new tail, must be linearizable, and the racks left must hold the same newest version of
/// every key.
#[test]
fn a_rack_added_as_the_tail_then_the_old_tail_killed_loses_nothing() {
    let (lab, scratch, prefix) = chain_lab("e2eadd", 2);
    let file = |name: &str| scratch.join(format!("{name}.jsonl")).display().to_string();
    let files: Vec<String> = (0..CLIENTS).map(|j| file(&format!("client{j}"))).collect();
    let (mut added, mut killed) = (serde_json::Value::Null, serde_json::Value::Null);
    record(&lab, &files, &prefix, || {
        thread::sleep(Duration::from_millis(1500));
        added = support::json(&support::run_ok(&[
            "lab", "add-rack", "--name", &lab.name, "--json",
        ]));
        killed = support::json(&support::run_ok(&[
            "lab",
            "kill-rack",
            "--name",
            &lab.name,
            "--rack",
            &(RACKS - 1).to_string(),
            "--json",
        ]));
    });
    eprintln!("added: {added}\nkilled: {killed}");
    assert_eq!(added["rack"], RACKS, "{added}");
    assert_eq!(added["racks"], serde_json::json!([0, 1, 2, 3]), "{added}");
    assert_eq!(killed["racks"], serde_json::json!([0, 1, 3]), "{killed}");
    read_back_and_check(&lab, &prefix, files, file("read-back"), &[0, 1, RACKS]);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// etcd goes away for three seconds under load: the chain keeps serving with the
/// configuration it last read (the histories stay linearizable, every rack converges), its
/// controllers and stores say so in their logs, and once etcd is back a failed rack is taken
/// out again.
#[test]
fn the_chain_serves_while_etcd_is_away_and_reconfigures_after() {
    let (lab, scratch, prefix) = chain_lab("e2eetcd", 2);
    let file = |name: &str| scratch.join(format!("{name}.jsonl")).display().to_string();
    let files: Vec<String> = (0..CLIENTS).map(|j| file(&format!("client{j}"))).collect();
    record(&lab, &files, &prefix, || {
        thread::sleep(Duration::from_millis(1500));
        support::run_ok(&[
            "lab",
            "restart-etcd",
            "--name",
            &lab.name,
            "--down-ms",
            "3000",
        ]);
    });
    let dir = lab_dir(&lab.name);
    for log in ["switch-r1.log", "store-r2-0.log"] {
        let text = std::fs::read_to_string(dir.join(log)).unwrap();
        assert!(
            text.contains("etcd unreachable"),
            "{log} does not say etcd was away"
        );
    }
    read_back_and_check(&lab, &prefix, files, file("read-back"), &ALL_RACKS);
    // Reconfiguration works again.
    let killed = support::json(&support::run_ok(&[
        "lab",
        "kill-rack",
        "--name",
        &lab.name,
        "--rack",
        "1",
        "--json",
    ]));
    assert_eq!(killed["racks"], serde_json::json!([0, 2]), "{killed}");
    // And `lab down` takes everything a chain's lab made: racks, spine, fabric, etcd.
    support::run_ok(&["lab", "down", "--name", &lab.name]);
    assert_eq!(
        lab.namespaces_left(),
        Vec::<String>::new(),
        "lab down left namespaces behind"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The newest version of each key that rack `rack`'s stores hold (0: none), asked of every
/// server of the rack (a hot key's newest version need not be at its home), from the rack's
/// ToR namespace, where its controller runs.
fn rack_versions(lab: &str, rack: u8, keys: &[String]) -> BTreeMap<String, u64> {
    let cluster = Cluster::load(&lab_dir(lab).join(format!("rack-{rack}.toml"))).unwrap();
    let tor = chain::rack_tor_ns(lab, rack);
    let keys = keys.to_vec();
    thread::spawn(move || {
        netns::enter_current_thread(&tor).unwrap();
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut versions = BTreeMap::new();
        for (n, key) in keys.iter().enumerate() {
            let newest = cluster
                .servers
                .iter()
                .map(|server| {
                    let request_id = (n * 64 + server.id as usize) as u32;
                    let header = Header::request(
                        Op::Get,
                        key_hash(key.as_bytes()),
                        1,
                        request_id,
                        server.id,
                    );
                    let request = Message::new(header, key.as_bytes(), &[]).to_vec().unwrap();
                    // Up to 10 s: a store that has just come through an etcd outage on a
                    // loaded machine may take a while to answer (2 s was once too short).
                    for _attempt in 0..50 {
                        socket.send_to(&request, server.addr).unwrap();
                        let mut reply = [0u8; wire::MAX_PAYLOAD_LEN];
                        while let Ok(len) = socket.recv(&mut reply) {
                            let h = Header::decode(&reply[..len]).unwrap();
                            if h.request_id == request_id {
                                assert_eq!(h.op(), Some(Op::GetReply), "{key} at {}", server.addr);
                                return h.version;
                            }
                        }
                    }
                    panic!("no answer from {} for {key}", server.addr)
                })
                .max()
                .unwrap();
            versions.insert(key.clone(), newest);
        }
        versions
    })
    .join()
    .unwrap()
}
