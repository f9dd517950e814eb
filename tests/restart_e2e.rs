//! End to end: the switch crashes mid-workload and is started again. Clients record histories
//! across the crash while the controller keeps hot keys replicated; the switch is killed
//! (SIGKILL, its XDP program detached, the rack forwarding nothing) and restarted from its
//! state file, then every key is read back. The whole history, read-back included, must be
//! linearizable: no acknowledged write lost, no stale read served. Needs root, as CI runs.

mod support;

use std::{thread, time::Duration, time::Instant};
use support::{Lab, assert_linearizable, json, run_ok};

const CLIENTS: u8 = 2;
const HOT: usize = 4;
const COLD: usize = 100;

#[test]
fn a_restarted_switch_loses_no_write_and_serves_no_stale_read() {
    let lab = Lab::up(
        "e2erst",
        &[
            "--servers",
            "4",
            "--clients",
            &CLIENTS.to_string(),
            "--hot-keys",
            &HOT.to_string(),
            // Queues at the servers: steered writes still wait in them when the switch dies.
            "--capacity-ops",
            "3000",
        ],
    );
    let scratch = std::env::temp_dir().join(format!("pegasus-e2erst-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let prefix = format!("rst{}", std::process::id());
    let mut files: Vec<String> = (0..CLIENTS)
        .map(|j| {
            scratch
                .join(format!("client{j}.jsonl"))
                .display()
                .to_string()
        })
        .collect();
    let epoch_before = switch_epoch(&lab);

    let restart = thread::scope(|s| {
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
                            &HOT.to_string(),
                            "--hot-share",
                            "0.6",
                            "--cold",
                            &COLD.to_string(),
                            "--seconds",
                            "7",
                            "--workers",
                            "4",
                        ],
                    )
                })
            })
            .collect();
        // Crash the switch once the controller has made the hot keys hot: their newest
        // versions are then spread over their replicas.
        wait_for_hot_keys(&lab, HOT, Duration::from_secs(4));
        let restart = json(&run_ok(&[
            "lab",
            "restart-switch",
            "--name",
            &lab.name,
            "--down-ms",
            "300",
            "--json",
        ]));
        for r in recorders {
            let summary = r.join().unwrap();
            assert!(
                summary["operations"].as_u64().unwrap() >= 1000,
                "a recorder barely ran: {summary}"
            );
        }
        restart
    });
    assert!(restart["down_ms"].as_u64().unwrap() >= 300, "{restart}");
    assert!(
        switch_epoch(&lab) > epoch_before,
        "the restarted switch starts a new epoch"
    );
    let log = std::fs::read_to_string(pegasus_control::lab::lab_dir(&lab.name).join("switch.log"))
        .unwrap();
    assert_eq!(
        log.matches(" recovered ").count(),
        HOT,
        "the restarted switch brought every hot key home:\n{log}"
    );

    // Every key read back after the run, checked with the run: each read must return the
    // last acknowledged write (or one whose outcome was unknown).
    let read_back = scratch.join("read-back.jsonl").display().to_string();
    let summary = lab.record_history(
        0,
        &read_back,
        &prefix,
        &[
            "--hot",
            &HOT.to_string(),
            "--cold",
            &COLD.to_string(),
            "--read-back",
        ],
    );
    assert_eq!(summary["reads"], (HOT + COLD) as u64, "{summary}");
    assert_eq!(summary["unanswered"], 0, "{summary}");
    files.push(read_back);
    let report = assert_linearizable(&files);
    assert_eq!(report["keys"], (HOT + COLD) as u64, "{report}");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The epoch the lab's switch stamps versions with.
fn switch_epoch(lab: &Lab) -> u64 {
    let status = json(&run_ok(&["switch", "status", "--lab", &lab.name, "--json"]));
    status["epoch"]
        .as_u64()
        .unwrap_or_else(|| panic!("no epoch in {status}"))
}

/// Waits until the switch's directory holds `count` keys.
fn wait_for_hot_keys(lab: &Lab, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let listed = json(&run_ok(&[
            "switch", "hot", "list", "--lab", &lab.name, "--json",
        ]));
        let hot = listed.as_array().unwrap().len();
        if hot >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {hot} hot keys after {limit:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
