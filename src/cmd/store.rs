//! `pegasus store`: one storage server.

use anyhow::Result;
use clap::Args;
use pegasus_client::Cluster;
use pegasus_store::{StoreConfig, server::QUEUE_MAX_DEFAULT};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

#[derive(Args)]
pub struct StoreArgs {
    /// Address and UDP port to listen on.
    #[arg(long, default_value = "0.0.0.0:7400")]
    listen: SocketAddr,
    /// This server's id in the rack (0-31); carried in every reply.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..32))]
    server_id: u8,
    /// Worker threads (and SO_REUSEPORT sockets). Default: every core.
    #[arg(long)]
    threads: Option<usize>,
    /// Emulate a server that serves at most this many requests per second (a fixed service
    /// rate); requests beyond the queue are dropped. Default: as fast as the machine allows.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    capacity_ops: Option<u32>,
    /// With --capacity-ops: how many requests may wait before new ones are dropped.
    #[arg(long, default_value_t = QUEUE_MAX_DEFAULT)]
    queue_max: usize,
    /// The rack's cluster file: where to send copies of hot keys' writes (server ids and
    /// addresses). Without it, copies the switch asks for are counted and not sent.
    #[arg(long)]
    cluster: Option<PathBuf>,
}

pub fn run(args: StoreArgs) -> Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let peers = match &args.cluster {
        Some(path) => Cluster::load(path)?
            .servers
            .iter()
            .map(|s| (s.id, s.addr))
            .collect(),
        None => Vec::new(),
    };
    let config = StoreConfig {
        peers,
        listen: args.listen,
        server_id: args.server_id,
        threads,
        capacity_ops: args.capacity_ops,
        queue_max: args.queue_max,
    };
    let store = pegasus_bench::block_on(
        threads,
        pegasus_store::serve(config, pegasus_control::service::daemon::shutdown_signal()),
    )?;
    let stats = serde_json::to_string(&store.snapshot())?;
    tracing::info!(stats = %stats, "store stopped");
    Ok(ExitCode::SUCCESS)
}
