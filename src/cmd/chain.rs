//! `pegasus chain`: a chain of racks as its membership in etcd describes it.

use anyhow::{Context, Result, ensure};
use clap::{Args, Subcommand};
use pegasus_client::membership::{ChainStatus, Etcd};
use pegasus_control::lab;
use std::process::ExitCode;

#[derive(Args)]
pub struct ChainArgs {
    #[command(subcommand)]
    command: ChainCommand,
}

#[derive(Subcommand)]
enum ChainCommand {
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
