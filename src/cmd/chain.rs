//! `pegasus chain`: a chain of racks as its membership in etcd describes it.

use anyhow::{Context, Result, ensure};
use clap::{Args, Subcommand};
use pegasus_client::{
    Cluster,
    cluster::Rack,
    membership::{ChainConfig, ChainStatus, Etcd},
};
use pegasus_control::lab;
use std::{future::Future, path::PathBuf, process::ExitCode};

#[derive(Args)]
pub struct ChainArgs {
    #[command(subcommand)]
    command: ChainCommand,
}

/// Where a chain lives: etcd's client URL and the chain's name.
#[derive(Args)]
struct ChainInEtcd {
    /// etcd's client URL, e.g. http://127.0.0.1:2379.
    #[arg(long)]
    etcd: String,
    /// The chain's name in etcd.
    #[arg(long, default_value = super::store::DEFAULT_CHAIN)]
    chain: String,
}

impl ChainInEtcd {
    /// Runs `f` with a connection to the chain, on a runtime of its own.
    fn run<T, F: Future<Output = Result<T>>>(self, f: impl FnOnce(Etcd) -> F) -> Result<T> {
        pegasus_bench::block_on(1, async move {
            f(Etcd::connect(&self.etcd, &self.chain).await?).await
        })
    }
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Write a chain's first configuration to etcd from a cluster file's [[racks]] (head
    /// first; rack ids default to their places). Does nothing if the chain has one already,
    /// and prints the configuration in force.
    Init {
        #[command(flatten)]
        at: ChainInEtcd,
        /// The cluster file listing the racks.
        #[arg(long)]
        cluster: PathBuf,
    },
    /// Add a rack to a running chain as its new tail: writes it into the configuration as
    /// joining (its stores and switch must be running with --etcd and its rack id); the tail
    /// copies it every key, and its controller makes it the tail when that is done
    /// (docs/chain.md, "A rack joins").
    Join {
        #[command(flatten)]
        at: ChainInEtcd,
        /// A cluster file describing the joining rack (its only rack, or its [[servers]]).
        #[arg(long)]
        cluster: PathBuf,
        /// The joining rack's id (not one the chain has).
        #[arg(long)]
        rack_id: u8,
    },
    /// The chain's racks head first, each with its role, whether its controller's lease is
    /// held (and how long it has left), the version epoch its switch stamps with and its
    /// stores' queues of writes waiting for acknowledgement; and the configuration's epoch.
    Status {
        /// A lab's chain (its etcd is reached from inside the lab).
        #[arg(long, conflicts_with = "etcd")]
        lab: Option<String>,
        /// etcd's client URL, e.g. http://127.0.0.1:2379.
        #[arg(long, required_unless_present = "lab")]
        etcd: Option<String>,
        /// The chain's name in etcd (a lab's chain is named after the lab).
        #[arg(long, default_value = super::store::DEFAULT_CHAIN)]
        chain: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: ChainArgs) -> Result<ExitCode> {
    match args.command {
        ChainCommand::Init { at, cluster } => {
            let first = ChainConfig::from_cluster(&Cluster::load(&cluster)?)?;
            let now = at.run(|etcd| async move { etcd.create_config(&first).await })?;
            println!("{}", serde_json::to_string_pretty(&now.config)?);
            Ok(ExitCode::SUCCESS)
        }
        ChainCommand::Join {
            at,
            cluster,
            rack_id,
        } => {
            let file = Cluster::load(&cluster)?;
            let own = file.rack(0)?;
            let rack = Rack {
                id: Some(rack_id),
                controllers: own.controllers,
                servers: own.servers,
            };
            let joining = at.run(|etcd| async move { etcd.add_joining(&rack).await })?;
            println!(
                "rack {rack_id} is joining chain at epoch {}; `pegasus chain status` shows when \
                 it is the tail",
                joining.epoch
            );
            Ok(ExitCode::SUCCESS)
        }
        ChainCommand::Status {
            lab: lab_name,
            etcd,
            chain,
            json,
        } => {
            let status = match (lab_name, etcd) {
                (Some(name), _) => {
                    let state = lab::load(&name)?;
                    ensure!(state.spec.racks > 1, "lab {name:?} is a single rack");
                    let etcd = lab::chain::etcd_ref(&name);
                    lab::chain::in_namespace(&lab::chain::spine_ns(&name), async move {
                        Etcd::connect(&etcd.url, &etcd.chain).await?.status().await
                    })?
                }
                (None, Some(url)) => pegasus_bench::block_on(1, async move {
                    Etcd::connect(&url, &chain).await?.status().await
                })?,
                (None, None) => unreachable!("clap requires --lab or --etcd"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render(&status).context("rendering the status")?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The status as a table.
fn render(status: &ChainStatus) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    match &status.config {
        Some(c) => writeln!(
            out,
            "chain {}: configuration epoch {}, head's version epoch {}, racks {:?} (head first)",
            status.chain,
            c.epoch,
            c.version_epoch,
            c.rack_ids()
        )?,
        None => writeln!(out, "chain {}: no configuration in etcd", status.chain)?,
    }
    writeln!(
        out,
        "{:>4}  {:<8} {:<6} {:>9} {:>12} {:>13} {:>7}",
        "rack", "role", "alive", "lease s", "switch epoch", "config epoch", "queued"
    )?;
    for r in &status.racks {
        let dash = || "-".to_owned();
        writeln!(
            out,
            "{:>4}  {:<8} {:<6} {:>9} {:>12} {:>13} {:>7}",
            r.id,
            r.role,
            if r.alive { "yes" } else { "no" },
            r.lease_left_s.map_or_else(dash, |s| s.to_string()),
            r.liveness
                .as_ref()
                .map_or_else(dash, |l| l.switch_epoch.to_string()),
            r.liveness
                .as_ref()
                .map_or_else(dash, |l| l.config_epoch.to_string()),
            if r.stores.is_empty() {
                dash()
            } else {
                status.queued(r.id).to_string()
            },
        )?;
    }
    Ok(out)
}
