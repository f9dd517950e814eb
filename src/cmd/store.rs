//! `pegasus store`: one storage server.

use anyhow::Result;
use clap::Args;
use pegasus_client::{
    Cluster,
    membership::{ChainConfig, Etcd, StoreReport},
};
use pegasus_store::{
    Server, StoreConfig,
    chain::ChainLinks,
    server::{QUEUE_MAX_DEFAULT, Reconfigurer},
};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};
use tokio::sync::watch;

#[derive(Args)]
pub struct StoreArgs {
    /// Address and UDP port to listen on.
    #[arg(long, default_value = "0.0.0.0:7400")]
    listen: SocketAddr,
    /// This server's id in the rack (0-63); carried in every reply.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..pegasus_common::directory::SERVERS_MAX as i64))]
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
    /// addresses), and whom to accept copies (the servers) and pushes (its `controllers`)
    /// from. Without it, copies the switch asks for are counted and not sent, and copies and
    /// pushes are refused.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// In a chain's cluster file: which rack this store belongs to (0 = the head). Its
    /// neighbours in the file are where it forwards writes and sends acknowledgements, and the
    /// only senders it takes them from (docs/chain.md).
    #[arg(long, default_value_t = 0, requires = "cluster")]
    rack: usize,
    /// Most memory for keys and values, in bytes, with an optional K, M or G suffix (powers
    /// of 1024; each key counts 64 bytes beyond its key and value). Writes that would grow
    /// the store past it are refused with status Full.
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    memory_limit: usize,
    /// Refuse writes that the switch did not stamp with a version (status Unstamped): for a
    /// store behind a Pegasus switch, where every honest write is stamped.
    #[arg(long)]
    require_stamped: bool,
    /// A chain whose membership lives in etcd (its client URL, e.g. http://127.0.0.1:2379):
    /// the store follows the chain's configuration there (its neighbours change when a rack
    /// fails or joins) and keeps the last one while etcd is unreachable. Its rack is the
    /// cluster file's rack --rack (docs/chain.md, "Membership").
    #[arg(long, requires = "cluster")]
    etcd: Option<String>,
    /// The chain's name in etcd.
    #[arg(long, default_value = DEFAULT_CHAIN)]
    chain: String,
}

/// The chain's name in etcd when none is given.
pub const DEFAULT_CHAIN: &str = "pegasus";

pub fn run(args: StoreArgs) -> Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let file = match &args.cluster {
        Some(path) => Cluster::load(path)?,
        None => Cluster::default(),
    };
    let server_id = args.server_id;
    let membership = args
        .etcd
        .clone()
        .map(|url| (url, args.chain.clone(), file.rack_id(args.rack)));
    let (cluster, chain) = if args.cluster.is_some() {
        let servers = |rack: usize| -> Result<Vec<(u8, SocketAddr)>> {
            Ok(file
                .rack(rack)?
                .servers
                .iter()
                .map(|s| (s.id, s.addr))
                .collect())
        };
        let chain = ChainLinks {
            previous: match args.rack {
                0 => Vec::new(),
                rack => servers(rack - 1)?,
            },
            next: match args.rack + 1 {
                next if next < file.rack_count() => servers(next)?,
                _ => Vec::new(),
            },
            // Following etcd, the store serves nothing until it has read its place there.
            removed: args.etcd.is_some(),
            ..ChainLinks::default()
        };
        (file.rack(args.rack)?, chain)
    } else {
        (file, ChainLinks::default())
    };
    let config = StoreConfig {
        peers: cluster.servers.iter().map(|s| (s.id, s.addr)).collect(),
        controllers: cluster.controllers,
        chain,
        memory_limit: args.memory_limit,
        require_stamped: args.require_stamped,
        listen: args.listen,
        server_id: args.server_id,
        threads,
        capacity_ops: args.capacity_ops,
        queue_max: args.queue_max,
    };
    let store = pegasus_bench::block_on(threads, async move {
        let server = Server::bind(config)?;
        if let Some((url, chain, rack)) = membership {
            tokio::spawn(follow_chain(
                url,
                chain,
                rack,
                server_id,
                server.reconfigurer(),
            ));
        }
        server
            .run(pegasus_control::service::daemon::shutdown_signal())
            .await
    })?;
    let stats = serde_json::to_string(&store.snapshot())?;
    tracing::info!(stats = %stats, "store stopped");
    Ok(ExitCode::SUCCESS)
}

/// How often a store of a chain publishes its [`StoreReport`] to etcd.
const REPORT_PERIOD: Duration = Duration::from_millis(500);

/// Keeps the store's place in its chain as etcd says, for as long as the store runs, and
/// publishes its report every [`REPORT_PERIOD`].
async fn follow_chain(
    url: String,
    chain: String,
    rack: u8,
    server_id: u8,
    reconfigurer: Reconfigurer,
) {
    let etcd = loop {
        match Etcd::connect(&url, &chain).await {
            Ok(etcd) => break etcd,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "etcd unreachable: serving the chain as the cluster file says");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let (sender, mut configs) = watch::channel(None);
    let (reachable, _) = watch::channel(false);
    tokio::spawn(etcd.clone().follow(sender, reachable));
    let mut report_tick = tokio::time::interval(REPORT_PERIOD);
    let (mut report_lease, mut config_epoch) = (None, 0);
    loop {
        tokio::select! {
            changed = configs.changed() => if changed.is_err() {
                return;
            },
            _ = report_tick.tick() => {
                let s = reconfigurer.snapshot();
                let report = StoreReport {
                    queued: s.chain_queued,
                    forwarded: s.chain_forwarded,
                    retransmitted: s.chain_retransmitted,
                    acks_received: s.chain_acks_received,
                    acks_sent: s.chain_acks_sent,
                    config_epoch,
                    copied_to: reconfigurer.copied_to(),
                };
                // Best effort: etcd may be away; the next tick tries again.
                report_lease = etcd
                    .report_store(rack, server_id, &report, report_lease, REPORT_PERIOD * 4)
                    .await
                    .ok();
                continue;
            }
        }
        let Some(versioned) = configs.borrow_and_update().clone() else {
            continue;
        };
        config_epoch = versioned.config.epoch;
        let Some(current) = reconfigurer.current() else {
            return;
        };
        let links = links_in(&versioned.config, rack, current);
        tracing::info!(
            epoch = versioned.config.epoch,
            racks = ?versioned.config.rack_ids(),
            removed = links.removed,
            joining = links.joining,
            head = links.previous.is_empty(),
            tail = links.next.is_empty(),
            "chain configuration in force"
        );
        let joining = versioned
            .config
            .joining_id()
            .filter(|_| versioned.config.tail() == Some(rack));
        reconfigurer.apply(links, joining).await;
    }
}

/// Rack `rack`'s links in `config`: its neighbours' servers, and the head's version epoch;
/// a joining rack takes writes from the tail; a rack no longer in the chain keeps its last
/// links, marked removed.
fn links_in(config: &ChainConfig, rack: u8, current: ChainLinks) -> ChainLinks {
    let servers = |r: Option<&pegasus_client::cluster::Rack>| {
        r.map_or(Vec::new(), |r| {
            r.servers.iter().map(|s| (s.id, s.addr)).collect::<Vec<_>>()
        })
    };
    let joining = config.joining_id() == Some(rack);
    if config.position(rack).is_none() && !joining {
        return ChainLinks {
            removed: true,
            ..current
        };
    }
    ChainLinks {
        previous: servers(config.predecessor(rack)),
        next: servers(config.successor(rack)),
        version_epoch: config.version_epoch,
        removed: false,
        joining,
    }
}

/// A byte count: digits with an optional K, M or G suffix (powers of 1024).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let (digits, unit) = match text.trim().to_ascii_uppercase() {
        t if t.ends_with('K') => (t[..t.len() - 1].to_owned(), 1usize << 10),
        t if t.ends_with('M') => (t[..t.len() - 1].to_owned(), 1 << 20),
        t if t.ends_with('G') => (t[..t.len() - 1].to_owned(), 1 << 30),
        t => (t, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive size (e.g. 512M, 2G, 1000000)"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_with_their_units() {
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "0", "G", "-1M", "1.5G", "99999999999999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
