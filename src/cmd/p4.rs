//! `pegasus p4`: the control plane of a P4 rack (docs/p4.md).

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use pegasus_control::p4;
use std::{path::PathBuf, process::ExitCode};

#[derive(Args)]
pub struct P4Args {
    #[command(subcommand)]
    command: P4Command,
}

#[derive(Subcommand)]
enum P4Command {
    /// Print what loads a rack into a P4 program: configuration, port roles, routes,
    /// servers, hot keys. For BMv2 (p4/v1model/pegasus.p4), simple_switch_CLI commands: pipe
    /// them into `simple_switch_CLI --thrift-port PORT`. For Tofino (p4/tna/pegasus.p4), a
    /// bfrt_python script for the SDE's `bfshell -b`, with the choice tables computed by the
    /// directory's rules.
    Entries {
        /// The rack: a TOML file with the epoch, policy, replication, the ports with the host
        /// behind each, and the hot keys (example: p4/tests/rack.toml).
        #[arg(long)]
        rack: PathBuf,
        /// The P4 target.
        #[arg(long, value_enum, default_value_t = Target::Bmv2)]
        target: Target,
    },
    /// Print p4/include/constants.p4 as pegasus_common defines it (the committed file must
    /// be the same; a test checks).
    Constants,
}

/// A P4 target.
#[derive(Clone, Copy, ValueEnum)]
enum Target {
    /// BMv2's simple_switch, the v1model program.
    Bmv2,
    /// Tofino, the TNA program.
    Tofino,
}

pub fn run(args: P4Args) -> Result<ExitCode> {
    match args.command {
        P4Command::Entries { rack, target } => {
            let rack = p4::P4Rack::load(&rack)?;
            print!(
                "{}",
                match target {
                    Target::Bmv2 => p4::bmv2_entries(&rack)?,
                    Target::Tofino => p4::tofino_entries(&rack)?,
                }
            );
        }
        P4Command::Constants => print!("{}", p4::constants()),
    }
    Ok(ExitCode::SUCCESS)
}
