//! End to end: the coherence directory in a lab rack, and the cache baseline in its place.
//! Clients record histories of concurrent reads and writes while hot keys are added and
//! removed; the histories must be linearizable, and hot keys must really be served by several
//! servers (the directory) or by the switch itself (the cache). Needs root, as CI runs.

mod support;

use serde_json::Value;
use std::{path::PathBuf, thread, time::Duration};
use support::{Lab, assert_linearizable, json, pegasus, run_ok};

const CLIENTS: u8 = 4;
const HOT: usize = 4;

/// A scratch directory removed at the end of the test, also when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pegasus-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What the rack's switch does with hot keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HotPath {
    /// Pegasus: the directory steers and replicates.
    Directory,
    /// The cache baseline: the switch answers reads from cached values.
    Cache,
}

#[test]
fn histories_stay_linearizable_while_hot_keys_come_and_go() {
    directory_history("e2edir", None, HotPath::Directory);
}

/// The cache baseline under the same test: no read the switch answers may be stale.
#[test]
fn cached_histories_stay_linearizable_while_hot_keys_come_and_go() {
    directory_history("e2ecache", None, HotPath::Cache);
}

/// The cache under loss: dropped writes, replies and retries around cached keys.
#[test]
fn cached_histories_stay_linearizable_under_packet_loss() {
    directory_history("e2ecloss", Some(3.0), HotPath::Cache);
}

/// The same under packet loss: 3% of the datagrams every server and client receives are lost
/// (an XDP program on their interfaces: `pegasus_control::lab::fault`), so requests, replies,
/// copies and acks go missing and clients retry: the rules for retries, pinned routes and
/// deduplication are exercised, not just present.
#[test]
fn histories_stay_linearizable_under_packet_loss() {
    directory_history("e2eloss", Some(3.0), HotPath::Directory);
}

fn directory_history(tag: &str, loss_percent: Option<f64>, path: HotPath) {
    // The keys are made hot and cold by hand here: no detection.
    let lab = Lab::up(
        tag,
        &[
            "--servers",
            "6",
            "--clients",
            &CLIENTS.to_string(),
            "--hot-keys",
            "0",
            "--dataplane",
            match path {
                HotPath::Directory => "xdp",
                HotPath::Cache => "cache",
            },
        ],
    );
    let _loss = loss_percent.map(|percent| {
        use pegasus_control::lab::Host;
        let links: Vec<_> = (0..6u8)
            .map(Host::Server)
            .chain((0..CLIENTS).map(Host::Client))
            .map(|host| host.link(&lab.name))
            .collect();
        pegasus_control::lab::fault::PacketLoss::start(&links, percent, rand::random()).unwrap()
    });
    // Under loss every lost datagram costs its worker a 200 ms timeout: far fewer operations.
    let busy = if loss_percent.is_some() { 200 } else { 1000 };
    let scratch = Scratch::new(tag);
    let prefix = format!("{tag}{}", std::process::id());
    let hot: Vec<String> = (0..HOT).map(|i| format!("{prefix}-hot-{i}")).collect();
    let files: Vec<String> = (0..CLIENTS)
        .map(|j| {
            scratch
                .0
                .join(format!("client{j}.jsonl"))
                .display()
                .to_string()
        })
        .collect();

    let hot_cmd = |verb: &str, keys: &[&String]| {
        let mut args = vec!["switch", "hot", verb, "--lab", &lab.name];
        args.extend(keys.iter().map(|k| k.as_str()));
        run_ok(&args);
    };
    let summaries: Vec<Value> = thread::scope(|s| {
        let recorders: Vec<_> = (0..CLIENTS)
            .map(|j| {
                let (lab, file, prefix) = (&lab, &files[j as usize], &prefix);
                s.spawn(move || {
                    lab.record_history(
                        j,
                        file,
                        prefix,
                        &[
                            "--hot",
                            "4",
                            "--cold",
                            "100",
                            "--seconds",
                            "5",
                            "--workers",
                            "4",
                        ],
                    )
                })
            })
            .collect();
        // While they run: all four keys become hot, then keys leave and come back, so that
        // reads and writes cross every transition (cold -> hot, hot -> cold, and again).
        let pause = |ms| thread::sleep(Duration::from_millis(ms));
        pause(500);
        hot_cmd("add", &hot.iter().collect::<Vec<_>>());
        pause(1500);
        hot_cmd("del", &[&hot[0], &hot[1]]);
        pause(600);
        hot_cmd("add", &[&hot[0]]);
        pause(600);
        hot_cmd("del", &[&hot[2]]);
        hot_cmd("add", &[&hot[1]]);
        pause(600);
        hot_cmd("del", &[&hot[0], &hot[3]]);
        recorders.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for s in &summaries {
        assert!(
            s["operations"].as_u64().unwrap() >= busy,
            "a recorder barely ran: {s}"
        );
    }

    let report = assert_linearizable(&files);
    assert_eq!(report["keys"], HOT as u64 + 100, "{report}");
    let per_key = report["per_key"].as_array().unwrap();
    let read_servers = |k: &Value| -> Vec<u64> {
        k["read_servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect()
    };
    let hot_reads: Vec<Vec<u64>> = per_key
        .iter()
        .filter(|k| hot.contains(&k["key"].as_str().unwrap().to_string()))
        .map(read_servers)
        .collect();
    // Cold keys are only ever read at home.
    for k in per_key {
        if k["key"].as_str().unwrap().contains("-cold-") {
            assert!(read_servers(k).len() <= 1, "{k}");
        }
    }
    let status = json(&run_ok(&["switch", "status", "--lab", &lab.name, "--json"]));
    let counter = |name: &str| status["counters"][name].as_u64().unwrap();
    match path {
        HotPath::Directory => {
            let widest = hot_reads.iter().map(Vec::len).max().unwrap();
            assert!(
                widest >= 3,
                "no hot key was read from 3 or more servers: {report}"
            );
            // The switch steered requests and learned from replies.
            assert!(counter("hot_reads") > busy, "{status}");
            assert!(counter("hot_writes") > busy, "{status}");
            assert!(counter("directory_updates") > busy, "{status}");
            assert!(counter("replicate_acks") > 0, "{status}");
            if loss_percent.is_some() {
                assert!(
                    counter("retries_pinned") > 0,
                    "retries were exercised: {status}"
                );
            }
        }
        HotPath::Cache => {
            // Hot keys are read from home and from the switch, nothing else.
            let switch = u64::from(pegasus_common::cache::SWITCH_SERVER_ID);
            assert!(
                hot_reads.iter().any(|servers| servers.contains(&switch)),
                "no read was answered by the switch: {report}"
            );
            for servers in &hot_reads {
                assert!(
                    servers.iter().filter(|&&s| s != switch).count() <= 1,
                    "{servers:?}"
                );
            }
            assert!(counter("cache_hits") > busy, "{status}");
            assert!(counter("cache_fills") > 0, "{status}");
            assert!(counter("cache_invalidations") > 0, "{status}");
            assert_eq!(counter("hot_reads") + counter("hot_writes"), 0, "{status}");
        }
    }
    // The hot keys end as left.
    let listed = lab.hot_list();
    let mut left: Vec<&str> = listed.iter().map(|k| k["key"].as_str().unwrap()).collect();
    left.sort();
    assert_eq!(left, vec![hot[1].as_str()], "{listed:?}");
}

#[test]
fn the_checker_rejects_a_stale_read_from_the_command_line() {
    let scratch = Scratch::new("stale");
    let file = scratch.0.join("stale.jsonl");
    // Write 1 completes, write 2 completes, then a read returns 1.
    let lines = [
        r#"{"client":"a","key":"x","kind":"write","value":"1","call_ns":0,"return_ns":10}"#,
        r#"{"client":"b","key":"x","kind":"write","value":"2","call_ns":20,"return_ns":30}"#,
        r#"{"client":"c","key":"x","kind":"read","value":"1","call_ns":40,"return_ns":50}"#,
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = pegasus()
        .args(["history", "check", file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("NOT linearizable"), "{text}");
    assert!(text.contains(r#"read "x" Some("1") by c"#), "{text}");

    // Without the stale read it passes.
    std::fs::write(&file, lines[..2].join("\n")).unwrap();
    let out = pegasus()
        .args(["history", "check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Garbage is an error that names the line.
    std::fs::write(&file, "{}\n").unwrap();
    let out = pegasus()
        .args(["history", "check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{out:?}"
    );
}
