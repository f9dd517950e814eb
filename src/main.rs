//! `pegasus`: one binary for every part of the system. Each subcommand is a thin layer over a
//! library crate: the store (`pegasus-store`), the switch daemon and the lab
//! (`pegasus-control`), the load generator, histories and experiments (`pegasus-bench`).

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// An in-network coherence directory for skewed key-value workloads (Pegasus, OSDI 2020),
/// with an XDP switch, UDP stores and an emulated rack on one host.
#[derive(Parser)]
#[command(name = "pegasus", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage server (in-memory, versioned values over UDP).
    Store(cmd::store::StoreArgs),
    /// Read and write keys of a rack, or verify a rack end to end.
    Kv(cmd::kv::KvArgs),
    /// Run the XDP switch on a ToR's ports, or ask a running one for its state.
    Switch(cmd::switch::SwitchArgs),
    /// A YCSB-style load generator: load a key space, then drive it with reads and updates
    /// (workloads a, b, c; uniform, Zipf or hotspot keys; closed or open loop).
    Bench(pegasus_bench::loadgen::BenchArgs),
    /// Run the experiments that compare Pegasus with its alternatives (lab racks, root).
    Experiment(pegasus_bench::experiment::ExperimentArgs),
    /// Record concurrent client histories against a rack and check them for
    /// linearizability.
    History(pegasus_bench::history::HistoryArgs),
    /// Build, use and remove an emulated rack of network namespaces on this host.
    Lab(cmd::lab::LabArgs),
    /// A chain of racks as its membership in etcd describes it.
    Chain(cmd::chain::ChainArgs),
    /// The switch as a P4 program: the control plane of a P4 rack, the generated constants.
    P4(cmd::p4::P4Args),
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`pegasus ... | head`) as command-line tools do.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    // Daemons log what they do; commands only what goes wrong.
    cmd::init_logging(match &cli.command {
        Command::Store(_) => "info",
        Command::Switch(args) if args.runs_daemon() => "info",
        _ => "warn",
    });
    let result = match cli.command {
        Command::Store(args) => cmd::store::run(args),
        Command::Kv(args) => cmd::kv::run(args),
        Command::Switch(args) => cmd::switch::run(args),
        Command::Lab(args) => cmd::lab::run(args),
        Command::Chain(args) => cmd::chain::run(args),
        Command::P4(args) => cmd::p4::run(args),
        Command::History(args) => pegasus_bench::history::run(args),
        Command::Bench(args) => pegasus_bench::loadgen::run(args),
        Command::Experiment(args) => pegasus_bench::experiment::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
