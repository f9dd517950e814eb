//! Helpers for the end-to-end tests: run the real `pegasus` binary, and a lab that is torn
//! down when the test ends, also when it fails.

#![allow(dead_code)] // each test file uses its own subset

use serde_json::Value;
use std::process::{Command, Output};

/// `text` as JSON, panicking with the text if it is not.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Checks the recorded histories in `files` together (`pegasus history check --json`),
/// panicking with the checker's report unless they are linearizable; returns the report.
pub fn assert_linearizable(files: &[String]) -> Value {
    let mut args = vec!["history", "check", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = pegasus().args(&args).output().expect("running pegasus");
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "not linearizable: {}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    report
}

/// The `pegasus` binary under test.
pub fn pegasus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pegasus"))
}

/// Runs `pegasus ARGS`, panicking with its output if it fails.
pub fn run_ok(args: &[&str]) -> String {
    let out = pegasus().args(args).output().expect("running pegasus");
    assert_success(&out, args);
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "`pegasus {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A lab rack with a unique name, brought down on drop.
pub struct Lab {
    pub name: String,
}

impl Lab {
    /// `pegasus lab up --name UNIQUE EXTRA...`.
    pub fn up(tag: &str, extra: &[&str]) -> Lab {
        assert!(
            pegasus_control::lab::netns::is_root(),
            "the end-to-end tests need root (network namespaces, XDP)"
        );
        let name = format!("{tag}-{}", std::process::id());
        let lab = Lab { name };
        let mut args = vec!["lab", "up", "--name", &lab.name];
        args.extend_from_slice(extra);
        run_ok(&args);
        lab
    }

    /// `pegasus history record --out FILE --prefix PREFIX --json OPTIONS...` in client
    /// `client`'s namespace; returns the recorder's summary.
    pub fn record_history(&self, client: u8, file: &str, prefix: &str, options: &[&str]) -> Value {
        let mut args = vec![
            "history", "record", "--out", file, "--prefix", prefix, "--json",
        ];
        args.extend_from_slice(options);
        json(&self.run_pegasus(client, &args))
    }

    /// Reads every key of a recorded history (`hot` hot and `cold` cold keys named after
    /// `prefix`) once from client 0, into `file`; each read must return the last acknowledged
    /// write (or one whose outcome was unknown). Returns the recorder's summary, whose reads
    /// are checked to cover every key.
    pub fn read_back(&self, prefix: &str, file: &str, hot: usize, cold: usize) -> Value {
        let summary = self.record_history(
            0,
            file,
            prefix,
            &[
                "--hot",
                &hot.to_string(),
                "--cold",
                &cold.to_string(),
                "--read-back",
            ],
        );
        assert_eq!(summary["reads"], (hot + cold) as u64, "{summary}");
        summary
    }

    /// `pegasus lab run --name NAME --client C -- pegasus ARGS...`, returning stdout.
    pub fn run_pegasus(&self, client: u8, args: &[&str]) -> String {
        let exe = env!("CARGO_BIN_EXE_pegasus");
        let client = client.to_string();
        let mut full = vec![
            "lab", "run", "--name", &self.name, "--client", &client, "--", exe,
        ];
        full.extend_from_slice(args);
        run_ok(&full)
    }

    /// The switch's hot keys, as `pegasus switch hot list --json` gives them.
    pub fn hot_list(&self) -> Vec<Value> {
        let listed = json(&run_ok(&[
            "switch", "hot", "list", "--lab", &self.name, "--json",
        ]));
        listed.as_array().expect("a JSON array of hot keys").clone()
    }

    /// Namespaces of this lab still present on the host.
    pub fn namespaces_left(&self) -> Vec<String> {
        let prefix = format!("pg-{}-", self.name);
        pegasus_control::lab::netns::list()
            .unwrap()
            .into_iter()
            .filter(|ns| ns.starts_with(&prefix))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = pegasus()
            .args(["lab", "down", "--name", &self.name])
            .output();
    }
}
