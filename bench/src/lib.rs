//! Driving a rack and measuring it: everything `pegasus bench`, `pegasus history` and
//! `pegasus experiment` do, as a library that tests and other tools can call.
//!
//! - [`loadgen`]: the YCSB-style load generator (`pegasus bench`): a load phase, then
//!   workloads over uniform, Zipf or hotspot keys, closed or open loop, with HdrHistogram
//!   latencies; its report ([`loadgen::Summary`]) is the typed contract the experiments read.
//! - [`history`]: records concurrent client histories and checks them for linearizability
//!   (`pegasus history`).
//! - [`experiment`]: the skew experiment (`pegasus experiment skew`): lab racks per system,
//!   throughput under a p99 bound, CSV, Markdown and PNG plots.
//!
//! The command-line types live next to the code they configure (as the switch daemon's
//! `DaemonConfig` does), so the binary only dispatches.

pub mod experiment;
pub mod history;
pub mod loadgen;

use anyhow::Result;
use pegasus_client::{ClientOptions, Cluster, ReadFrom};
use std::{path::PathBuf, time::Duration};

/// How a command reaches a rack: the cluster file and the client's timeouts (every command
/// that runs a client takes these).
#[derive(clap::Args)]
pub struct ClientArgs {
    /// The cluster file (default: the file named by PEGASUS_CLUSTER).
    #[arg(long, global = true)]
    pub cluster: Option<PathBuf>,
    /// How long to wait for a reply before retrying, in milliseconds.
    #[arg(long, global = true, default_value_t = 200)]
    pub timeout_ms: u64,
    /// How many times a request is sent before giving up (retries reuse the request id; the
    /// last must leave within the switch's 2 s retry window).
    #[arg(long, global = true, default_value_t = 5)]
    pub attempts: u32,
    /// In a chain of racks, where reads go: `tail` (it holds every acknowledged write) or
    /// `any` rack at random (a rack answers with a version it knows committed, else the read
    /// goes on to the tail; docs/chain.md).
    #[arg(long, global = true, default_value = "tail")]
    pub read_from: ReadFrom,
}

impl ClientArgs {
    /// The rack's cluster file.
    pub fn cluster(&self) -> Result<Cluster> {
        Cluster::locate(self.cluster.as_deref())
    }

    /// The client's options (checked by `Client::connect`).
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_millis(self.timeout_ms),
            attempts: self.attempts,
            client_id: None,
            read_from: self.read_from,
        }
    }
}

/// Runs `f` on a multi-threaded tokio runtime with `threads` workers.
pub use pegasus_control::service::daemon::run_on_runtime as block_on;
