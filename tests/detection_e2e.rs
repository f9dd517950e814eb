//! End to end: the controller finds hot keys by itself. Clients record histories while the
//! hot set moves from one group of keys to another and then both are read back; the switch's
//! controller (sampling, top-k, hysteresis) must follow the hot set, evicting the keys that
//! cooled, and the whole history must stay linearizable. Needs root, as CI runs.

mod support;

use std::{collections::BTreeSet, thread};
use support::{Lab, assert_linearizable, json, run_ok};

const CLIENTS: u8 = 4;
const HOT: u32 = 4;

#[test]
fn the_controller_follows_a_moving_hot_set() {
    let lab = Lab::up(
        "e2edet",
        &[
            "--servers",
            "6",
            "--clients",
            &CLIENTS.to_string(),
            "--hot-keys",
            &HOT.to_string(),
        ],
    );
    let scratch = tempdir("e2edet");
    let prefix = format!("det{}", std::process::id());
    let mut files = Vec::new();
    // (hot keys from, how many, share of operations on them, seconds)
    let phases = [
        (0u32, HOT, "0.6", "4"),
        (HOT, HOT, "0.6", "4"),
        (0, 2 * HOT, "0.3", "2"),
    ];
    let mut hot_after = Vec::new();
    for (phase, &(start, count, share, seconds)) in phases.iter().enumerate() {
        let phase_files: Vec<String> = (0..CLIENTS)
            .map(|j| format!("{scratch}/client{j}-phase{phase}.jsonl"))
            .collect();
        thread::scope(|s| {
            let recorders: Vec<_> = (0..CLIENTS)
                .map(|j| {
                    let (lab, file, prefix) = (&lab, &phase_files[j as usize], &prefix);
                    let (start, count) = (start.to_string(), count.to_string());
                    s.spawn(move || {
                        lab.record_history(
                            j,
                            file,
                            prefix,
                            &[
                                "--hot",
                                &count,
                                "--hot-start",
                                &start,
                                "--hot-share",
                                share,
                                "--cold",
                                "100",
                                "--seconds",
                                seconds,
                                "--workers",
                                "4",
                            ],
                        )
                    })
                })
                .collect();
            for r in recorders {
                let summary = r.join().unwrap();
                assert!(
                    summary["operations"].as_u64().unwrap() >= 500,
                    "a recorder barely ran: {summary}"
                );
            }
        });
        files.extend(phase_files);
        let keys: BTreeSet<String> = lab
            .hot_list()
            .iter()
            .map(|k| k["key"].as_str().unwrap().to_owned())
            .collect();
        hot_after.push(keys);
    }
    let group = |from: u32| -> BTreeSet<String> {
        (from..from + HOT)
            .map(|i| format!("{prefix}-hot-{i}"))
            .collect()
    };
    assert_eq!(hot_after[0], group(0), "the first hot set was found");
    assert_eq!(
        hot_after[1],
        group(HOT),
        "the controller followed the hot set and evicted the keys that cooled"
    );

    // Every operation of the three phases, checked together: the keys that were evicted were
    // read and written again in the last phase.
    let report = assert_linearizable(&files);
    assert_eq!(report["keys"], 2 * HOT as u64 + 100, "{report}");
    let status = json(&run_ok(&["switch", "status", "--lab", &lab.name, "--json"]));
    assert!(
        status["counters"]["samples"].as_u64().unwrap() > 1000,
        "{status}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A scratch directory for this run's histories.
fn tempdir(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("pegasus-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

/// Copies follow the mix: while the hot keys are mostly written, their writes are not copied
/// (each replica set is the last writer); once they are only read, the controller restores
/// their copies, and reads spread again. The history of both phases is linearizable.
#[test]
fn copies_follow_the_read_write_mix() {
    const SERVERS: usize = 4;
    let lab = Lab::up(
        "e2emix",
        &[
            "--servers",
            &SERVERS.to_string(),
            "--clients",
            "1",
            "--hot-keys",
            &HOT.to_string(),
        ],
    );
    let scratch = tempdir("e2emix");
    let prefix = format!("mix{}", std::process::id());
    let mut files = Vec::new();
    let mut replicas_after = Vec::new();
    for (phase, write_share) in ["0.9", "0"].into_iter().enumerate() {
        let file = format!("{scratch}/phase{phase}.jsonl");
        let summary = lab.record_history(
            0,
            &file,
            &prefix,
            &[
                "--hot",
                &HOT.to_string(),
                "--hot-share",
                "0.8",
                "--cold",
                "50",
                "--write-share",
                write_share,
                "--seconds",
                "3",
                "--workers",
                "4",
            ],
        );
        assert!(summary["operations"].as_u64().unwrap() >= 500, "{summary}");
        files.push(file);
        let listed = lab.hot_list();
        let hot: Vec<usize> = listed
            .iter()
            .filter(|k| {
                k["key"]
                    .as_str()
                    .is_some_and(|name| name.starts_with(&format!("{prefix}-hot-")))
            })
            .map(|k| k["replicas"].as_array().unwrap().len())
            .collect();
        assert_eq!(hot.len(), HOT as usize, "the hot keys are hot: {listed:?}");
        replicas_after.push(hot);
    }
    // Writing: a write's replica set is its writer alone (a read of it may have joined).
    assert!(
        replicas_after[0].iter().sum::<usize>() <= 2 * HOT as usize,
        "write-heavy keys were copied: {replicas_after:?}"
    );
    // Reading: every hot key on all four servers (the default replication).
    assert_eq!(
        replicas_after[1],
        vec![SERVERS; HOT as usize],
        "{replicas_after:?}"
    );
    let status = json(&run_ok(&["switch", "status", "--lab", &lab.name, "--json"]));
    assert!(
        status["detection"]["restored"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_linearizable(&files);
    let _ = std::fs::remove_dir_all(&scratch);
}
