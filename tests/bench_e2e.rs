//! End to end: `pegasus bench` against a real store on loopback. Checks the load phase, the
//! JSON summary's schema and its numbers' consistency, the open loop's pacing, the YCSB-like
//! lines and the refusal of bad flags. Needs no root.

mod support;

use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    net::UdpSocket,
    process::{Child, Stdio},
    time::{Duration, Instant},
};
use support::{json, pegasus, run_ok};

/// A store on a free loopback port and its cluster file; killed on drop.
struct LoopbackStore {
    child: Child,
    cluster: String,
    _dir: std::path::PathBuf,
}

impl LoopbackStore {
    fn start(tag: &str) -> LoopbackStore {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("pegasus-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = dir.join("cluster.toml");
        std::fs::write(
            &cluster,
            format!("[[servers]]\nid = 0\naddr = \"127.0.0.1:{port}\"\n"),
        )
        .unwrap();
        let mut child = pegasus()
            .args(["store", "--server-id", "0", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let line = lines.next().expect("the store exited").unwrap();
            if line.contains("store listening") {
                break;
            }
            assert!(Instant::now() < deadline, "the store did not start");
        }
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        LoopbackStore {
            child,
            cluster: cluster.display().to_string(),
            _dir: dir,
        }
    }

    /// `pegasus bench --cluster FILE --keys 200 ARGS...`, stdout.
    fn bench(&self, args: &[&str]) -> String {
        let mut full = vec!["bench", "--cluster", &self.cluster, "--keys", "200"];
        full.extend_from_slice(args);
        run_ok(&full)
    }
}

impl Drop for LoopbackStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Latency fields are present and ordered.
fn assert_latency(l: &Value) {
    let [min, p50, p90, p99, p999, max] =
        ["min", "p50", "p90", "p99", "p999", "max"].map(|k| u(&l[k]));
    assert!(
        min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{l}"
    );
    assert!(
        f(&l["mean"]) >= min as f64 && f(&l["mean"]) <= max as f64,
        "{l}"
    );
}

#[test]
fn the_bench_loads_runs_and_reports_in_its_schema() {
    let store = LoopbackStore::start("bench");
    let dir = std::env::temp_dir().join(format!("pegasus-bench-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load_json = dir.join("load.json").display().to_string();

    // Load: every key written once, the JSON in a file, the YCSB lines on stdout.
    let lines = store.bench(&["--json", &load_json, "load", "--concurrency", "8"]);
    assert!(lines.contains("[UPDATE], Return=OK, 200\n"), "{lines}");
    let load = json(&std::fs::read_to_string(&load_json).unwrap());
    assert_eq!(load["setup"]["phase"], "load");
    assert_eq!(u(&load["update"]["operations"]), 200);
    assert_eq!((u(&load["read"]["operations"]), u(&load["errors"])), (0, 0));

    // Closed loop, workload a: every field, consistent with each other.
    let run = json(&store.bench(&[
        "--json",
        "-",
        "run",
        "--workload",
        "a",
        "--seconds",
        "1",
        "--seed",
        "5",
    ]));
    let setup = &run["setup"];
    assert_eq!(
        (&setup["phase"], &setup["pace"], &setup["distribution"]),
        (&"run".into(), &"closed".into(), &"zipf".into())
    );
    assert_eq!((f(&setup["read_ratio"]), f(&setup["theta"])), (0.5, 0.99));
    assert_eq!((u(&setup["concurrency"]), u(&setup["seed"])), (32, 5));
    assert_eq!(u(&setup["clients"]), 8, "the default number of clients");
    let (reads, updates) = (
        u(&run["read"]["operations"]),
        u(&run["update"]["operations"]),
    );
    assert_eq!(u(&run["operations"]), reads + updates);
    assert!(reads > 100 && updates > 100, "{run}");
    let read_share = reads as f64 / (reads + updates) as f64;
    assert!((0.45..0.55).contains(&read_share), "{read_share}");
    assert!(
        (f(&run["ops_per_second"]) - (reads + updates) as f64 / f(&run["seconds"])).abs() < 1.0
    );
    for l in [
        &run["latency_us"],
        &run["read"]["latency_us"],
        &run["update"]["latency_us"],
    ] {
        assert_latency(l);
    }
    assert_eq!(u(&run["per_server"]["0"]), reads + updates);
    assert_eq!(
        u(&run["switch_answered"]),
        0,
        "no switch in front of this store"
    );
    assert_eq!(f(&run["server_share"]["0"]), 1.0);
    assert_eq!(f(&run["max_over_mean"]), 1.0);
    assert_eq!(u(&run["errors"]), 0);
    assert!(run.get("timeline").is_none(), "only with --timeline-ms");

    // Open loop: about the rate asked for, whatever the store could do.
    let open = json(&store.bench(&[
        "--json",
        "-",
        "run",
        "--rate",
        "400",
        "--seconds",
        "1",
        "--distribution",
        "hotspot",
    ]));
    assert_eq!(open["setup"]["pace"], "open");
    assert_eq!(f(&open["setup"]["target_rate"]), 400.0);
    assert_eq!(f(&open["setup"]["hotspot_share"]), 0.8);
    let sent = u(&open["operations"]) + u(&open["errors"]);
    assert!((380..=400).contains(&sent), "{open}");

    // The YCSB-like lines, and a timeline when asked.
    let lines = store.bench(&["run", "--seconds", "0.5", "--timeline-ms", "100"]);
    for expected in [
        "[OVERALL], RunTime(ms), 500\n",
        "[OVERALL], Throughput(ops/sec), ",
        "[READ], 99thPercentileLatency(us), ",
        "[SERVER 0], Share(%), 100.00\n",
    ] {
        assert!(lines.contains(expected), "{expected:?} missing:\n{lines}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let refused = |args: &[&str], reason: &str| {
        let out = pegasus()
            .args(["bench", "--cluster", "/nonexistent.toml"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(reason), "{args:?}: {err}");
    };
    refused(&["run", "--workload", "d"], "invalid value 'd'");
    refused(
        &["run", "--rate", "10", "--concurrency", "4"],
        "cannot be used",
    );
    refused(&["run", "--read-ratio", "2"], "--read-ratio is a fraction");
    refused(
        &["run", "--theta", "0"],
        "Zipf exponent must be finite and positive",
    );
    refused(&["--key-size", "5", "run"], "cannot name 100000 keys");
    refused(&["run", "--rate", "0"], "--rate must be in");
    refused(&["run", "--clients", "0"], "invalid value '0'");
    // Past the flags, the cluster file is the first thing needed.
    refused(&["run"], "/nonexistent.toml");
}
