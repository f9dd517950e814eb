//! The rack controller: owns the loaded switch and carries out changes to its directory.
//!
//! - **Adding** a key installs its entry with the home server as the only replica, *installing*
//!   (it listens to home only until home's first reply: see `pegasus_common::directory`);
//!   reads the key from home, so that the reply, crossing the switch, ends the installing
//!   state; then asks home to PUSH its (version, value) to the servers that follow it, whose
//!   REPLICATE_ACKs, seen by the switch, add them to the replica set.
//! - **Evicting** a key marks it (its writes now go home), then makes sure home holds the
//!   completed version, asking a replica to PUSH it home when it does not; once home is in the
//!   replica set the entry is frozen on home (see `pegasus_common::directory`), and the entry
//!   is removed. A key whose home cannot be brought up to date stays hot: never unsafe.
//! - **Detecting** hot keys ([`Controller::detect_hot_keys`]): every statistics epoch, the
//!   switch's samples feed a top-k (`crate::hotkeys`), whose decision is carried out in the
//!   background, several changes at once: adds while the directory has room (a new hot key
//!   helps at once; an add that needs an eviction's room waits for a later epoch) and
//!   evictions.
//! - In **cache mode** (the NetCache-style baseline, `SwitchMode::Cache`) the same adds and
//!   evictions also create and remove the key's cache entry; the controller's read of home
//!   fills it (read again, a few times, when a client's newer read got there first). Its
//!   replica set is home alone, so an eviction removes it at once.

pub mod hotkeys;
pub mod state;

use crate::{
    controller::hotkeys::{
        COUNTERS_MIN, COUNTERS_PER_HOT_KEY, HotSetRules, SamplePacer, TopK, Waiting, decay_for,
        decide, half_life_samples,
    },
    controller::state::StateFile,
    switch::{SampleReader, Switch, SwitchMode},
};
use anyhow::{Context, Result, bail, ensure};
use pegasus_client::{Cluster, placement::Placement};
use pegasus_common::{
    cache::CacheState,
    directory::{
        SERVERS_MAX, ServerSet, bit, lowest_bit_index, next_replicas, nth_set_bit,
        replicas_for_load, replication_in_effect, successors,
    },
    hash::key_hash,
    switch::DirEntry,
    version,
    wire::{self, Header, Message, Op, Status},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::net::UdpSocket;

pub use pegasus_common::wire::CONTROLLER_CLIENT_ID;
/// How long the controller waits for a server's answer (PUSH, GET).
const CONTROL_TIMEOUT: Duration = Duration::from_millis(200);
/// Attempts of one control request before giving up.
const CONTROL_ATTEMPTS: u32 = 3;
/// How often an eviction looks at the entry again.
const EVICT_POLL: Duration = Duration::from_millis(5);
/// Rounds before an eviction gives up (the key then stays hot).
const EVICT_ROUNDS_MAX: u32 = 400;
/// Recovery: how often the servers are asked whether requests still wait, how many answers
/// in a row must say none, and how long a server may take to serve what it had queued.
const DRAIN_POLL: Duration = Duration::from_millis(10);
const DRAIN_QUIET_ROUNDS: u32 = 2;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Reads of home a new cache entry gets before the controller leaves it to the next write.
const CACHE_FILL_ATTEMPTS: u32 = 4;
/// Recovery: how long a server may stay silent (a lossy link, a store restarting) before a
/// restarted switch gives up starting. Recovery's requests are idempotent (GET, a REPLICATE
/// of one version), so they are simply asked again.
const RECOVERY_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A hot key as `switch hot list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HotKey {
    /// The key, when the controller added it (keys are known to the switch by hash only).
    pub key: Option<String>,
    pub keyhash: u64,
    pub home: u8,
    pub replicas: Vec<u8>,
    pub ver_completed: u64,
    pub reads: u64,
    pub writes: u64,
    pub evicting: bool,
    /// No reply from home seen yet: home serves the key alone.
    #[serde(default)]
    pub installing: bool,
    /// Cache mode: whether the switch answers the key's reads now, and how many it answered.
    #[serde(default)]
    pub cached: Option<bool>,
    #[serde(default)]
    pub cache_hits: Option<u64>,
    /// Servers its writes go to now, copies included (sized by its share of the load).
    #[serde(default)]
    pub replica_target: u32,
}

/// The controller of one rack's switch.
pub struct Controller {
    switch: Mutex<Switch>,
    cluster: Cluster,
    placement: Placement,
    replication: u8,
    store_port: u16,
    /// The version epoch the switch stamps with (raised when the rack becomes a chain's head).
    epoch: std::sync::atomic::AtomicU16,
    /// Keys added through this controller, by hash.
    keys: Mutex<HashMap<u64, Vec<u8>>>,
    next_request_id: std::sync::atomic::AtomicU32,
    stats: DetectionStats,
    /// Where the hot keys are saved for a restart (see `crate::state`).
    state: Option<StateFile>,
}

/// What hot-key detection has done so far.
#[derive(Debug, Default)]
pub struct DetectionStats {
    /// Samples read from the switch.
    pub samples: AtomicU64,
    /// Statistics epochs completed.
    pub epochs: AtomicU64,
    /// Keys made hot, and made cold, by detection (not by hand).
    pub adds: AtomicU64,
    pub evicts: AtomicU64,
    /// Adds and evictions that failed (the key stays as it was; retried in a later epoch).
    pub failures: AtomicU64,
    /// Copies made of read-mostly keys whose replica set had shrunk (`restore_copies`).
    pub restored: AtomicU64,
    /// Changes of a hot key's replica target (sized by its share of the load).
    pub resized: AtomicU64,
    /// Samples discarded because their key does not hash to their key hash (a forged or
    /// broken request: it would rank one key under another's hash).
    pub samples_discarded: AtomicU64,
    /// The switch's sample period now (one GET or PUT in this many).
    pub sample_period: AtomicU64,
}

/// A copy of [`DetectionStats`] (status replies, metrics).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DetectionSnapshot {
    pub samples: u64,
    pub epochs: u64,
    pub adds: u64,
    pub evicts: u64,
    pub failures: u64,
    #[serde(default)]
    pub restored: u64,
    #[serde(default)]
    pub samples_discarded: u64,
    #[serde(default)]
    pub resized: u64,
    #[serde(default)]
    pub sample_period: u64,
}

impl DetectionStats {
    /// The counts now.
    pub fn snapshot(&self) -> DetectionSnapshot {
        DetectionSnapshot {
            samples: self.samples.load(Ordering::Relaxed),
            epochs: self.epochs.load(Ordering::Relaxed),
            adds: self.adds.load(Ordering::Relaxed),
            evicts: self.evicts.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            restored: self.restored.load(Ordering::Relaxed),
            samples_discarded: self.samples_discarded.load(Ordering::Relaxed),
            resized: self.resized.load(Ordering::Relaxed),
            sample_period: self.sample_period.load(Ordering::Relaxed),
        }
    }
}

/// How hot keys are detected.
#[derive(Clone, Copy, Debug)]
pub struct Detection {
    pub rules: HotSetRules,
    /// Length of a statistics interval (an "epoch" of the detection; not the version epoch).
    pub interval: Duration,
    /// Samples a second to aim for, by sampling more often while the rack is quiet (0: keep
    /// the switch's period).
    pub sample_target: u32,
    /// The sparsest sample period (the configured one): one request in this many.
    pub sample_period_max: u16,
}

/// Recent samples below which replica targets are not resized (see `size_replicas`): a
/// rack sampled at 1,000 requests/s holds about 77 (the recent counts halve every 5
/// epochs); one gone idle, none within a second.
const SIZING_SAMPLES_MIN: u64 = 64;
/// The wait before a hot key whose replica set is still short is pushed again: doubling from
/// the first to the second.
const RESTORE_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RESTORE_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Most pushes that restore copies an epoch starts.
const RESTORES_PER_EPOCH: usize = 8;

impl Controller {
    /// A controller for a loaded switch serving `cluster`.
    pub fn new(
        switch: Switch,
        cluster: Cluster,
        replication: u8,
        store_port: u16,
        epoch: u16,
    ) -> Controller {
        let placement = Placement::new(cluster.servers.iter().map(|s| s.id));
        Controller {
            switch: Mutex::new(switch),
            placement,
            cluster,
            replication,
            store_port,
            epoch: std::sync::atomic::AtomicU16::new(epoch),
            keys: Mutex::default(),
            next_request_id: std::sync::atomic::AtomicU32::new(1),
            stats: DetectionStats::default(),
            state: None,
        }
    }

    /// Saves the hot keys in `state` from now on (before a key enters the directory, after it
    /// has left it).
    pub fn with_state(mut self, state: StateFile) -> Controller {
        self.state = Some(state);
        self
    }

    /// Brings the homes of `keys` (hot when the switch last stopped) up to date, before the
    /// switch forwards anything: waits until the servers have served every request they had
    /// queued (a write steered by the old switch may still wait in a queue, and its ack would
    /// cross the new switch), then asks every server for each key's version and value and,
    /// when a server other than home holds a newer one, writes it home (a REPLICATE with its
    /// version) and checks home's ack. Fails when a server does not answer (it might hold the
    /// newest version) or home cannot be brought up to date: reads of the key from home could
    /// then be stale.
    pub async fn recover(&self, keys: &[Vec<u8>]) -> Result<()> {
        let Some(probe) = keys.first() else {
            return Ok(());
        };
        self.wait_until_servers_are_idle(probe).await?;
        for key in keys {
            let name = String::from_utf8_lossy(key);
            let home = self.placement.home(key_hash(key));
            let mut newest: Option<(ControlReply, u8)> = None;
            let mut at_home = version::NONE;
            for server in self.cluster.servers.iter().map(|s| s.id) {
                let reply = self
                    .request_until_answered(server, ControlRequest::new(Op::Get, key))
                    .await
                    .with_context(|| format!("asking server {server} for {name}"))?;
                let h = reply.header;
                if h.status() != Some(Status::Ok) {
                    continue; // does not hold the key
                }
                if server == home {
                    at_home = h.version;
                }
                if newest
                    .as_ref()
                    .is_none_or(|(n, _)| h.version > n.header.version)
                {
                    newest = Some((reply, server));
                }
            }
            let Some((newest, holder)) = newest else {
                continue;
            };
            let version = newest.header.version;
            if version > at_home {
                // Written home by the controller itself: servers cannot reach each other
                // while the switch forwards nothing.
                let copy = ControlRequest {
                    value: &newest.value,
                    version,
                    ..ControlRequest::new(Op::Replicate, key)
                };
                let ack = self.request_until_answered(home, copy).await?.header;
                ensure!(
                    ack.op() == Some(Op::ReplicateAck)
                        && ack.status() == Some(Status::Ok)
                        && ack.version >= version,
                    "home (server {home}) of {name} holds {:#x} after a copy of {version:#x} \
                     (status {})",
                    ack.version,
                    ack.status
                );
            }
            tracing::info!(key = %name, home, version = format_args!("{version:#x}"), from = holder, "recovered");
            if let Some(state) = &self.state {
                state.set_hot(key, false)?;
            }
        }
        Ok(())
    }

    /// Returns once every server has reported no request waiting [`DRAIN_QUIET_ROUNDS`] times
    /// in a row (every reply carries the server's queue length), asking with GETs of `probe`.
    /// Only for a switch that forwards nothing yet: no new request can then reach a server.
    async fn wait_until_servers_are_idle(&self, probe: &[u8]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        let mut quiet_rounds = 0;
        while quiet_rounds < DRAIN_QUIET_ROUNDS {
            let mut waiting = 0u32;
            for server in self.cluster.servers.iter().map(|s| s.id) {
                let h = self
                    .exchange(server, Op::Get, probe, 0)
                    .await
                    .with_context(|| format!("asking server {server} for its queue length"))?;
                waiting += u32::from(h.load);
            }
            if waiting == 0 {
                quiet_rounds += 1;
            } else {
                quiet_rounds = 0;
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{waiting} requests still wait at the servers after {DRAIN_TIMEOUT:?}"
                );
                tracing::debug!(waiting, "waiting for the servers' queues to drain");
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        Ok(())
    }

    /// What hot-key detection has done.
    pub fn detection_stats(&self) -> &DetectionStats {
        &self.stats
    }

    /// Keeps the directory to the hottest keys, from the switch's samples, until an error
    /// (see the module docs). `detection.rules.hot_keys` must fit the directory.
    pub async fn detect_hot_keys(
        self: Arc<Self>,
        mut samples: SampleReader,
        detection: Detection,
    ) -> anyhow::Error {
        let rules = detection.rules;
        let capacity = self.switch().directory_capacity() as usize;
        assert!(
            rules.hot_keys <= capacity && rules.capacity <= capacity,
            "more hot keys than directory slots"
        );
        let mut top = TopK::new((rules.hot_keys * COUNTERS_PER_HOT_KEY).max(COUNTERS_MIN));
        let half_life = half_life_samples(rules.hot_keys);
        let mut pacer = match self.switch().sample_period() {
            Ok(period) => SamplePacer::new(
                detection.sample_target,
                detection.sample_period_max,
                period,
                std::time::Instant::now(),
            ),
            Err(e) => return e.context("reading the sample period"),
        };
        self.stats
            .sample_period
            .store(pacer.period().into(), Ordering::Relaxed);
        let mut changes_under_way = tokio::task::JoinSet::new();
        // Keys being changed in the background: true for an add, false for an eviction.
        let mut under_way: HashMap<u64, bool> = HashMap::new();
        // Keys of the top not added yet, and for how long (`hotkeys::Waiting`).
        let mut waiting = Waiting::default();
        // Each hot key's completed version at the last epoch: copies are restored only to a
        // key not written for a whole epoch (a write's own copies may still be on their way).
        let mut settled: HashMap<u64, u64> = HashMap::new();
        // Each hot key that wants copies: when it may be pushed again, and the wait after that.
        let mut restore_backoff: HashMap<u64, (tokio::time::Instant, Duration)> = HashMap::new();
        let mut tick = tokio::time::interval(detection.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut discarded = 0;
            let read = samples.drain(|s| match s.key() {
                Some(key) if key_hash(key) == s.keyhash => top.observe(s.keyhash, key),
                _ => discarded += 1,
            });
            self.stats
                .samples_discarded
                .fetch_add(discarded, Ordering::Relaxed);
            self.stats.samples.fetch_add(read as u64, Ordering::Relaxed);
            if let Some(period) = pacer.observe(read as u64, std::time::Instant::now()) {
                if let Err(e) = self.switch().set_sample_period(period) {
                    return e.context("setting the sample period");
                }
                tracing::debug!(period, "sample period");
                self.stats
                    .sample_period
                    .store(period.into(), Ordering::Relaxed);
            }
            let entries = match self.switch().directory_list() {
                Ok(entries) => entries,
                Err(e) => return e.context("reading the directory"),
            };
            let hot: Vec<u64> = entries.iter().map(|(h, _)| *h).collect();
            // Changes run in the background, several at once (each waits for its servers,
            // which may be the saturated ones). A key being evicted is not hot any more; a
            // key being added is, and is not evicted before its add is done.
            while let Some(done) = changes_under_way.try_join_next() {
                if let Ok(keyhash) = done {
                    under_way.remove(&keyhash);
                }
            }
            let staying: Vec<u64> = hot
                .iter()
                .copied()
                .filter(|h| under_way.get(h) != Some(&false))
                .collect();
            // Keys being evicted still take directory slots.
            let evicting = under_way.values().filter(|&&adding| !adding).count();
            // A newcomer must also stand out from the crowd: surely counted more than any
            // untracked key may have been.
            let epoch_rules = HotSetRules {
                capacity: rules.capacity.saturating_sub(evicting),
                min_count: rules.min_count.max(top.floor() + 1),
                ..rules
            };
            let ranking = top.ranking();
            let changes = decide(&epoch_rules, &ranking, &staying, &waiting);
            waiting.record(&ranking, rules.hot_keys, &staying, &changes.add);
            for &keyhash in &changes.add {
                let Some(key) = top.key(keyhash).map(<[u8]>::to_vec) else {
                    continue;
                };
                under_way.insert(keyhash, true);
                let controller = self.clone();
                changes_under_way.spawn(async move {
                    controller.detected_add(&key).await;
                    keyhash
                });
            }
            for keyhash in changes.evict {
                if under_way.contains_key(&keyhash) {
                    continue;
                }
                under_way.insert(keyhash, false);
                let controller = self.clone();
                changes_under_way.spawn(async move {
                    controller.detected_evict(keyhash).await;
                    keyhash
                });
            }
            if self.switch().mode() == SwitchMode::Directory {
                self.size_replicas(&top, &entries);
            }
            let now = tokio::time::Instant::now();
            let mut restores = 0;
            for (keyhash, entry) in entries {
                let unchanged =
                    settled.insert(keyhash, entry.ver_completed) == Some(entry.ver_completed);
                if !unchanged || under_way.contains_key(&keyhash) {
                    continue;
                }
                if !self.wants_copies(keyhash, &entry) {
                    restore_backoff.remove(&keyhash);
                    continue;
                }
                // The copies of a push join the set only once their acks cross the switch,
                // which may take as long as the servers' queues: a key is pushed again only
                // after a wait that doubles while its set stays short, and an epoch starts at
                // most RESTORES_PER_EPOCH pushes (copies queue behind the clients' requests).
                let backoff = restore_backoff
                    .entry(keyhash)
                    .or_insert((now, RESTORE_BACKOFF_MIN));
                if now < backoff.0 || restores >= RESTORES_PER_EPOCH {
                    continue;
                }
                let Some(key) = self.key_of(keyhash) else {
                    continue;
                };
                *backoff = (now + backoff.1, (backoff.1 * 2).min(RESTORE_BACKOFF_MAX));
                restores += 1;
                under_way.insert(keyhash, true);
                let controller = self.clone();
                changes_under_way.spawn(async move {
                    controller.restore_copies(&key, entry).await;
                    keyhash
                });
            }
            settled.retain(|h, _| hot.contains(h));
            restore_backoff.retain(|h, _| hot.contains(h));
            top.end_epoch(decay_for(read as u64, half_life));
            self.stats.epochs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sizes each hot key's replica target by its share of the sampled requests, split into
    /// reads and writes by the key's recent mix in the switch (`directory::replicas_for_load`,
    /// with hysteresis: `directory::next_replicas`). A
    /// larger target takes effect with the key's next write, or by the copies that
    /// `wants_copies` has made for a read-mostly key; a smaller one with the next write.
    fn size_replicas(&self, top: &TopK, entries: &[(u64, DirEntry)]) {
        // Shares from a handful of samples are noise: on a rack gone idle, one request would
        // make its key look like a tenth of the load. The targets stay as they are until
        // there are enough.
        if top.recent_samples() < SIZING_SAMPLES_MIN {
            return;
        }
        let servers = self.all_servers().count_ones();
        let floor = u32::from(self.replication);
        let mut switch = self.switch();
        for &(keyhash, ref entry) in entries {
            let Ok(Some(current)) = switch.replica_target(keyhash) else {
                continue;
            };
            let current = replication_in_effect(current, self.replication);
            let (read_ppm, write_ppm) = entry.recent_mix().split(top.recent_share_ppm(keyhash));
            let needed = replicas_for_load(read_ppm, write_ppm, servers, floor);
            let next = next_replicas(current, needed, floor.min(servers));
            if next != current {
                if let Err(e) = switch.set_replica_target(keyhash, next as u8) {
                    tracing::warn!("sizing a hot key's replicas: {e:#}");
                    continue;
                }
                self.stats.resized.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    keyhash = format_args!("{keyhash:#x}"),
                    current,
                    next,
                    "replica target"
                );
            }
        }
    }

    /// Servers a hot key's writes go to now (copies included).
    fn replicas_wanted(&self, keyhash: u64) -> u32 {
        let target = self
            .switch()
            .replica_target(keyhash)
            .ok()
            .flatten()
            .unwrap_or(0);
        replication_in_effect(target, self.replication).min(self.all_servers().count_ones())
    }

    async fn detected_add(&self, key: &[u8]) {
        match self.add(key).await {
            Ok(hot) => {
                self.stats.adds.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %String::from_utf8_lossy(key), replicas = ?hot.replicas, "hot key added");
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %String::from_utf8_lossy(key), "adding a hot key: {e:#}");
            }
        }
    }

    async fn detected_evict(&self, keyhash: u64) {
        let key = self
            .keys
            .lock()
            .expect("keys mutex poisoned")
            .get(&keyhash)
            .cloned();
        let Some(key) = key else {
            tracing::warn!(keyhash, "a hot key this controller did not add: left alone");
            return;
        };
        match self.evict(&key).await {
            Ok(()) => {
                self.stats.evicts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %String::from_utf8_lossy(&key), "hot key evicted");
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %String::from_utf8_lossy(&key), "evicting a hot key: {e:#}");
            }
        }
    }

    /// The switch (briefly: never hold it across an await).
    pub fn switch(&self) -> MutexGuard<'_, Switch> {
        self.switch.lock().expect("switch mutex poisoned")
    }

    /// The stores' port.
    pub fn store_port(&self) -> u16 {
        self.store_port
    }

    /// The epoch the switch stamps.
    pub fn epoch(&self) -> u16 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Stamps in `epoch` from now on, as a restarted switch would (docs/chain.md: a rack that
    /// becomes a chain's head): saved first (a restart takes a larger one), then the program
    /// stamps with it, and retries of writes stamped before are dropped for a retry window
    /// (their clients learn the new epoch; none of them is applied twice).
    pub fn take_epoch(&self, epoch: u16) -> Result<()> {
        if let Some(state) = &self.state {
            state.set_epoch(epoch)?;
        }
        let mut switch = self.switch();
        switch.set_epoch(epoch)?;
        switch.fence_retries()?;
        self.epoch.store(epoch, Ordering::Relaxed);
        Ok(())
    }

    fn all_servers(&self) -> ServerSet {
        self.cluster
            .servers
            .iter()
            .fold(0, |acc, s| acc | bit(s.id))
    }

    /// Whether a hot key's replica set should grow back: it is read-mostly
    /// (`RecentMix::read_mostly`) but holds fewer servers than its target, as after a
    /// write-heavy period whose writes were not copied.
    fn wants_copies(&self, keyhash: u64, entry: &DirEntry) -> bool {
        let mix = entry.recent_mix();
        let wanted = self.replicas_wanted(keyhash);
        entry.installing == 0
            && entry.ver_completed != version::NONE
            && entry.rset.count_ones() < wanted
            && mix.read_mostly()
            && !self.switch().is_evicting(keyhash).unwrap_or(true)
    }

    /// The key of `keyhash`, if this controller added it.
    fn key_of(&self, keyhash: u64) -> Option<Vec<u8>> {
        self.keys
            .lock()
            .expect("keys mutex poisoned")
            .get(&keyhash)
            .cloned()
    }

    /// Has a member of `entry`'s replica set PUSH the key to the servers after it that miss
    /// it; their acks, crossing the switch, join the set (a write in between makes them
    /// stale, and the reply rule ignores them). Best effort.
    async fn restore_copies(&self, key: &[u8], entry: DirEntry) {
        if entry.rset == 0 {
            return;
        }
        match self
            .copy_to_successors(lowest_bit_index(entry.rset), key, entry.rset)
            .await
        {
            Ok(true) => {
                self.stats.restored.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(key = %String::from_utf8_lossy(key), "restoring copies: {e:#}");
            }
        }
    }

    /// Has `source` PUSH `key` to the servers after it that the key's replica target wants,
    /// less those in `holding`; true when there was any to push to.
    async fn copy_to_successors(&self, source: u8, key: &[u8], holding: ServerSet) -> Result<bool> {
        let wanted = self.replicas_wanted(key_hash(key));
        let wanted = successors(self.all_servers(), source, wanted.saturating_sub(1));
        let targets = wanted & !holding;
        if targets == 0 {
            return Ok(false);
        }
        self.push(source, key, targets).await?;
        Ok(true)
    }

    /// Makes `key` hot: installs its entry, then replicates it from home.
    pub async fn add(&self, key: &[u8]) -> Result<HotKey> {
        ensure!(
            key.len() <= wire::MAX_KEY_LEN,
            "a key of {} bytes cannot be hot: keys are at most {} bytes",
            key.len(),
            wire::MAX_KEY_LEN
        );
        let keyhash = key_hash(key);
        let home = self.placement.home(keyhash);
        if let Some(state) = &self.state {
            state.set_hot(key, true)?;
        }
        let inserted = self.switch().directory_insert(keyhash, home);
        if let Err(e) = inserted {
            if let Some(state) = &self.state
                && self.switch().directory_entry(keyhash)?.is_none()
            {
                state.set_hot(key, false)?;
            }
            return Err(e);
        }
        self.keys
            .lock()
            .expect("keys mutex poisoned")
            .insert(keyhash, key.to_vec());
        // Home's reply carries its version into the entry (best effort: any client's read of the
        // key, which goes home while the entry is installing, does the same), and fills the
        // cache entry in cache mode.
        if let Err(e) = self.fill_from_home(key, keyhash, home).await {
            tracing::warn!(key = %String::from_utf8_lossy(key), "reading a new hot key from home: {e:#}");
        }
        // Best effort: without copies the key is still served correctly, by home alone.
        if let Err(e) = self.copy_to_successors(home, key, bit(home)).await {
            tracing::warn!(key = %String::from_utf8_lossy(key), "replicating a new hot key: {e:#}");
        }
        self.describe(keyhash)?
            .context("the entry vanished right after it was added")
    }

    /// Reads `key` from home through the switch: once, or in cache mode until the reply fills
    /// the cache entry (it does not when a client's read of a newer version crossed the switch
    /// first; the entry is then left to the next write after [`CACHE_FILL_ATTEMPTS`]).
    async fn fill_from_home(&self, key: &[u8], keyhash: u64, home: u8) -> Result<()> {
        for _ in 0..CACHE_FILL_ATTEMPTS {
            let reply = self.exchange(home, Op::Get, key, 0).await?;
            if self.switch().mode() != SwitchMode::Cache || reply.status() != Some(Status::Ok) {
                return Ok(());
            }
            let filling = self
                .switch()
                .cache_entry(keyhash)?
                .is_some_and(|e| e.meta().state == CacheState::Filling);
            if !filling {
                return Ok(());
            }
        }
        tracing::debug!(key = %String::from_utf8_lossy(key), "the cache entry waits for a write");
        Ok(())
    }

    /// Makes `key` cold again, safely (see the module docs).
    pub async fn evict(&self, key: &[u8]) -> Result<()> {
        let keyhash = key_hash(key);
        let Some(entry) = self.switch().directory_entry(keyhash)? else {
            bail!("{} is not in the directory", String::from_utf8_lossy(key));
        };
        let home = entry.home;
        self.switch().set_evicting(keyhash, true)?;
        for _ in 0..EVICT_ROUNDS_MAX {
            let Some(entry) = self.switch().directory_entry(keyhash)? else {
                return Ok(());
            };
            if entry.view(true).reads_home_only() {
                // Frozen on home: only home's replies change it from now on.
                self.switch().directory_remove(keyhash)?;
                if let Some(state) = &self.state {
                    state.set_hot(key, false)?;
                }
                self.keys
                    .lock()
                    .expect("keys mutex poisoned")
                    .remove(&keyhash);
                return Ok(());
            }
            if let Some(source) = nth_set_bit(entry.rset, 0)
                && let Err(e) = self.push(source, key, bit(home)).await
            {
                tracing::debug!("write-back push from server {source}: {e:#}");
            }
            tokio::time::sleep(EVICT_POLL).await;
        }
        self.switch().set_evicting(keyhash, false)?;
        bail!(
            "could not bring home (server {home}) up to date; {} stays hot",
            String::from_utf8_lossy(key)
        )
    }

    /// Every hot key.
    pub fn list(&self) -> Result<Vec<HotKey>> {
        let entries = self.switch().directory_list()?;
        entries
            .into_iter()
            .map(|(k, _)| self.describe(k))
            .filter_map(Result::transpose)
            .collect()
    }

    fn describe(&self, keyhash: u64) -> Result<Option<HotKey>> {
        let switch = self.switch();
        let Some(e) = switch.directory_entry(keyhash)? else {
            return Ok(None);
        };
        let evicting = switch.is_evicting(keyhash)?;
        let cache = switch.cache_entry(keyhash)?;
        let replica_target = switch
            .replica_target(keyhash)?
            .map_or(0, |t| replication_in_effect(t, self.replication));
        let key = self
            .keys
            .lock()
            .expect("keys mutex poisoned")
            .get(&keyhash)
            .map(|k| String::from_utf8_lossy(k).into_owned());
        Ok(Some(HotKey {
            key,
            keyhash,
            home: e.home,
            replicas: (0..SERVERS_MAX as u8)
                .filter(|&i| e.rset & bit(i) != 0)
                .collect(),
            ver_completed: e.ver_completed,
            reads: e.reads,
            writes: e.writes,
            evicting,
            installing: e.installing != 0,
            cached: cache.map(|c| c.meta().serves_reads()),
            cache_hits: cache.map(|c| c.hits),
            replica_target,
        }))
    }

    /// Asks server `source` to send its version of `key` to the servers in `targets`, and
    /// waits for its answer. Returns the version pushed (None if it does not hold the key).
    pub async fn push(&self, source: u8, key: &[u8], targets: ServerSet) -> Result<Option<u64>> {
        let h = self.exchange(source, Op::Push, key, targets).await?;
        match (h.op(), h.status()) {
            (Some(Op::PushReply), Some(Status::Ok)) => Ok(Some(h.version)),
            (Some(Op::PushReply), Some(Status::NotFound)) => Ok(None),
            _ => bail!(
                "server {source} refused the PUSH (op {}, status {})",
                h.op_code,
                h.status
            ),
        }
    }

    /// Sends `op` for `key` (with a replica bitmap `targets`) to server `server` and returns
    /// its reply's header. Retries a few times.
    async fn exchange(&self, server: u8, op: Op, key: &[u8], targets: ServerSet) -> Result<Header> {
        let request = ControlRequest {
            targets,
            ..ControlRequest::new(op, key)
        };
        Ok(self.request(server, request).await?.header)
    }

    /// Sends `request` to server `server` and returns its reply. Retries a few times.
    async fn request(&self, server: u8, request: ControlRequest<'_>) -> Result<ControlReply> {
        let addr = self
            .cluster
            .server(server)
            .with_context(|| format!("no server {server} in the cluster"))?
            .addr;
        let request_id = self
            .next_request_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let header = Header {
            replica_bitmap: request.targets,
            version: request.version,
            ..Header::request(
                request.op,
                key_hash(request.key),
                CONTROLLER_CLIENT_ID,
                request_id,
                server,
            )
        };
        let message = Message::new(header, request.key, request.value);
        let bytes = message.to_vec().context("encoding a control request")?;
        // A socket per exchange: exchanges with different servers (adds and evictions of
        // several keys) proceed at once, each waiting only for its own server.
        let socket = UdpSocket::bind("0.0.0.0:0").await?;
        for _ in 0..CONTROL_ATTEMPTS {
            socket.send_to(&bytes, addr).await?;
            if let Ok(reply) =
                tokio::time::timeout(CONTROL_TIMEOUT, receive(&socket, addr, request_id)).await
            {
                return reply;
            }
        }
        bail!("server {server} did not answer after {CONTROL_ATTEMPTS} attempts")
    }
}

impl Controller {
    /// [`Self::request`] again and again until the server answers or
    /// [`RECOVERY_ANSWER_TIMEOUT`] has passed.
    async fn request_until_answered(
        &self,
        server: u8,
        request: ControlRequest<'_>,
    ) -> Result<ControlReply> {
        let deadline = std::time::Instant::now() + RECOVERY_ANSWER_TIMEOUT;
        loop {
            match self.request(server, request).await {
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(server, "recovery: {e:#}; asking again");
                }
                answered => return answered,
            }
        }
    }
}

/// A request of the controller to one server.
#[derive(Clone, Copy)]
struct ControlRequest<'a> {
    op: Op,
    key: &'a [u8],
    value: &'a [u8],
    version: u64,
    /// The replica bitmap (a PUSH's targets).
    targets: ServerSet,
}

impl<'a> ControlRequest<'a> {
    fn new(op: Op, key: &'a [u8]) -> ControlRequest<'a> {
        ControlRequest {
            op,
            key,
            value: &[],
            version: version::NONE,
            targets: 0,
        }
    }
}

/// A server's answer to a [`ControlRequest`].
struct ControlReply {
    header: Header,
    value: Vec<u8>,
}

/// The next reply to `request_id` from `from` (other datagrams are stale answers: skipped).
async fn receive(socket: &UdpSocket, from: SocketAddr, request_id: u32) -> Result<ControlReply> {
    let mut buf = vec![0u8; wire::MAX_PAYLOAD_LEN + 1];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        let Ok(m) = Message::decode(&buf[..n]) else {
            continue;
        };
        if peer.ip() == from.ip() && m.header.request_id == request_id {
            ensure!(
                m.header.client_id == CONTROLLER_CLIENT_ID,
                "reply for another client"
            );
            return Ok(ControlReply {
                header: m.header,
                value: m.value.to_vec(),
            });
        }
    }
}
