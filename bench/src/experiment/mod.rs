//! The experiments (`pegasus experiment`), each on lab racks built for it and driven by the
//! load generator, whose typed summaries they read:
//! - [`skew`]: throughput under a p99 bound across skews and write ratios, per system;
//! - [`balance`]: busiest server over the mean without and with the top keys in the directory;
//! - [`hot_keys`]: balance against the number of hot keys the controller keeps, per rack size;
//! - [`reaction`]: how fast the controller follows an abrupt change of the hot set;
//! - [`ceiling`]: one store's ceiling on one core;
//! - [`faults`]: a campaign of seeded fault runs, each history checked for linearizability;
//! - [`failover`]: how long a chain's writes stop when its head, a middle rack or its tail
//!   fails.

pub mod balance;
pub mod ceiling;
pub mod failover;
pub mod faults;
pub mod hot_keys;
mod plot;
pub mod rack;
pub mod reaction;
mod search;
pub mod skew;

use anyhow::Result;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    command: ExperimentCommand,
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// Throughput under a p99 bound as skew and write ratio grow, for each system, measured
    /// in lab racks on this host (root). Writes DIR/results.csv, DIR/summary.md and PNG plots.
    Skew(skew::SkewArgs),
    /// Load balance without and with the most popular keys in the directory (added by hand):
    /// the busiest server over the mean, throughput and latency (root).
    Balance(balance::BalanceArgs),
    /// Load balance against the number of hot keys the controller keeps, for each rack size
    /// and skew (root).
    HotKeys(hot_keys::HotKeysArgs),
    /// How long the rack takes to balance again after the hot set changes at once (root).
    Reaction(reaction::ReactionArgs),
    /// The ceiling of one store on one core: closed loops from two clients against a store
    /// pinned to a core of its own (root).
    StoreCeiling(ceiling::CeilingArgs),
    /// A campaign of seeded fault runs (root): each builds a rack, records concurrent reads and
    /// writes while loss, duplication (copies up to 10 s late), delay, reordering, switch and
    /// store crashes are injected, reads every key back and checks the history. Writes
    /// OUT/runs.csv and OUT/summary.md; a failed run prints its seed for --replay.
    Faults(faults::FaultsArgs),
    /// How long a chain's writes stop when a rack fails, for the head, a middle rack and the
    /// tail (root): writes at a fixed rate, a rack killed, the longest stretch without a
    /// completed write. Writes OUT/results.csv and OUT/summary.md.
    Failover(failover::FailoverArgs),
}

/// Runs `pegasus experiment`.
pub fn run(args: ExperimentArgs) -> Result<ExitCode> {
    rack::catch_interrupts();
    match args.command {
        ExperimentCommand::Skew(args) => skew::run(args),
        ExperimentCommand::Balance(args) => balance::run(args),
        ExperimentCommand::HotKeys(args) => hot_keys::run(args),
        ExperimentCommand::Reaction(args) => reaction::run(args),
        ExperimentCommand::StoreCeiling(args) => ceiling::run(args),
        ExperimentCommand::Faults(args) => faults::run(args),
        ExperimentCommand::Failover(args) => failover::run(args),
    }
}

/// Prints `value` as one JSON line (the experiments' output; `jq` reads it).
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
