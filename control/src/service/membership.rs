//! A rack controller's part in its chain's membership (docs/chain.md, "Membership"), as a
//! task of the switch daemon (`pegasus switch --etcd URL --rack-id R`):
//!
//! - **liveness**: holds a lease (TTL `--lease-ttl-ms`) and keeps the rack's liveness key
//!   under it, renewed every third of the TTL; a lease lost (etcd was away longer than the
//!   TTL) is granted again;
//! - **failures**: every [`CHECK_PERIOD`], compares the configuration's racks with the live
//!   ones; a rack seen alive before and gone now has failed, and the configuration without it
//!   (`ChainConfig::without_failed`) is written by compare-and-swap: every live controller
//!   tries, one succeeds, the others find the new configuration and have nothing to do;
//! - **joining**: a rack joining behind the tail becomes the tail once every store of the
//!   tail reports that it has copied every key to it (each copy acknowledged);
//! - **the head's version epoch**: in the head, the switch stamps with at least the
//!   configuration's `version_epoch` (taking a newer epoch when the rack has just become head:
//!   [`Controller::take_epoch`]), and the configuration records the switch's epoch when it is
//!   newer (so that the next head's is newer still).
//!
//! While etcd is unreachable the task keeps trying; the rack serves with the configuration it
//! last saw, and no reconfiguration happens.

use crate::controller::Controller;
use anyhow::{Context, Result};
use pegasus_client::membership::{Etcd, Liveness, Versioned};
use std::{collections::BTreeSet, sync::Arc, time::Duration};
use tokio::{sync::watch, time::Instant};

/// How often the controller looks for failed racks and checks its head duties.
pub const CHECK_PERIOD: Duration = Duration::from_millis(100);

/// Where the rack's chain is kept, and how the rack takes part.
#[derive(Clone, Debug)]
pub struct Membership {
    pub url: String,
    pub chain: String,
    pub rack: u8,
    pub lease_ttl: Duration,
}

/// Runs the rack's membership until the daemon stops (it never returns an error: etcd being
/// away is a state, not a failure).
pub async fn run(membership: Membership, controller: Arc<Controller>) -> anyhow::Error {
    let mut state = Rack {
        membership,
        controller,
        reachable: true,
        seen_alive: BTreeSet::new(),
        lease: None,
        next_renewal: Instant::now(),
        published: Liveness::default(),
    };
    let etcd = loop {
        match Etcd::connect(&state.membership.url, &state.membership.chain).await {
            Ok(etcd) => break etcd,
            Err(e) => {
                state.unreachable(&e);
                tokio::time::sleep(CHECK_PERIOD * 5).await;
            }
        }
    };
    let (sender, mut configs) = watch::channel(None);
    let (reachable, _) = watch::channel(false);
    tokio::spawn(etcd.clone().follow(sender, reachable));
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = configs.changed() => if changed.is_err() {
                return anyhow::anyhow!("the configuration follower stopped");
            },
        }
        let config = configs.borrow_and_update().clone();
        match state.step(&etcd, config).await {
            Ok(()) if !state.reachable => {
                tracing::info!("etcd reachable again");
                state.reachable = true;
            }
            Ok(()) => {}
            Err(e) => state.unreachable(&e),
        }
    }
}

/// The controller's membership state.
struct Rack {
    membership: Membership,
    controller: Arc<Controller>,
    /// Whether etcd answered the last step (a change is logged).
    reachable: bool,
    /// Racks this controller has seen alive: only those can be found failed (a rack that has
    /// not registered yet, at start-up, has not failed).
    seen_alive: BTreeSet<u8>,
    lease: Option<i64>,
    next_renewal: Instant,
    published: Liveness,
}

impl Rack {
    fn unreachable(&mut self, error: &anyhow::Error) {
        if self.reachable {
            tracing::warn!(error = %format!("{error:#}"), rack = self.membership.rack,
                "etcd unreachable: serving with the last configuration, no reconfiguration");
            self.reachable = false;
        }
    }

    async fn step(&mut self, etcd: &Etcd, config: Option<Versioned>) -> Result<()> {
        self.keep_lease(etcd, config.as_ref()).await?;
        let Some(versioned) = config else {
            return Ok(());
        };
        if versioned.config.joining_id() == Some(self.membership.rack) {
            return self.take_the_tail_once_copied(etcd, &versioned).await;
        }
        let Some(position) = versioned.config.position(self.membership.rack) else {
            return Ok(()); // out of the chain: nothing of it is this rack's to decide
        };
        if position.is_head() {
            self.head_duties(etcd, &versioned).await?;
        }
        self.find_failures(etcd, &versioned).await
    }

    /// Holds the lease, renewed every third of its TTL, and publishes what changed.
    async fn keep_lease(&mut self, etcd: &Etcd, config: Option<&Versioned>) -> Result<()> {
        let liveness = Liveness {
            lease: self.lease.unwrap_or(0),
            ttl_ms: self.membership.lease_ttl.as_millis() as u64,
            switch_epoch: self.controller.epoch(),
            config_epoch: config.map_or(0, |c| c.config.epoch),
        };
        let now = Instant::now();
        match self.lease {
            Some(lease) if now >= self.next_renewal => {
                if !etcd.renew(lease).await? {
                    tracing::warn!(lease, "the lease expired: registering again");
                    self.lease = None;
                }
                self.next_renewal = now + self.membership.lease_ttl / 3;
            }
            _ => {}
        }
        match self.lease {
            None => {
                let lease = etcd
                    .register(self.membership.rack, self.membership.lease_ttl, &liveness)
                    .await
                    .context("registering the rack in etcd")?;
                tracing::info!(
                    lease,
                    rack = self.membership.rack,
                    chain = %self.membership.chain,
                    "rack registered"
                );
                self.lease = Some(lease);
                self.next_renewal = now + self.membership.lease_ttl / 3;
                self.published = Liveness { lease, ..liveness };
            }
            Some(lease) => {
                let liveness = Liveness { lease, ..liveness };
                if liveness != self.published {
                    etcd.publish(self.membership.rack, &liveness).await?;
                    self.published = liveness;
                }
            }
        }
        Ok(())
    }

    /// In the head: stamp with at least the configuration's version epoch, and record a newer
    /// one of the switch's.
    async fn head_duties(&self, etcd: &Etcd, versioned: &Versioned) -> Result<()> {
        let (mine, floor) = (self.controller.epoch(), versioned.config.version_epoch);
        if mine < floor {
            tracing::info!(
                from = mine,
                to = floor,
                "this rack is the chain's head now: stamping in a newer version epoch"
            );
            self.controller.take_epoch(floor)?;
        } else if let Some(newer) = versioned.config.with_version_epoch(mine)
            && etcd.replace_config(versioned.revision, &newer).await?
        {
            tracing::info!(epoch = mine, "recorded the head's version epoch");
        }
        Ok(())
    }

    /// In a joining rack: once every store of the tail has copied every key here (each copy
    /// acknowledged) under the configuration in force, makes this rack the tail.
    async fn take_the_tail_once_copied(&self, etcd: &Etcd, versioned: &Versioned) -> Result<()> {
        let config = &versioned.config;
        let (Some(tail), Some(tail_rack)) = (config.tail(), config.racks.last()) else {
            return Ok(());
        };
        let reports = etcd.store_reports().await?;
        let copied = |server: u8| {
            reports.iter().any(|(r, s, report)| {
                *r == tail
                    && *s == server
                    && report.config_epoch == config.epoch
                    && report.copied_to == Some(self.membership.rack)
            })
        };
        if !tail_rack.servers.iter().all(|s| copied(s.id)) {
            return Ok(());
        }
        let Some(joined) = config.joined() else {
            return Ok(());
        };
        if etcd.replace_config(versioned.revision, &joined).await? {
            tracing::info!(
                epoch = joined.epoch,
                racks = ?joined.rack_ids(),
                "every key copied here: this rack is the chain's tail now"
            );
        }
        Ok(())
    }

    /// Takes out of the configuration every rack seen alive before and gone now.
    async fn find_failures(&mut self, etcd: &Etcd, versioned: &Versioned) -> Result<()> {
        let live: BTreeSet<u8> = etcd.alive().await?.into_iter().map(|(r, _)| r).collect();
        self.seen_alive.extend(&live);
        let config = &versioned.config;
        // A rack never seen alive is given the benefit of the doubt.
        let members: Vec<u8> = config
            .rack_ids()
            .into_iter()
            .chain(config.joining_id())
            .collect();
        let presumed: BTreeSet<u8> = members
            .iter()
            .copied()
            .filter(|r| live.contains(r) || !self.seen_alive.contains(r))
            .collect();
        let Some(new) = config.without_failed(&presumed) else {
            return Ok(());
        };
        let failed: Vec<u8> = members
            .into_iter()
            .filter(|r| !presumed.contains(r))
            .collect();
        if etcd.replace_config(versioned.revision, &new).await? {
            tracing::warn!(
                failed = ?failed,
                epoch = new.epoch,
                racks = ?new.rack_ids(),
                version_epoch = new.version_epoch,
                "racks failed: the chain goes on without them"
            );
        }
        Ok(())
    }
}
