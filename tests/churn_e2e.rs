//! End to end: hot-key detection does not churn. On a stationary Zipf 1.2 workload, after
//! its first seconds the directory stays as it is (at most one change in 10 s), at a low and
//! at a high request rate; and a uniform workload installs no key at all. Needs root, as CI
//! runs.
//!
//! Newcomers must lead the keys outside the top by a quarter and by 3 standard deviations of
//! sampling noise, one more for every second they have waited in the top unadded
//! (`hotkeys::decide`, `Waiting`); hot keys leave only once far from the top. Before the
//! statistical test, keys near the edge crossed a fixed margin on noise now and then (2 late
//! adds at 2,000/s in a CI run, so these tests were not gating CI); since, 0 changes in every
//! one of 7 runs of both by hand.

mod support;

use std::{sync::Mutex, thread, time::Duration};
use support::{Lab, json, run_ok};

const KEYS: &str = "10000";
/// Seconds the detection has to find the hot set before it must hold still.
const SETTLE_SECONDS: u64 = 5;
/// One rack at a time: the rates are the point, and the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Adds and evictions the controller has made so far.
fn adds_and_evictions(lab: &Lab) -> (u64, u64) {
    let status = json(&run_ok(&["switch", "status", "--lab", &lab.name, "--json"]));
    let detection = &status["detection"];
    (
        detection["adds"].as_u64().unwrap(),
        detection["evicts"].as_u64().unwrap(),
    )
}

/// Adds plus evictions the controller has made so far.
fn changes(lab: &Lab) -> u64 {
    let (adds, evictions) = adds_and_evictions(lab);
    adds + evictions
}

/// Runs `seconds` of an open-loop workload at `rate` from client 0 while `during` looks on.
fn while_running<T>(
    lab: &Lab,
    rate: u32,
    seconds: u32,
    extra: &[&str],
    during: impl FnOnce() -> T,
) -> (String, T) {
    let (rate, seconds) = (rate.to_string(), seconds.to_string());
    thread::scope(|s| {
        let bench = s.spawn(|| {
            let mut args = vec![
                "bench",
                "run",
                "--keys",
                KEYS,
                "--workload",
                "c",
                "--rate",
                &rate,
                "--seconds",
                &seconds,
                "--json",
                "-",
            ];
            args.extend_from_slice(extra);
            lab.run_pegasus(0, &args)
        });
        let seen = during();
        (bench.join().unwrap(), seen)
    })
}

fn no_churn_at(tag: &str, rate: u32) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up(tag, &["--servers", "6", "--clients", "1"]);
    lab.run_pegasus(0, &["bench", "load", "--keys", KEYS, "--concurrency", "32"]);
    let zipf = ["--distribution", "zipf", "--theta", "1.2"];
    let (summary, (settled, after)) =
        while_running(&lab, rate, SETTLE_SECONDS as u32 + 11, &zipf, || {
            // The first seconds find the hot set; from then on it must hold still.
            thread::sleep(Duration::from_secs(SETTLE_SECONDS));
            let settled = adds_and_evictions(&lab);
            thread::sleep(Duration::from_secs(10));
            (settled, adds_and_evictions(&lab))
        });
    eprintln!("at {rate}/s: (adds, evictions) {settled:?} when settled, {after:?} 10 s later");
    let (settled, after) = (settled.0 + settled.1, after.0 + after.1);
    let summary = json(&summary);
    assert!(
        summary["ops_per_second"].as_f64().unwrap() > 0.8 * f64::from(rate),
        "the rack did not keep up with {rate}/s: {summary}"
    );
    assert!(settled > 0, "no hot key was found at {rate}/s");
    assert!(
        after - settled <= 1,
        "{} directory changes in 10 s of a stationary workload at {rate}/s",
        after - settled
    );
}

#[test]
fn a_stationary_workload_keeps_its_hot_keys_at_a_low_rate() {
    no_churn_at("e2echl", 2_000);
}

#[test]
fn a_stationary_workload_keeps_its_hot_keys_at_a_high_rate() {
    no_churn_at("e2echh", 10_000);
}

#[test]
fn a_uniform_workload_installs_no_key() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("e2echu", &["--servers", "6", "--clients", "1"]);
    lab.run_pegasus(0, &["bench", "load", "--keys", KEYS, "--concurrency", "32"]);
    let (summary, ()) = while_running(&lab, 10_000, 6, &["--distribution", "uniform"], || ());
    assert!(json(&summary)["operations"].as_u64().unwrap() > 10_000);
    assert_eq!(changes(&lab), 0, "a uniform workload installed keys");
    assert!(lab.hot_list().is_empty(), "{:?}", lab.hot_list());
}
