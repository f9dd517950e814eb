//! A chain's membership in etcd (docs/chain.md, "Membership"): which racks form the chain, in
//! order, and which of them are alive.
//!
//! Key layout, for chain NAME:
//! - `/pegasus/chains/NAME/config`: the [`ChainConfig`] as JSON: its `epoch` (bumped by every
//!   change), the version epoch the head stamps with (`version_epoch`), and the racks, head
//!   first, each with its id, servers and controllers. Written only by compare-and-swap on the
//!   key's revision ([`Etcd::replace_config`]), so two controllers that see the same failure
//!   make one change, not two.
//! - `/pegasus/chains/NAME/alive/R`: rack R's controller is alive; the key is attached to the
//!   controller's lease (TTL 1 s by default), so it disappears when the controller stops
//!   renewing it. Its value is the [`Liveness`] the controller last published.
//!
//! The rules that decide a new configuration are plain functions of [`ChainConfig`]; the
//! [`Etcd`] handle only reads and writes them.

use crate::cluster::{Cluster, Rack};
use anyhow::{Context, Result, bail, ensure};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeSet, time::Duration};
use tokio::sync::watch;

/// Where every chain's keys live.
pub const PREFIX: &str = "/pegasus/chains";
/// The controllers' lease TTL by default.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(1);
/// How long one etcd call may take before it counts as a failure.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);
/// Wait between attempts while etcd is unreachable.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// The key of chain `chain`'s configuration.
pub fn config_key(chain: &str) -> String {
    format!("{PREFIX}/{chain}/config")
}

/// The prefix of chain `chain`'s liveness keys.
pub fn alive_prefix(chain: &str) -> String {
    format!("{PREFIX}/{chain}/alive/")
}

/// Rack `rack`'s liveness key.
pub fn alive_key(chain: &str, rack: u8) -> String {
    format!("{}{rack}", alive_prefix(chain))
}

/// The chain's racks, head first, and the epochs that order its changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainConfig {
    /// Bumped by every change of the configuration.
    pub epoch: u64,
    /// The head's switch stamps versions with at least this epoch, and the head's stores
    /// refuse writes stamped with an older one. Raised whenever another rack becomes head,
    /// so that its versions are newer than any the old head stamped.
    pub version_epoch: u16,
    /// The racks, head first; each has its id.
    pub racks: Vec<Rack>,
    /// A rack joining as the new tail: the tail forwards it every write (and copies it every
    /// key) and it answers writes, but reads stay with the tail until it has everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joining: Option<Rack>,
}

/// A rack's place in a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub index: usize,
    pub racks: usize,
}

impl Position {
    pub fn is_head(self) -> bool {
        self.index == 0
    }

    pub fn is_tail(self) -> bool {
        self.index + 1 == self.racks
    }
}

impl ChainConfig {
    /// The first configuration of the chain a cluster file describes (rack ids default to
    /// their places).
    pub fn from_cluster(cluster: &Cluster) -> Result<ChainConfig> {
        ensure!(
            !cluster.racks.is_empty(),
            "the cluster file has no [[racks]]"
        );
        cluster.validate()?;
        let racks = cluster
            .racks
            .iter()
            .enumerate()
            .map(|(i, r)| Rack {
                id: Some(cluster.rack_id(i)),
                ..r.clone()
            })
            .collect();
        Ok(ChainConfig {
            epoch: 1,
            version_epoch: 0,
            racks,
            joining: None,
        })
    }

    /// The racks as a cluster description, head first (what clients follow).
    pub fn to_cluster(&self, etcd: Option<crate::cluster::EtcdRef>) -> Cluster {
        Cluster {
            racks: self.racks.clone(),
            etcd,
            ..Cluster::default()
        }
    }

    /// The ids of the racks, head first.
    pub fn rack_ids(&self) -> Vec<u8> {
        self.racks.iter().filter_map(|r| r.id).collect()
    }

    /// Where rack `id` is, if it is in the chain.
    pub fn position(&self, id: u8) -> Option<Position> {
        self.racks
            .iter()
            .position(|r| r.id == Some(id))
            .map(|index| Position {
                index,
                racks: self.racks.len(),
            })
    }

    /// The rack before rack `id` (none for the head, or a rack not in the chain).
    pub fn previous(&self, id: u8) -> Option<&Rack> {
        let p = self.position(id)?;
        p.index.checked_sub(1).map(|i| &self.racks[i])
    }

    /// The rack after rack `id` (none for the tail, or a rack not in the chain).
    pub fn next(&self, id: u8) -> Option<&Rack> {
        let p = self.position(id)?;
        self.racks.get(p.index + 1)
    }

    /// Where rack `id`'s stores send the writes they apply: the next rack, or, for the tail,
    /// the joining rack.
    pub fn successor(&self, id: u8) -> Option<&Rack> {
        match self.position(id) {
            Some(p) if p.is_tail() => self.joining.as_ref(),
            Some(_) => self.next(id),
            None => None,
        }
    }

    /// Whom rack `id`'s stores take writes from: the previous rack, or, for the joining
    /// rack, the tail.
    pub fn predecessor(&self, id: u8) -> Option<&Rack> {
        if self.joining_id() == Some(id) {
            return self.racks.last();
        }
        self.previous(id)
    }

    /// The joining rack's id.
    pub fn joining_id(&self) -> Option<u8> {
        self.joining.as_ref().and_then(|r| r.id)
    }

    /// The tail rack's id.
    pub fn tail(&self) -> Option<u8> {
        self.racks.last().and_then(|r| r.id)
    }

    /// The head rack's id.
    pub fn head(&self) -> Option<u8> {
        self.racks.first().and_then(|r| r.id)
    }

    /// The configuration without the racks that are not `alive`: the next epoch, and a new
    /// version epoch if the head changes. A joining rack that failed, or whose tail failed
    /// (it was copying from that tail), stops joining. `None` when nothing changes, or when no
    /// rack of the chain is alive (nothing left to serve: the last configuration stays, and
    /// says which racks held the data).
    pub fn without_failed(&self, alive: &BTreeSet<u8>) -> Option<ChainConfig> {
        let is_alive = |r: &Rack| r.id.is_some_and(|id| alive.contains(&id));
        let racks: Vec<Rack> = self.racks.iter().filter(|r| is_alive(r)).cloned().collect();
        if racks.is_empty() {
            return None;
        }
        let joining = self
            .joining
            .clone()
            .filter(|r| is_alive(r) && racks.last().and_then(|t| t.id) == self.tail());
        if racks.len() == self.racks.len() && joining == self.joining {
            return None;
        }
        let head_changed = racks[0].id != self.head();
        Some(ChainConfig {
            epoch: self.epoch + 1,
            version_epoch: self.version_epoch + u16::from(head_changed),
            racks,
            joining,
        })
    }

    /// The configuration with the head's version epoch raised to `epoch` (a head whose switch
    /// stamps with a newer epoch than the configuration says records it), or `None` if it is
    /// not newer.
    pub fn with_version_epoch(&self, epoch: u16) -> Option<ChainConfig> {
        (epoch > self.version_epoch).then(|| ChainConfig {
            epoch: self.epoch + 1,
            version_epoch: epoch,
            ..self.clone()
        })
    }

    /// The configuration with `rack` joining as the new tail (the first step of adding it).
    pub fn with_joining(&self, rack: Rack) -> Result<ChainConfig> {
        let id = rack.id.context("a rack joining a chain needs an id")?;
        ensure!(self.position(id).is_none(), "rack {id} is in the chain");
        if let Some(other) = self.joining_id() {
            bail!("rack {other} is joining already: one rack joins at a time");
        }
        let mut all = self.racks.clone();
        all.push(rack.clone());
        Cluster {
            racks: all,
            ..Cluster::default()
        }
        .validate()?;
        Ok(ChainConfig {
            epoch: self.epoch + 1,
            joining: Some(rack),
            ..self.clone()
        })
    }

    /// The configuration with the joining rack made the tail (the second step: it has every
    /// key), or `None` if no rack is joining.
    pub fn joined(&self) -> Option<ChainConfig> {
        let rack = self.joining.clone()?;
        let mut racks = self.racks.clone();
        racks.push(rack);
        Some(ChainConfig {
            epoch: self.epoch + 1,
            version_epoch: self.version_epoch,
            racks,
            joining: None,
        })
    }
}

/// What a rack's controller publishes under its liveness key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The controller's lease (its TTL is the lease's).
    pub lease: i64,
    pub ttl_ms: u64,
    /// The version epoch its switch stamps with.
    pub switch_epoch: u16,
    /// The configuration epoch the controller last applied.
    pub config_epoch: u64,
}

/// What a store publishes about its part in the chain (under its own short lease).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReport {
    /// Forwarded writes waiting for their acknowledgement.
    pub queued: usize,
    pub forwarded: u64,
    pub retransmitted: u64,
    pub acks_received: u64,
    pub acks_sent: u64,
    /// The configuration epoch the store applied last.
    pub config_epoch: u64,
    /// The joining rack this store (of the tail) has copied every key to, and heard each
    /// acknowledged: the joining rack may become the tail once every store of the tail says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_to: Option<u8>,
}

/// The prefix of chain `chain`'s store reports.
pub fn stores_prefix(chain: &str) -> String {
    format!("{PREFIX}/{chain}/stores/")
}

/// Everything `pegasus chain status` shows: the configuration, the live racks with what their
/// controllers published and their leases' time left, and the stores' reports.
#[derive(Clone, Debug, Serialize)]
pub struct ChainStatus {
    pub chain: String,
    pub config: Option<ChainConfig>,
    pub racks: Vec<RackStatus>,
}

/// One rack in [`ChainStatus`].
#[derive(Clone, Debug, Serialize)]
pub struct RackStatus {
    pub id: u8,
    /// "head", "middle", "tail", "only", "joining", or "removed" (alive, not in the chain).
    pub role: String,
    /// Its controller's lease is held.
    pub alive: bool,
    /// Seconds left on the lease (etcd's granularity).
    pub lease_left_s: Option<u64>,
    pub liveness: Option<Liveness>,
    /// Its stores' reports, by server id.
    pub stores: Vec<(u8, StoreReport)>,
}

impl ChainStatus {
    /// Forwarded writes waiting in rack `id`'s stores.
    pub fn queued(&self, id: u8) -> usize {
        self.racks
            .iter()
            .filter(|r| r.id == id)
            .flat_map(|r| r.stores.iter().map(|(_, s)| s.queued))
            .sum()
    }
}

/// A configuration as read, with the revision a compare-and-swap must find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub config: ChainConfig,
    pub revision: i64,
}

/// A connection to etcd for chain `chain`.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    chain: String,
    url: String,
}

impl Etcd {
    /// Connects (bounded by a short timeout: etcd may be down, and callers keep going).
    pub async fn connect(url: &str, chain: &str) -> Result<Etcd> {
        ensure!(
            !chain.is_empty() && !chain.contains('/'),
            "a chain's name is not empty and has no '/': {chain:?}"
        );
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let client = Client::connect([url], Some(options))
            .await
            .with_context(|| format!("connecting to etcd at {url}"))?;
        Ok(Etcd {
            client,
            chain: chain.to_owned(),
            url: url.to_owned(),
        })
    }

    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The current configuration, if there is one.
    pub async fn read_config(&self) -> Result<Option<Versioned>> {
        let mut client = self.client.clone();
        let response = client
            .get(config_key(&self.chain), None)
            .await
            .context("reading the chain's configuration from etcd")?;
        response.kvs().first().map(decode).transpose()
    }

    /// Writes the first configuration unless there is one already; returns the one in force.
    pub async fn create_config(&self, config: &ChainConfig) -> Result<Versioned> {
        let key = config_key(&self.chain);
        let mut client = self.client.clone();
        client
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, serde_json::to_vec(config)?, None)]),
            )
            .await
            .context("writing the chain's first configuration to etcd")?;
        self.read_config()
            .await?
            .context("the chain's configuration vanished right after it was written")
    }

    /// Replaces the configuration read at `revision` by `config`; false if another write came
    /// first (read again and decide again).
    pub async fn replace_config(&self, revision: i64, config: &ChainConfig) -> Result<bool> {
        let key = config_key(&self.chain);
        let mut client = self.client.clone();
        let response = client
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::put(key, serde_json::to_vec(config)?, None)]),
            )
            .await
            .context("writing the chain's configuration to etcd")?;
        Ok(response.succeeded())
    }

    /// Writes `rack` into the configuration as the joining rack (`ChainConfig::with_joining`),
    /// reading again whenever another write came first; returns the configuration written.
    pub async fn add_joining(&self, rack: &Rack) -> Result<ChainConfig> {
        loop {
            let now = self
                .read_config()
                .await?
                .context("the chain has no configuration in etcd (pegasus chain init)")?;
            let joining = now.config.with_joining(rack.clone())?;
            if self.replace_config(now.revision, &joining).await? {
                return Ok(joining);
            }
        }
    }

    /// Every key under `prefix`.
    async fn under(&self, prefix: String) -> Result<Vec<etcd_client::KeyValue>> {
        let mut client = self.client.clone();
        let mut response = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .with_context(|| format!("reading {prefix} from etcd"))?;
        Ok(response.take_kvs())
    }

    /// The racks whose controllers are alive, with what each published.
    pub async fn alive(&self) -> Result<Vec<(u8, Liveness)>> {
        Ok(self
            .under(alive_prefix(&self.chain))
            .await?
            .iter()
            .filter_map(|kv| {
                let id = rack_of_alive_key(&self.chain, kv.key())?;
                let liveness = serde_json::from_slice(kv.value()).unwrap_or_default();
                Some((id, liveness))
            })
            .collect())
    }

    /// The chain's state as etcd holds it ([`ChainStatus`]).
    pub async fn status(&self) -> Result<ChainStatus> {
        let config = self.read_config().await?.map(|v| v.config);
        let alive = self.alive().await?;
        let stores = self.store_reports().await?;
        let mut ids: Vec<u8> = config.as_ref().map_or(Vec::new(), |c| {
            c.rack_ids().into_iter().chain(c.joining_id()).collect()
        });
        let removed: Vec<u8> = alive
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| !ids.contains(r))
            .collect();
        ids.extend(removed);
        let mut racks = Vec::with_capacity(ids.len());
        for id in ids {
            let liveness = alive.iter().find(|(r, _)| *r == id).map(|(_, l)| l.clone());
            let lease_left_s = match &liveness {
                Some(l) => self.lease_left(l.lease).await?.map(|d| d.as_secs()),
                None => None,
            };
            let joining = config.as_ref().and_then(|c| c.joining_id()) == Some(id);
            let role = match config.as_ref().and_then(|c| c.position(id)) {
                None if joining => "joining",
                None => "removed",
                Some(p) if p.is_head() && p.is_tail() => "only",
                Some(p) if p.is_head() => "head",
                Some(p) if p.is_tail() => "tail",
                Some(_) => "middle",
            };
            racks.push(RackStatus {
                id,
                role: role.to_owned(),
                alive: liveness.is_some(),
                lease_left_s,
                liveness,
                stores: stores
                    .iter()
                    .filter(|(r, _, _)| *r == id)
                    .map(|(_, s, report)| (*s, report.clone()))
                    .collect(),
            });
        }
        Ok(ChainStatus {
            chain: self.chain.clone(),
            config,
            racks,
        })
    }

    /// Every store's last report: (rack, server id, report), in that order.
    pub async fn store_reports(&self) -> Result<Vec<(u8, u8, StoreReport)>> {
        let mut stores: Vec<(u8, u8, StoreReport)> = self
            .under(stores_prefix(&self.chain))
            .await?
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                let (rack, server) = key
                    .strip_prefix(&stores_prefix(&self.chain))?
                    .split_once('/')?;
                Some((
                    rack.parse().ok()?,
                    server.parse().ok()?,
                    serde_json::from_slice(kv.value()).ok()?,
                ))
            })
            .collect();
        stores.sort_by_key(|&(r, s, _)| (r, s));
        Ok(stores)
    }

    /// Publishes store `server` of rack `rack`'s report under lease `lease` (granted here
    /// when `None` or gone; TTL `ttl`); returns the lease to use next time.
    pub async fn report_store(
        &self,
        rack: u8,
        server: u8,
        report: &StoreReport,
        lease: Option<i64>,
        ttl: Duration,
    ) -> Result<i64> {
        let mut client = self.client.clone();
        let lease = match lease {
            Some(l) if self.renew(l).await? => l,
            _ => client
                .lease_grant(ttl.as_secs().max(1) as i64, None)
                .await?
                .id(),
        };
        client
            .put(
                format!("{}{rack}/{server}", stores_prefix(&self.chain)),
                serde_json::to_vec(report)?,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        Ok(lease)
    }

    /// The time left on lease `lease`, if it is still granted.
    pub async fn lease_left(&self, lease: i64) -> Result<Option<Duration>> {
        let mut client = self.client.clone();
        let response = client.lease_time_to_live(lease, None).await?;
        Ok((response.ttl() >= 0).then(|| Duration::from_secs(response.ttl() as u64)))
    }

    /// Grants a lease of `ttl` and publishes rack `rack`'s liveness under it.
    pub async fn register(&self, rack: u8, ttl: Duration, liveness: &Liveness) -> Result<i64> {
        let mut client = self.client.clone();
        let seconds = ttl.as_secs().max(1) as i64;
        let lease = client.lease_grant(seconds, None).await?.id();
        let published = Liveness {
            lease,
            ttl_ms: seconds as u64 * 1_000,
            ..liveness.clone()
        };
        client
            .put(
                alive_key(&self.chain, rack),
                serde_json::to_vec(&published)?,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        Ok(lease)
    }

    /// Publishes rack `rack`'s liveness again, under its lease (the key keeps the lease).
    pub async fn publish(&self, rack: u8, liveness: &Liveness) -> Result<()> {
        let mut client = self.client.clone();
        client
            .put(
                alive_key(&self.chain, rack),
                serde_json::to_vec(liveness)?,
                Some(PutOptions::new().with_lease(liveness.lease)),
            )
            .await?;
        Ok(())
    }

    /// Renews lease `lease` once; false when it is gone (expired: register again).
    pub async fn renew(&self, lease: i64) -> Result<bool> {
        let mut client = self.client.clone();
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
        keeper.keep_alive().await?;
        let answer = tokio::time::timeout(CALL_TIMEOUT, stream.message())
            .await
            .context("etcd did not answer a lease renewal")??;
        Ok(answer.is_some_and(|a| a.ttl() > 0))
    }

    /// Keeps `sender` holding the newest configuration, for as long as anyone listens: reads
    /// it, then watches its key; while etcd is unreachable, keeps the last one (and says so
    /// through `reachable`) and tries again.
    pub async fn follow(
        self,
        sender: watch::Sender<Option<Versioned>>,
        reachable: watch::Sender<bool>,
    ) {
        while !sender.is_closed() {
            if let Err(e) = self.follow_once(&sender, &reachable).await {
                if reachable.send_replace(false) {
                    tracing::warn!(error = %format!("{e:#}"), chain = %self.chain,
                        "etcd unreachable: keeping the last configuration");
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        }
    }

    async fn follow_once(
        &self,
        sender: &watch::Sender<Option<Versioned>>,
        reachable: &watch::Sender<bool>,
    ) -> Result<()> {
        let key = config_key(&self.chain);
        let mut client = self.client.clone();
        let response = client.get(key.clone(), None).await?;
        let start = response.header().map_or(0, |h| h.revision()) + 1;
        if let Some(kv) = response.kvs().first() {
            offer(sender, decode(kv)?);
        }
        let mut stream = client
            .watch(key, Some(WatchOptions::new().with_start_revision(start)))
            .await?;
        if !reachable.send_replace(true) {
            tracing::info!(chain = %self.chain, "following the chain's configuration in etcd");
        }
        loop {
            // A bounded wait: a watch on a dead etcd may stay silent rather than fail.
            let message = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
            let response = match message {
                Ok(m) => m?,
                Err(_) => {
                    // Quiet: check that etcd still answers.
                    client.get(config_key(&self.chain), None).await?;
                    continue;
                }
            };
            let Some(response) = response else {
                bail!("etcd closed the watch");
            };
            if response.canceled() {
                bail!("etcd canceled the watch: {}", response.cancel_reason());
            }
            for event in response.events() {
                if let (EventType::Put, Some(kv)) = (event.event_type(), event.kv()) {
                    offer(sender, decode(kv)?);
                }
            }
            if sender.is_closed() {
                return Ok(());
            }
        }
    }
}

/// Replaces the held configuration by `new` if `new` is newer.
fn offer(sender: &watch::Sender<Option<Versioned>>, new: Versioned) {
    sender.send_if_modified(|held| {
        let newer = held
            .as_ref()
            .is_none_or(|h| new.config.epoch > h.config.epoch);
        if newer {
            *held = Some(new);
        }
        newer
    });
}

fn decode(kv: &etcd_client::KeyValue) -> Result<Versioned> {
    Ok(Versioned {
        config: parse_config(kv.value()).context("the chain's configuration in etcd")?,
        revision: kv.mod_revision(),
    })
}

/// A configuration as etcd holds it (JSON), checked: racks with ids and the same server ids,
/// a joining rack that could join.
pub fn parse_config(bytes: &[u8]) -> Result<ChainConfig> {
    let config: ChainConfig = serde_json::from_slice(bytes)?;
    config.to_cluster(None).validate()?;
    ensure!(
        config.racks.iter().all(|r| r.id.is_some()),
        "every rack of a chain's configuration has an id"
    );
    if let Some(joining) = &config.joining {
        ChainConfig {
            joining: None,
            ..config.clone()
        }
        .with_joining(joining.clone())?;
    }
    Ok(config)
}

fn rack_of_alive_key(chain: &str, key: &[u8]) -> Option<u8> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(&alive_prefix(chain))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ServerEntry;

    fn rack(id: u8) -> Rack {
        Rack {
            id: Some(id),
            controllers: Vec::new(),
            servers: (0..2)
                .map(|i| ServerEntry {
                    id: i,
                    addr: format!("10.{}.{i}.2:7400", 1 + 16 * id).parse().unwrap(),
                })
                .collect(),
        }
    }

    fn chain(ids: &[u8]) -> ChainConfig {
        ChainConfig {
            epoch: 4,
            version_epoch: 2,
            racks: ids.iter().map(|&id| rack(id)).collect(),
            joining: None,
        }
    }

    #[test]
    fn positions_and_neighbours() {
        let c = chain(&[3, 1, 5]);
        assert_eq!(c.head(), Some(3));
        assert!(c.position(3).unwrap().is_head() && !c.position(3).unwrap().is_tail());
        assert!(c.position(5).unwrap().is_tail());
        assert_eq!(c.previous(1).unwrap().id, Some(3));
        assert_eq!(c.next(1).unwrap().id, Some(5));
        assert!(c.previous(3).is_none() && c.next(5).is_none());
        assert!(c.position(7).is_none() && c.next(7).is_none());
    }

    #[test]
    fn a_failed_head_gives_way_to_its_successor_with_a_newer_version_epoch() {
        let c = chain(&[0, 1, 2]);
        let n = c.without_failed(&BTreeSet::from([1, 2])).unwrap();
        assert_eq!(n.rack_ids(), vec![1, 2]);
        assert_eq!((n.epoch, n.version_epoch), (5, 3));
    }

    #[test]
    fn a_failed_middle_or_tail_keeps_the_version_epoch() {
        let c = chain(&[0, 1, 2]);
        let middle = c.without_failed(&BTreeSet::from([0, 2])).unwrap();
        assert_eq!(middle.rack_ids(), vec![0, 2]);
        assert_eq!((middle.epoch, middle.version_epoch), (5, 2));
        let tail = c.without_failed(&BTreeSet::from([0, 1])).unwrap();
        assert_eq!(tail.rack_ids(), vec![0, 1]);
    }

    #[test]
    fn nothing_changes_when_all_are_alive_or_none_is() {
        let c = chain(&[0, 1]);
        assert!(c.without_failed(&BTreeSet::from([0, 1, 9])).is_none());
        assert!(c.without_failed(&BTreeSet::new()).is_none());
    }

    #[test]
    fn the_version_epoch_only_rises() {
        let c = chain(&[0, 1]);
        assert!(c.with_version_epoch(2).is_none() && c.with_version_epoch(1).is_none());
        let n = c.with_version_epoch(9).unwrap();
        assert_eq!((n.epoch, n.version_epoch, n.rack_ids()), (5, 9, vec![0, 1]));
    }

    #[test]
    fn a_rack_joins_behind_the_tail_then_becomes_it() {
        let c = chain(&[0, 1]);
        let j = c.with_joining(rack(4)).unwrap();
        assert_eq!(
            (j.epoch, j.rack_ids(), j.joining_id()),
            (5, vec![0, 1], Some(4))
        );
        // The tail sends its writes on to the joining rack, which takes them from the tail.
        assert_eq!(j.successor(1).unwrap().id, Some(4));
        assert_eq!(j.predecessor(4).unwrap().id, Some(1));
        assert!(j.successor(4).is_none() && j.next(1).is_none());
        assert!(j.with_joining(rack(5)).is_err(), "one at a time");
        assert!(c.with_joining(rack(1)).is_err(), "already in the chain");
        let n = j.joined().unwrap();
        assert_eq!(
            (n.epoch, n.rack_ids(), n.joining_id()),
            (6, vec![0, 1, 4], None)
        );
        assert!(n.joined().is_none());
        let mut odd = rack(6);
        odd.servers.pop();
        assert!(
            c.with_joining(odd).is_err(),
            "other server ids than the chain's"
        );
    }

    #[test]
    fn a_joining_rack_stops_joining_when_it_or_the_tail_fails() {
        let j = chain(&[0, 1]).with_joining(rack(4)).unwrap();
        let without_joiner = j.without_failed(&BTreeSet::from([0, 1])).unwrap();
        assert_eq!(
            (without_joiner.rack_ids(), without_joiner.joining),
            (vec![0, 1], None)
        );
        let without_tail = j.without_failed(&BTreeSet::from([0, 4])).unwrap();
        assert_eq!(
            (without_tail.rack_ids(), without_tail.joining),
            (vec![0], None)
        );
        // The head failing leaves it joining behind the same tail.
        let without_head = j.without_failed(&BTreeSet::from([1, 4])).unwrap();
        assert_eq!(without_head.joining_id(), Some(4));
        assert!(j.without_failed(&BTreeSet::from([0, 1, 4])).is_none());
    }

    #[test]
    fn a_cluster_file_gives_the_first_configuration() {
        let cluster = Cluster {
            racks: vec![
                Rack {
                    id: None,
                    ..rack(0)
                },
                Rack {
                    id: None,
                    ..rack(1)
                },
            ],
            ..Cluster::default()
        };
        let c = ChainConfig::from_cluster(&cluster).unwrap();
        assert_eq!((c.epoch, c.version_epoch, c.rack_ids()), (1, 0, vec![0, 1]));
        assert_eq!(c.to_cluster(None).rack_index(1), Some(1));
    }

    #[test]
    fn a_configuration_survives_its_json_and_bad_ones_are_refused() {
        let c = chain(&[0, 1, 2]).with_joining(rack(5)).unwrap();
        let text = serde_json::to_vec(&c).unwrap();
        assert_eq!(parse_config(&text).unwrap(), c);
        let mut no_id = chain(&[0, 1]);
        no_id.racks[1].id = None;
        assert!(parse_config(&serde_json::to_vec(&no_id).unwrap()).is_err());
        let mut same_id = chain(&[0, 1]);
        same_id.racks[1].id = Some(0);
        assert!(parse_config(&serde_json::to_vec(&same_id).unwrap()).is_err());
        let mut joining_twice = chain(&[0, 1]);
        joining_twice.joining = Some(rack(1));
        assert!(parse_config(&serde_json::to_vec(&joining_twice).unwrap()).is_err());
    }

    proptest::proptest! {
        /// Whatever etcd holds, reading it never panics.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_config(&bytes);
        }

        /// A configuration's JSON with any one byte changed parses only into a valid one.
        #[test]
        fn a_changed_byte_gives_a_valid_configuration_or_none(at in 0usize..10_000, byte in proptest::num::u8::ANY) {
            let mut text = serde_json::to_vec(&chain(&[0, 1, 2])).unwrap();
            let at = at % text.len();
            text[at] = byte;
            if let Ok(c) = parse_config(&text) {
                proptest::prop_assert!(c.racks.iter().all(|r| r.id.is_some()));
                proptest::prop_assert!(c.to_cluster(None).validate().is_ok());
            }
        }
    }

    #[test]
    fn liveness_keys_name_their_rack() {
        assert_eq!(alive_key("lab", 3), "/pegasus/chains/lab/alive/3");
        assert_eq!(
            rack_of_alive_key("lab", b"/pegasus/chains/lab/alive/3"),
            Some(3)
        );
        assert_eq!(
            rack_of_alive_key("lab", b"/pegasus/chains/lab2/alive/3"),
            None
        );
        assert_eq!(
            rack_of_alive_key("lab", b"/pegasus/chains/lab/alive/x"),
            None
        );
    }
}
