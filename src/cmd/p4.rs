//! `pegasus p4`: the control plane of a P4 rack (docs/p4.md).

use anyhow::Result;
use clap::{Args, Subcommand};
use pegasus_control::p4;
use std::{path::PathBuf, process::ExitCode};

#[derive(Args)]
pub struct P4Args {
    #[command(subcommand)]
    command: P4Command,
}

#[derive(Subcommand)]
enum P4Command {
    /// Print the simple_switch_CLI commands that load a rack into the v1model program
    /// (p4/v1model/pegasus.p4): configuration, port roles, routes, servers, hot keys. Pipe
    /// them into `simple_switch_CLI --thrift-port PORT`.
    Entries {
        /// The rack: a TOML file with the epoch, policy, replication, the ports with the host
        /// behind each, and the hot keys (example: p4/tests/rack.toml).
        #[arg(long)]
        rack: PathBuf,
    },
    /// Print p4/include/constants.p4 as pegasus_common defines it (the committed file must
    /// be the same; a test checks).
    Constants,
}

pub fn run(args: P4Args) -> Result<ExitCode> {
    match args.command {
        P4Command::Entries { rack } => {
            print!("{}", p4::bmv2_entries(&p4::P4Rack::load(&rack)?)?);
        }
        P4Command::Constants => print!("{}", p4::constants()),
    }
    Ok(ExitCode::SUCCESS)
}
