//! `pegasus switch`: run the XDP switch on a ToR's ports, or query a running one.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use pegasus_common::wire::DEFAULT_PORT;
use pegasus_control::switch::{
    AttachMode, Switch, SwitchSettings,
    admin::{self, SwitchHandle},
};
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SwitchArgs {
    #[command(subcommand)]
    command: Option<SwitchCommand>,
    #[command(flatten)]
    run: RunArgs,
}

/// Without a subcommand: load the program, attach it to --ports and run until Ctrl-C/SIGTERM,
/// then detach.
#[derive(Args)]
struct RunArgs {
    /// The ToR's ports, comma-separated (e.g. s0,s1,c0). The program forwards between them.
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<String>,
    /// XDP attach mode: native (driver) or skb (generic, works everywhere, slower).
    #[arg(long, default_value = "native")]
    mode: AttachMode,
    /// The stores' UDP port: only packets to or from it are Pegasus packets.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    store_port: u16,
    /// The epoch stamped into the high 16 bits of every version.
    #[arg(long, default_value_t = 1)]
    epoch: u16,
    /// Serve status and counters on this Unix socket.
    #[arg(long)]
    admin: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SwitchCommand {
    /// Print a running switch's counters, ports, epoch and version counter.
    Status {
        /// The switch's admin socket (`pegasus lab` puts it in the lab's directory).
        #[arg(long, conflicts_with = "lab", required_unless_present = "lab")]
        admin: Option<PathBuf>,
        /// Or: the lab whose switch to ask.
        #[arg(long)]
        lab: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: SwitchArgs) -> Result<ExitCode> {
    match args.command {
        Some(SwitchCommand::Status { admin, lab, json }) => {
            super::init_logging("warn");
            let path = match (admin, lab) {
                (Some(p), _) => p,
                (None, Some(name)) => pegasus_control::lab::load(&name)?
                    .admin_socket
                    .with_context(|| format!("lab {name:?} runs no XDP switch"))?,
                (None, None) => bail!("give --admin PATH or --lab NAME"),
            };
            let status = super::block_on(1, async move { admin::status(&path).await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            super::init_logging("info");
            serve(args.run)
        }
    }
}

fn serve(args: RunArgs) -> Result<ExitCode> {
    let mut switch = Switch::load(SwitchSettings {
        store_port: args.store_port,
        epoch: args.epoch,
    })?;
    for port in &args.ports {
        switch.attach(port, args.mode)?;
    }
    let handle = Arc::new(SwitchHandle {
        switch: Mutex::new(switch),
        store_port: args.store_port,
        epoch: args.epoch,
    });
    let admin_path = args.admin.clone();
    let served = handle.clone();
    super::block_on(1, async move {
        let admin_task = admin_path
            .clone()
            .map(|path| tokio::spawn(admin::serve(path, served)));
        tracing::info!(ports = ?args.ports, mode = ?args.mode, store_port = args.store_port, epoch = args.epoch, "switch running");
        let admin_failed = async {
            match admin_task {
                Some(task) => match task.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow::anyhow!("admin socket closed"),
                    Err(e) => anyhow::anyhow!("admin task: {e}"),
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = super::shutdown_signal() => {}
            e = admin_failed => return Err(e),
        }
        Ok(())
    })?;
    let mut switch = handle.switch.lock().expect("switch mutex poisoned");
    let counters = switch.counters()?;
    tracing::info!(counters = %serde_json::to_string(&counters)?, "switch stopping");
    switch.detach_all()?;
    if let Some(path) = args.admin {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &admin::Status) {
    println!("ports:           {}", s.ports.join(", "));
    println!("store port:      {}", s.store_port);
    println!("epoch:           {}", s.epoch);
    println!("version counter: {}", s.version_counter);
    println!("counters:");
    for (name, value) in &s.counters.0 {
        println!("  {name:<18} {value:>12}");
    }
}
