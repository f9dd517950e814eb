//! The switch daemon's start-up order and run loop (`pegasus switch`).
//!
//! Start-up, in this order, each step before the next because the next relies on it:
//! 1. **state**: take a version epoch larger than any the state file saw (a restarted switch
//!    must never stamp versions below the stored ones) and read the keys that were hot;
//! 2. **load** the program with its configuration and server table;
//! 3. **fence** retried writes of the previous switch (their routes are unknown);
//! 4. **recover** the keys that were hot (their homes brought up to date) while nothing is
//!    forwarded;
//! 5. **attach** to the ports: from here on the switch forwards;
//! 6. **tasks**: the admin socket, the metrics endpoint, hot-key detection and the forwarding
//!    cache's renewal, until Ctrl-C/SIGTERM or the first task that fails; then detach.

use super::{admin, config::DaemonConfig, metrics};
use crate::{
    controller::{
        Controller, Detection,
        hotkeys::{ADD_SIGMAS_DEFAULT, HotSetRules, ONE_SAMPLE},
        state::StateFile,
    },
    switch::{Switch, SwitchSettings},
};
use anyhow::{Context, Result, bail, ensure};
use pegasus_client::Cluster;
use pegasus_common::{roles::PortRole, switch::FIB_GENERATION_PERIOD_MS};
use std::{future::Future, net::IpAddr, sync::Arc, time::Duration};

/// Fewest (decayed) samples a key needs before detection makes it hot: one or two samples
/// are noise.
const HOT_KEY_MIN_SAMPLES: u64 = 3;

/// Runs the switch daemon until Ctrl-C or SIGTERM (or a task fails), then detaches.
pub fn run(config: DaemonConfig) -> Result<()> {
    let cluster = match config.cluster_file() {
        Some(path) => Cluster::load(&path)?,
        None => Cluster::default(),
    };
    let servers = cluster.servers.len();
    let (hot_keys, directory_capacity) = (
        config.hot_keys_for(servers),
        config.directory_capacity_for(servers),
    );
    let detecting = hot_keys > 0 && servers > 0;
    config.validate(servers, detecting)?;
    ensure!(
        cluster.servers.is_empty() || config.ports.iter().any(|p| p.role == PortRole::Server),
        "the cluster has servers but no port has the role server: their replies would be \
         dropped (name the ports towards them NAME:server)"
    );
    let settings_servers = server_addresses(&cluster, config.store_port)?;

    // 1. state
    let begun = StateFile::begin(&config.state, config.epoch)?;
    let (state, epoch, previously_hot) = (begun.file, begun.epoch, begun.previously_hot);
    let replication = config.replication_in_effect();
    let policy = config.policy.resolve(servers);
    tracing::info!(?policy, servers, "server choice for hot keys");
    let settings = SwitchSettings {
        store_port: config.store_port,
        epoch,
        policy,
        replication,
        directory_capacity,
        sample_period: config.sample_period,
        servers: settings_servers,
        mode: config.switch_mode(),
        mark_committed: config.mark_committed,
    };
    // 2. load
    let mut switch = Switch::load(&settings)?;
    // 3. fence
    if begun.restarted {
        // Writes steered by the switch before this one may still be retried: drop those
        // retries for a retry window instead of sending them home (docs/controller.md).
        switch.fence_retries()?;
    }
    let samples = if detecting {
        Some(switch.take_samples()?)
    } else {
        None
    };
    let controller = Arc::new(
        Controller::new(switch, cluster, replication, config.store_port, epoch).with_state(state),
    );
    // 4. recover
    if !previously_hot.is_empty() {
        tracing::info!(
            keys = previously_hot.len(),
            "bringing home the keys that were hot when the switch stopped"
        );
        let recovering = controller.clone();
        block_on(async move { recovering.recover(&previously_hot).await })
            .context("recovering the keys that were hot (nothing was forwarded)")?;
    }
    // 5. attach
    {
        let mut switch = controller.switch();
        for port in &config.ports {
            switch.attach(&port.name, port.role, config.mode)?;
        }
    }
    // 6. tasks
    let detection = Detection {
        rules: HotSetRules {
            hot_keys: hot_keys as usize,
            min_count: HOT_KEY_MIN_SAMPLES * ONE_SAMPLE,
            capacity: directory_capacity as usize,
            add_sigmas: ADD_SIGMAS_DEFAULT,
        },
        interval: Duration::from_millis(config.stats_interval_ms),
        sample_target: config.sample_target,
        sample_period_max: config.sample_period,
    };
    let outcome = block_on(serve(
        &config,
        controller.clone(),
        samples,
        detection,
        epoch,
    ));
    let mut switch = controller.switch();
    if let Ok(counters) = switch.counters() {
        tracing::info!(counters = %serde_json::to_string(&counters)?, "switch stopping");
    }
    switch.detach_all()?;
    if let Some(path) = &config.admin {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

/// The servers' ids and IPv4 addresses, checked against the switch's store port.
fn server_addresses(cluster: &Cluster, store_port: u16) -> Result<Vec<(u8, std::net::Ipv4Addr)>> {
    let mut servers = Vec::with_capacity(cluster.servers.len());
    for s in &cluster.servers {
        let IpAddr::V4(ip) = s.addr.ip() else {
            bail!(
                "server {} has an IPv6 address; the switch is IPv4 only",
                s.id
            );
        };
        if s.addr.port() != store_port {
            bail!(
                "server {} listens on port {}, not --store-port {store_port}",
                s.id,
                s.addr.port(),
            );
        }
        servers.push((s.id, ip));
    }
    Ok(servers)
}

/// The running switch's tasks, until a signal (Ok) or the first task that fails.
async fn serve(
    config: &DaemonConfig,
    controller: Arc<Controller>,
    samples: Option<crate::switch::SampleReader>,
    detection: Detection,
    epoch: u16,
) -> Result<()> {
    let admin_task = config
        .admin
        .clone()
        .map(|path| tokio::spawn(admin::serve(path, controller.clone())));
    let metrics_task = match config.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr).await?;
            let scraped = controller.clone();
            Some(tokio::spawn(metrics::serve(listener, move || {
                Ok(metrics::render(&admin::snapshot(&scraped)?))
            })))
        }
        None => None,
    };
    tracing::info!(
        ports = %config.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","),
        mode = ?config.mode,
        store_port = config.store_port,
        epoch,
        policy = ?config.policy,
        cache = config.cache,
        "switch running"
    );
    let refreshed = controller.clone();
    let member = controller.clone();
    // Cached forwarding decisions are renewed every period (see FIB_CACHE).
    let fib_refresh = async move {
        let mut tick = tokio::time::interval(Duration::from_millis(FIB_GENERATION_PERIOD_MS));
        loop {
            tick.tick().await;
            if let Err(e) = refreshed.switch().bump_fib_generation() {
                return e;
            }
        }
    };
    if samples.is_some() {
        tracing::info!(
            hot_keys = detection.rules.hot_keys,
            stats_interval_ms = config.stats_interval_ms,
            sample_period = config.sample_period,
            "hot-key detection on"
        );
    }
    let detect = async move {
        match samples {
            Some(samples) => controller.detect_hot_keys(samples, detection).await,
            None => std::future::pending().await,
        }
    };
    let membership = async move {
        match (&config.etcd, config.rack_id) {
            (Some(url), Some(rack)) => {
                let membership = super::membership::Membership {
                    url: url.clone(),
                    chain: config.chain.clone(),
                    rack,
                    lease_ttl: Duration::from_secs(config.lease_ttl_secs),
                };
                super::membership::run(membership, member).await
            }
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown_signal() => Ok(()),
        e = membership => Err(e.context("chain membership")),
        e = detect => Err(e.context("hot-key detection")),
        e = failed(metrics_task, "metrics endpoint") => Err(e),
        e = failed(admin_task, "admin socket") => Err(e),
        e = fib_refresh => Err(e.context("renewing the forwarding cache")),
    }
}

/// Completes with the error of a serving task when it ends (never, for no task).
async fn failed(task: Option<tokio::task::JoinHandle<Result<()>>>, what: &str) -> anyhow::Error {
    match task {
        Some(task) => match task.await {
            Ok(Err(e)) => e.context(what.to_owned()),
            Ok(Ok(())) => anyhow::anyhow!("{what} closed"),
            Err(e) => anyhow::anyhow!("{what} task: {e}"),
        },
        None => std::future::pending().await,
    }
}

/// Runs `f` on the daemon's runtime (one worker: the XDP program does the per-packet work).
fn block_on<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    run_on_runtime(1, f)
}

/// Runs `f` on a multi-threaded tokio runtime with `threads` workers (at least one): the
/// one way the daemon and the command-line tools start a runtime.
pub fn run_on_runtime<T>(threads: usize, f: impl Future<Output = Result<T>>) -> Result<T> {
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
