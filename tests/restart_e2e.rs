//! End to end: the switch crashes mid-workload and is started again. Clients record histories
//! while the controller keeps hot keys replicated; the switch is killed (SIGKILL, its XDP
//! program detached, the rack forwarding nothing) while they run, and restarted from its state
//! file once they have stopped. Every key is then read back at once (before any new write could
//! hide a stale home), a second workload runs on the restarted switch, and every key is read
//! back again. The whole history must be linearizable: no acknowledged write lost, no stale
//! read served. Needs root, as CI runs.

mod support;

use std::{
    thread,
    time::{Duration, Instant},
};
use support::{Lab, assert_linearizable, json, run_ok};

const CLIENTS: u8 = 2;
const HOT: usize = 8;
const COLD: usize = 100;
/// How long the workload before the crash runs; the crash comes this long after the hot keys
/// are hot.
const FIRST_RUN: Duration = Duration::from_secs(4);
const HOT_BEFORE_CRASH: Duration = Duration::from_secs(1);

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
            // Half the operations are writes, which are then not copied: at the crash the
            // newest version of most hot keys is away from home, and without recovery a
            // read-back would see home's stale one.
            &HOT.to_string(),
            // Queues at the servers: steered writes may still wait in them when the switch dies.
            "--capacity-ops",
            "2000",
        ],
    );
    let scratch = std::env::temp_dir().join(format!("pegasus-e2erst-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let prefix = format!("rst{}", std::process::id());
    let file = |name: &str| scratch.join(format!("{name}.jsonl")).display().to_string();
    let epoch_before = switch_epoch(&lab);

    let started = Instant::now();
    let (mut files, restart) = thread::scope(|s| {
        let run = s.spawn(|| workload(&lab, &prefix, "before", FIRST_RUN, &file));
        // Crash the switch once the controller has made the keys hot (their newest versions
        // are then spread over their replicas), and keep it down until the clients stopped,
        // so that nothing is written between the restart and the read-back.
        wait_for_hot_keys(&lab, HOT, FIRST_RUN / 2);
        thread::sleep(HOT_BEFORE_CRASH);
        let down = FIRST_RUN.saturating_sub(started.elapsed()) + Duration::from_millis(500);
        let restart = json(&run_ok(&[
            "lab",
            "restart-switch",
            "--name",
            &lab.name,
            "--down-ms",
            &down.as_millis().to_string(),
            "--json",
        ]));
        (run.join().unwrap(), restart)
    });
    assert!(
        restart["down_ms"].as_u64().unwrap() >= 500,
        "down at least until the clients stopped: {restart}"
    );
    assert!(
        switch_epoch(&lab) > epoch_before,
        "the restarted switch starts a new epoch"
    );
    let log = std::fs::read_to_string(pegasus_control::lab::lab_dir(&lab.name).join("switch.log"))
        .unwrap();
    // At least the hot keys (a cold key may have looked hot for a while, and been added).
    assert!(
        log.matches(" recovered ").count() >= HOT,
        "the restarted switch brought every hot key home:\n{log}"
    );

    files.push(read_back(&lab, &prefix, &file("read-back-at-restart")));
    files.extend(workload(
        &lab,
        &prefix,
        "after",
        Duration::from_secs(2),
        &file,
    ));
    files.push(read_back(&lab, &prefix, &file("read-back-at-end")));
    let report = assert_linearizable(&files);
    assert_eq!(report["keys"], (HOT + COLD) as u64, "{report}");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Every client records reads and writes (60% of them on the hot keys) for `length`; returns
/// their history files.
fn workload(
    lab: &Lab,
    prefix: &str,
    tag: &str,
    length: Duration,
    file: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let files: Vec<String> = (0..CLIENTS)
        .map(|j| file(&format!("{tag}-client{j}")))
        .collect();
    thread::scope(|s| {
        let recorders: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(j, file)| {
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
                            "--seconds",
                            &length.as_secs_f64().to_string(),
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
                // Operations wait for their timeouts while the switch is down.
                summary["operations"].as_u64().unwrap() >= 200,
                "a recorder barely ran: {summary}"
            );
        }
    });
    files
}

/// Reads every key once from client 0; each read must return the last acknowledged write (or
/// one whose outcome was unknown). Returns the history file.
fn read_back(lab: &Lab, prefix: &str, file: &str) -> String {
    let summary = lab.read_back(prefix, file, HOT, COLD);
    assert_eq!(summary["unanswered"], 0, "{summary}");
    file.to_owned()
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
        let hot = lab.hot_list().len();
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
