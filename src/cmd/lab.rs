//! `pegasus lab`: an emulated rack on this host.

use anyhow::{Result, ensure};
use clap::{Args, Subcommand};
use pegasus_control::lab::{self, LabSpec};
use std::{process::ExitCode, time::Duration};

/// Longest `restart-switch --down-ms`.
const DOWN_MS_MAX: u64 = 600_000;

#[derive(Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build a rack: a ToR namespace, one namespace per server and client, veth pairs,
    /// addresses and routes; start a store per server and the switch on the ToR. Writes the
    /// cluster file to /run/pegasus/lab/NAME/cluster.toml (PEGASUS_LAB_DIR moves it).
    Up(LabSpec),
    /// Remove everything a lab made: processes, namespaces, files. Safe to repeat.
    Down {
        #[arg(long)]
        name: String,
    },
    /// Run a command in a client namespace with PEGASUS_CLUSTER set, e.g.
    /// `pegasus lab run --name r1 -- pegasus kv verify`.
    Run {
        #[arg(long)]
        name: String,
        /// Which client namespace.
        #[arg(long, default_value_t = 0)]
        client: u8,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Crash the lab's switch (SIGKILL: its XDP program is detached and the rack forwards
    /// nothing), wait, and start it again with the same arguments and state file, as a fault
    /// experiment. The restarted switch starts a new epoch and brings the newest version of
    /// every key that was hot home before it forwards again (docs/controller.md).
    RestartSwitch {
        #[arg(long)]
        name: String,
        /// How long the switch stays down, in milliseconds, from the kill.
        #[arg(long, default_value_t = 200)]
        down_ms: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a lab's namespaces, processes and switch counters.
    Status {
        #[arg(long)]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: LabArgs) -> Result<ExitCode> {
    match args.command {
        LabCommand::Up(spec) => {
            let exe = std::env::current_exe()?;
            let state = lab::up(&spec, &exe)?;
            println!(
                "lab {} is up: {} servers, {} clients, {:?} dataplane",
                spec.name, spec.servers, spec.clients, spec.dataplane
            );
            println!("cluster file: {}", state.cluster_file.display());
            println!(
                "try: pegasus lab run --name {} -- pegasus kv verify --keys 1000",
                spec.name
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { name } => {
            let report = lab::down(&name)?;
            println!(
                "lab {name} is down: {} processes stopped, {} namespaces removed",
                report.processes_stopped,
                report.namespaces_removed.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Run {
            name,
            client,
            command,
        } => {
            let status = lab::run(&name, client, &command)?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        LabCommand::RestartSwitch {
            name,
            down_ms,
            json,
        } => {
            ensure!(
                down_ms <= DOWN_MS_MAX,
                "--down-ms must be at most {DOWN_MS_MAX}"
            );
            let exe = std::env::current_exe()?;
            let restart = lab::restart_switch(&name, Duration::from_millis(down_ms), &exe)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&restart)?);
            } else {
                println!(
                    "switch of lab {name} restarted: pid {} killed, down {} ms, pid {} \
                     forwarding after {} ms",
                    restart.killed_pid, restart.down_ms, restart.pid, restart.recovery_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { name, json } => {
            let status = pegasus_bench::block_on(1, lab::status(&name))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("lab {} ({:?} dataplane)", status.name, status.dataplane);
            println!("namespaces: {}", status.namespaces.join(" "));
            for (role, pid, alive) in &status.processes {
                println!(
                    "  {role:<10} pid {pid:<8} {}",
                    if *alive { "running" } else { "DEAD" }
                );
            }
            if let Some(s) = &status.switch {
                println!("switch counters:");
                for (name, value) in &s.counters.0 {
                    println!("  {name:<18} {value:>12}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
