//! End to end: a read the in-switch cache answers reaches its client at once, with one request
//! outstanding. (Its answers once left by XDP_TX, which on veth waits for the port's next
//! packet: 97 and 331 ms in one run with a single request outstanding, hidden under load by
//! the packets behind it.) Needs root.

mod support;

use support::{Lab, json, run_ok};

#[test]
fn a_cache_hit_is_answered_within_milliseconds_with_one_request_outstanding() {
    let lab = Lab::up(
        "cachelat",
        &["--servers", "2", "--dataplane", "cache", "--hot-keys", "0"],
    );
    lab.run_pegasus(0, &["bench", "--keys", "1", "load"]);
    run_ok(&["switch", "hot", "add", "--lab", &lab.name, "user0"]);
    // The controller's read of home fills the entry.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let s = json(&lab.run_pegasus(
        0,
        &[
            "bench",
            "--keys",
            "1",
            "--json",
            "-",
            "run",
            "--concurrency",
            "1",
            "--seconds",
            "2",
            "--distribution",
            "uniform",
            "--timeout-ms",
            "400",
        ],
    ));
    let operations = s["operations"].as_u64().unwrap();
    let answered = s["switch_answered"].as_u64().unwrap();
    assert!(
        operations >= 200 && answered * 10 >= operations * 9,
        "the switch answered the reads: {s}"
    );
    let p99 = s["latency_us"]["p99"].as_u64().unwrap();
    assert!(
        p99 < 5_000,
        "one outstanding read at a time, p99 {p99} us: {s}"
    );
    assert_eq!(s["errors"], 0, "{s}");
}
