//! End to end: a network that duplicates datagrams and delivers the copies late, from 1 ms to
//! well beyond the stores' 3-second deduplication window, on every link of a rack and in both
//! directions, with some loss. Clients record reads and writes of hot and cold keys while keys
//! are made hot and cold again; once every late copy has landed, every key is read back. The
//! whole history must be linearizable: no copy of a write is applied as a newer write, however
//! late it comes (the switch gives every copy its write's version, or drops it). Needs root,
//! as CI runs.

mod support;

use pegasus_control::lab::{
    Host,
    fault::{DirectionFaults, Injector, LinkPlan},
};
use std::{process::Stdio, thread, time::Duration};
use support::{Lab, assert_linearizable, json, pegasus, run_ok};

const SERVERS: u8 = 6;
const CLIENTS: u8 = 2;
const HOT: usize = 4;
const COLD: usize = 40;
const RUN: Duration = Duration::from_secs(6);
/// The latest a duplicate arrives after its packet: beyond the stores' 3-second window.
const LATEST_COPY: Duration = Duration::from_millis(4500);

#[test]
fn late_duplicates_never_bring_an_old_value_back() {
    let lab = Lab::up(
        "e2edup",
        &[
            "--servers",
            &SERVERS.to_string(),
            "--clients",
            &CLIENTS.to_string(),
            "--hot-keys",
            "0",
        ],
    );
    let scratch = std::env::temp_dir().join(format!("pegasus-e2edup-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let file = |name: &str| scratch.join(format!("{name}.jsonl")).display().to_string();
    let prefix = format!("dup{}", std::process::id());
    let hot: Vec<String> = (0..HOT).map(|i| format!("{prefix}-hot-{i}")).collect();
    let seed: u64 = rand::random();
    eprintln!("fault seed {seed}");
    let faults = DirectionFaults {
        drop: 0.005,
        duplicate: 0.04,
        duplicate_delay: (Duration::from_millis(1), LATEST_COPY),
        ..DirectionFaults::default()
    };
    let injectors: Vec<Injector> = (0..SERVERS)
        .map(Host::Server)
        .chain((0..CLIENTS).map(Host::Client))
        .enumerate()
        .map(|(i, host)| {
            let plan = LinkPlan {
                to_switch: faults.clone(),
                from_switch: faults.clone(),
                seed: seed ^ i as u64,
            };
            Injector::start(&host.link(&lab.name), &plan).unwrap()
        })
        .collect();

    let hot_cmd = |verb: &str, keys: &[&String]| {
        let mut args = vec!["switch", "hot", verb, "--lab", &lab.name];
        args.extend(keys.iter().map(|k| k.as_str()));
        run_ok(&args);
    };
    let mut files: Vec<String> = (0..CLIENTS).map(|j| file(&format!("client{j}"))).collect();
    thread::scope(|s| {
        let recorders: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(j, file)| {
                let (lab, prefix) = (&lab, &prefix);
                s.spawn(move || {
                    lab.record_history(
                        j as u8,
                        file,
                        prefix,
                        &[
                            "--hot",
                            &HOT.to_string(),
                            "--hot-share",
                            "0.6",
                            "--cold",
                            &COLD.to_string(),
                            "--write-share",
                            "0.3",
                            "--seconds",
                            &RUN.as_secs_f64().to_string(),
                            "--workers",
                            "4",
                        ],
                    )
                })
            })
            .collect();
        // Keys become hot, one leaves and comes back: copies of writes cross every transition.
        let pause = |ms| thread::sleep(Duration::from_millis(ms));
        pause(300);
        hot_cmd("add", &hot.iter().collect::<Vec<_>>());
        pause(2500);
        hot_cmd("del", &[&hot[0]]);
        pause(1000);
        hot_cmd("add", &[&hot[0]]);
        for r in recorders {
            let summary = r.join().unwrap();
            assert!(
                summary["operations"].as_u64().unwrap() >= 500,
                "a recorder barely ran: {summary}"
            );
        }
    });
    // Every copy still on its way lands, then every key is read back.
    thread::sleep(LATEST_COPY + Duration::from_millis(500));
    let read_back = file("read-back");
    lab.read_back(&prefix, &read_back, HOT, COLD);
    files.push(read_back);

    let reports: Vec<_> = injectors.into_iter().map(|i| i.stop().unwrap()).collect();
    let duplicated: u64 = reports
        .iter()
        .map(|r| r.to_switch.duplicated + r.from_switch.duplicated)
        .sum();
    let relayed: u64 = reports
        .iter()
        .map(|r| r.to_switch.relayed + r.from_switch.relayed)
        .sum();
    assert!(duplicated >= 300, "few duplicates: {reports:?}");
    assert_eq!(relayed, duplicated, "every copy was delivered: {reports:?}");

    let report = assert_linearizable(&files);
    assert_eq!(report["keys"], (HOT + COLD) as u64, "{report}");
    let status = json(&run_ok(&["switch", "status", "--lab", &lab.name, "--json"]));
    let counter = |name: &str| status["counters"][name].as_u64().unwrap();
    // Copies of writes reached the switch and got their writes' versions again.
    assert!(counter("stamps_reused") > 0, "{status}");
    assert!(counter("hot_writes") > 0, "{status}");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `pegasus lab fault` from the command line: while it drops everything a client sends, the
/// client's write fails; its report says so; once it ends, writes go through again.
#[test]
fn lab_fault_on_the_command_line_does_what_it_reports() {
    let lab = Lab::up("e2efcli", &["--servers", "2", "--clients", "1"]);
    let fault = pegasus()
        .args([
            "lab",
            "fault",
            "--name",
            &lab.name,
            "--link",
            "c0",
            "--direction",
            "to-switch",
            "--drop",
            "1",
            "--seconds",
            "3",
            "--seed",
            "5",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(800));
    let put = |value: &str| {
        pegasus()
            .args(["lab", "run", "--name", &lab.name, "--"])
            .arg(env!("CARGO_BIN_EXE_pegasus"))
            .args(["kv", "put", "--attempts", "3", "k", value])
            .output()
            .unwrap()
    };
    let during = put("during");
    assert!(
        !during.status.success(),
        "a write crossed a link that drops all"
    );
    let out = fault.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["seed"], 5);
    let (port, link) = (&report["links"][0][0], &report["links"][0][1]);
    assert_eq!(port, "c0");
    assert!(
        link["to_switch"]["dropped"].as_u64().unwrap() >= 3,
        "{report}"
    );
    assert_eq!(link["to_switch"]["dropped"], link["to_switch"]["packets"]);
    assert_eq!(link["from_switch"]["dropped"], 0, "{report}");
    let after = put("after");
    assert!(after.status.success(), "{after:?}");
    // A host the lab does not have is an error that says so.
    let out = pegasus()
        .args([
            "lab",
            "fault",
            "--name",
            &lab.name,
            "--link",
            "s7",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no link s7"),
        "{out:?}"
    );
    // A single rack has no link between racks.
    let out = pegasus()
        .args([
            "lab",
            "fault",
            "--name",
            &lab.name,
            "--link",
            "l0",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no link l0"),
        "{out:?}"
    );
}

/// `pegasus experiment faults`: a short campaign passes, writes its table, and a run replays
/// from its seed.
#[test]
fn a_short_fault_campaign_passes_and_replays() {
    assert!(pegasus_control::lab::netns::is_root(), "needs root");
    let out_dir = std::env::temp_dir().join(format!("pegasus-campaign-{}", std::process::id()));
    let out_text = out_dir.display().to_string();
    let common = [
        "--seconds",
        "2",
        "--max-dup-delay-ms",
        "1500",
        "--servers",
        "3",
        "--out",
        &out_text,
    ];
    let mut args = vec!["experiment", "faults", "--runs", "2", "--seed", "7"];
    args.extend(common);
    let text = run_ok(&args);
    assert!(
        text.contains("**passed** (0 violations, 0 unknown) | **2**"),
        "{text}"
    );
    let csv = std::fs::read_to_string(out_dir.join("runs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let seed = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_owned();
    let mut args = vec!["experiment", "faults", "--replay", &seed];
    args.extend(common);
    let replayed = run_ok(&args);
    assert!(
        replayed.contains("**passed** (0 violations, 0 unknown) | **1**"),
        "{replayed}"
    );
    let again = std::fs::read_to_string(out_dir.join("runs.csv")).unwrap();
    // The replay draws the same faults.
    let faults = |csv: &str| {
        csv.lines()
            .nth(1)
            .unwrap()
            .rsplit(',')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(faults(&again), faults(&csv));
    let _ = std::fs::remove_dir_all(&out_dir);
}
