//! The subcommands, one file each.

pub mod bench;
pub mod experiment;
pub mod history;
pub mod kv;
pub mod lab;
pub mod store;
pub mod switch;

use anyhow::Result;
use pegasus_client::{ClientOptions, Cluster};
use std::{future::Future, path::PathBuf, time::Duration};

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
        }
    }
}

/// Logs go to stderr as structured `tracing` lines; `RUST_LOG` overrides `default_level`.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs `f` on a multi-threaded tokio runtime with `threads` workers.
pub fn block_on<T>(threads: usize, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?
        .block_on(f)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
