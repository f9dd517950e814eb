//! End to end: a lab rack of real namespaces, stores and the XDP switch, driven by the real
//! binary. Needs root, as CI runs.

mod support;

use serde_json::Value;
use support::{Lab, json, run_ok};

#[test]
fn puts_and_gets_cross_the_xdp_switch_and_read_back_equal() {
    let lab = Lab::up("e2exdp", &["--servers", "4", "--clients", "2"]);
    // Two clients at once, 1,000 keys each: 2,000 puts and 2,000 gets of values of 1-1,000 bytes.
    let summaries: Vec<Value> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2u8)
            .map(|client| {
                let lab = &lab;
                s.spawn(move || {
                    lab.run_pegasus(
                        client,
                        &[
                            "kv",
                            "verify",
                            "--keys",
                            "1000",
                            "--value-min",
                            "1",
                            "--value-max",
                            "1000",
                            "--json",
                        ],
                    )
                })
            })
            .collect();
        runs.into_iter().map(|r| json(&r.join().unwrap())).collect()
    });
    for s in &summaries {
        assert_eq!(s["puts_ok"], 1000, "{s}");
        assert_eq!(s["gets_ok"], 1000, "{s}");
        assert_eq!(s["mismatches"], 0, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert_eq!(
            s["replies_by_server"].as_object().unwrap().len(),
            4,
            "every server served: {s}"
        );
    }

    // The switch counters prove that the packets crossed XDP: every request and every reply
    // was redirected by the program, and every put was stamped.
    let status = json(&run_ok(&["switch", "status", "--lab", &lab.name, "--json"]));
    let counter = |name: &str| status["counters"][name].as_u64().unwrap();
    assert!(counter("requests") >= 4000, "{status}");
    assert!(counter("replies") >= 4000, "{status}");
    assert!(counter("writes_stamped") >= 2000, "{status}");
    assert!(counter("verdict_redirect") >= 8000, "{status}");
    assert_eq!(counter("parse_failures"), 0, "{status}");
    assert!(status["version_counter"].as_u64().unwrap() >= 2000);

    run_ok(&["lab", "down", "--name", &lab.name]);
    assert_eq!(
        lab.namespaces_left(),
        Vec::<String>::new(),
        "lab down left namespaces behind"
    );
    assert!(
        !pegasus_control::lab::lab_dir(&lab.name).exists(),
        "lab down left its directory"
    );
}

#[test]
fn the_kernel_dataplane_baseline_works_too() {
    let lab = Lab::up("e2ekern", &["--servers", "2", "--dataplane", "kernel"]);
    let s = json(&lab.run_pegasus(0, &["kv", "verify", "--keys", "300", "--json"]));
    assert_eq!(
        (s["gets_ok"].as_u64(), s["errors"].as_u64()),
        (Some(300), Some(0)),
        "{s}"
    );
    // Without a switch, nothing stamps versions.
    let out = lab.run_pegasus(0, &["kv", "put", "k", "v"]);
    assert!(out.contains("version=0"), "{out}");
}

#[test]
fn kv_get_put_and_errors_from_the_command_line() {
    let lab = Lab::up("e2ekv", &["--servers", "2"]);
    let out = lab.run_pegasus(0, &["kv", "put", "greeting", "hello"]);
    assert!(out.starts_with("OK version="), "{out}");
    assert_eq!(lab.run_pegasus(0, &["kv", "get", "greeting"]), "hello\n");
    // A missing key: exit status 2 and a message on stderr.
    let exe = env!("CARGO_BIN_EXE_pegasus");
    let missing = support::pegasus()
        .args([
            "lab", "run", "--name", &lab.name, "--", exe, "kv", "get", "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    // A value too large for one datagram is refused by the client with a clear error.
    let big = "x".repeat(2000);
    let refused = support::pegasus()
        .args([
            "lab", "run", "--name", &lab.name, "--", exe, "kv", "put", "k", &big,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("too large"),
        "{refused:?}"
    );
    // Two labs with one name cannot coexist.
    let again = support::pegasus()
        .args(["lab", "up", "--name", &lab.name])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
