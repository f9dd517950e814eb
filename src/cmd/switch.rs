//! `pegasus switch`: run the XDP switch and its controller on a ToR's ports, or talk to a
//! running one (status, hot keys).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use pegasus_common::switch::SAMPLE_PERIOD_MAX;
use pegasus_control::{
    controller::HotKey,
    service::{
        admin::{self, Request},
        config::DaemonConfig,
        daemon,
    },
    testkit::{
        capacity::{self, CapacityOptions},
        cost::{self, CostOptions},
    },
};
use std::{path::PathBuf, process::ExitCode};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SwitchArgs {
    #[command(subcommand)]
    command: Option<SwitchCommand>,
    /// Read the whole configuration from this TOML file instead of flags (its fields are the
    /// flags' names with `_` for `-`; docs/architecture.md shows one).
    #[arg(long, value_name = "FILE", conflicts_with = "DaemonConfig")]
    config: Option<PathBuf>,
    /// Without a subcommand: load the program, attach it to --ports and run the controller
    /// until Ctrl-C/SIGTERM, then detach.
    #[command(flatten)]
    run: DaemonConfig,
}

/// Where to find a running switch.
#[derive(Args)]
struct Target {
    /// The switch's admin socket (`pegasus lab` puts it in the lab's directory).
    #[arg(long, conflicts_with = "lab", required_unless_present = "lab")]
    admin: Option<PathBuf>,
    /// Or: the lab whose switch to ask.
    #[arg(long)]
    lab: Option<String>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf> {
        match (&self.admin, &self.lab) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(name)) => pegasus_control::lab::load(name)?
                .admin_socket
                .with_context(|| format!("lab {name:?} runs no XDP switch")),
            (None, None) => bail!("give --admin PATH or --lab NAME"),
        }
    }
}

#[derive(Subcommand)]
enum SwitchCommand {
    /// Print a running switch's counters, ports, epoch, version counter and server loads.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage the directory of hot keys by hand.
    Hot {
        #[command(subcommand)]
        command: HotCommand,
    },
    /// Measure the program's cost per packet on each path (cold forward, cold write, hot read,
    /// hot write, retried hot write, reply update) through BPF_PROG_TEST_RUN, next to a
    /// minimal program (parse Ethernet/IPv4/UDP, swap addresses, XDP_TX) measured in the same
    /// rounds. Runs in a namespace of its own, attached to nothing. Needs root.
    #[command(alias = "bench")]
    Cost(CostArgs),
    /// Measure the ToR's forwarding capacity in packets per second on real veth ports: the
    /// kernel's IPv4 forwarding, the minimal XDP forwarder and the switch (cold and hot GETs),
    /// with the ToR's receive work on one CPU and the traffic generator (in the kernel, a test
    /// run with live frames) and its sink on the other. Makes three namespaces of its own.
    /// Needs root and two CPUs.
    Capacity(CapacityArgs),
}

#[derive(Args)]
struct CapacityArgs {
    /// Seconds the generator sends per measurement (flat out), 0.1 to 10.
    #[arg(long, default_value_t = CapacityOptions::default().seconds)]
    seconds: f64,
    /// Measurements of every forwarder, interleaved; medians are reported.
    #[arg(long, default_value_t = CapacityOptions::default().rounds,
          value_parser = clap::value_parser!(u32).range(1..=capacity::ROUNDS_MAX as i64))]
    rounds: u32,
    /// Sample one request in this many, as the running switch does (its --sample-period);
    /// a thread drains the samples as the controller would. 0: no sampling.
    #[arg(long, default_value_t = CapacityOptions::default().sample_period,
          value_parser = clap::value_parser!(u16).range(0..=SAMPLE_PERIOD_MAX as i64))]
    sample_period: u16,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CostArgs {
    /// Packets per measurement of a path (run in batches of 250 per test-run call).
    #[arg(long, default_value_t = CostOptions::default().packets)]
    packets: u32,
    /// Measurements of every path, interleaved with the baseline's; medians are reported.
    #[arg(long, default_value_t = CostOptions::default().rounds)]
    rounds: u32,
    /// Sample one request in this many, as the running switch does (its --sample-period);
    /// 0 measures the paths without sampling.
    #[arg(long, alias = "sample-rate", default_value_t = CostOptions::default().sample_period,
          value_parser = clap::value_parser!(u16).range(0..=SAMPLE_PERIOD_MAX as i64))]
    sample_period: u16,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum HotCommand {
    /// Make keys hot: install each with its home as the only replica, then replicate it.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Make keys cold: bring home up to date, then remove them from the directory.
    Del {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List the hot keys with their replica sets, versions and counters.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

impl SwitchArgs {
    /// Whether these arguments run the switch (rather than ask a running one).
    pub fn runs_daemon(&self) -> bool {
        self.command.is_none()
    }
}

pub fn run(args: SwitchArgs) -> Result<ExitCode> {
    let Some(command) = args.command else {
        let config = match &args.config {
            Some(path) => DaemonConfig::load(path)?,
            None => args.run,
        };
        daemon::run(config)?;
        return Ok(ExitCode::SUCCESS);
    };
    match command {
        SwitchCommand::Status { target, json } => {
            let path = target.socket()?;
            let status = pegasus_bench::block_on(1, async move { admin::status(&path).await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        SwitchCommand::Hot { command } => {
            let (target, request, json) = match command {
                HotCommand::Add { target, keys } => (target, Request::HotAdd { keys }, false),
                HotCommand::Del { target, keys } => (target, Request::HotDel { keys }, false),
                HotCommand::List { target, json } => (target, Request::HotList, json),
            };
            let path = target.socket()?;
            let keys =
                pegasus_bench::block_on(1, async move { admin::hot(&path, &request).await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print_hot(&keys);
            }
        }
        SwitchCommand::Cost(args) => cost(args)?,
        SwitchCommand::Capacity(args) => capacity(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a measurement on a thread of its own: it moves its thread into namespaces of its own,
/// which must not be this one's.
fn on_its_own_thread<T: Send + 'static>(
    run: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(run)
        .join()
        .map_err(|_| anyhow::anyhow!("the measurement thread panicked"))?
}

fn cost(args: CostArgs) -> Result<()> {
    let options = CostOptions {
        packets: args.packets,
        rounds: args.rounds,
        sample_period: args.sample_period,
    };
    let report = on_its_own_thread(move || cost::run(options))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<16} {:>9} {:>11} {:>7} {:>12} {:>9} {:>7}  what",
        "path", "ns/packet", "baseline ns", "ratio", "forwarder ns", "vs fwd", "target"
    );
    for p in &report.paths {
        println!(
            "{:<16} {:>9.1} {:>11.1} {:>7.2} {:>12.1} {:>9.2} {:>6.1}{}  {}",
            p.path,
            p.ns_per_packet,
            p.baseline_ns_per_packet,
            p.ratio,
            p.forwarder_ns_per_packet,
            p.forwarder_ratio,
            p.target_ratio,
            if p.meets_target { " " } else { "!" },
            p.what
        );
    }
    println!(
        "medians of {} rounds of {} packets per path; ratio = path / minimal program (parse, \
         swap, XDP_TX) in the same round; vs fwd = path / minimal forwarder (the same, then a \
         DEVMAP redirect, as every forwarded packet), the floor the target applies to (! = \
         above it)",
        report.rounds, report.packets
    );
    if let Some(c) = &report.counter_contention {
        println!(
            "version counter fetch-add: {:.1} ns on one CPU, {:.1} ns with {} CPUs adding at \
             once (minimal program {:.1} / {:.1} ns, with the add {:.1} / {:.1} ns)",
            c.add_alone_ns,
            c.add_contended_ns,
            c.cpus,
            c.reflect_alone_ns,
            c.reflect_contended_ns,
            c.stamp_alone_ns,
            c.stamp_contended_ns
        );
    }
    Ok(())
}

fn capacity(args: CapacityArgs) -> Result<()> {
    let options = CapacityOptions {
        seconds: args.seconds,
        rounds: args.rounds,
        sample_period: args.sample_period,
    };
    let report = on_its_own_thread(move || capacity::run(options))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<14} {:>12} {:>12} {:>9} {:>11} {:>13} {:>9} {:>9}  what",
        "forwarder",
        "packets/s",
        "offered/s",
        "ToR busy",
        "ToR ns/pkt",
        "capacity/CPU",
        "x kernel",
        "rate x"
    );
    for f in &report.forwarders {
        println!(
            "{:<14} {:>11.0}{} {:>12.0} {:>8.0}% {:>11.0} {:>13.0} {:>9.2} {:>9.2}  {}",
            f.forwarder,
            f.packets_per_second,
            if f.lower_bound { "+" } else { " " },
            f.offered_per_second,
            f.tor_cpu_busy * 100.0,
            f.tor_ns_per_packet,
            f.capacity_per_cpu,
            f.capacity_ratio_to_kernel,
            f.rate_ratio_to_kernel,
            f.what
        );
    }
    println!(
        "medians of {} rounds of {} s per forwarder; the ToR's receive work on CPU {}, the \
         generator and the sink on CPU {}. ToR ns/pkt = the ToR's receive thread's CPU time \
         per frame the sink counted; capacity/CPU = frames per second one CPU forwards at \
         that cost; x kernel = capacity/CPU over the kernel's in the same round; rate x = \
         packets/s over the kernel's; + = the sink counted at least 99% of what was sent \
         (the generator, not the ToR, was the limit)",
        report.rounds, report.seconds, report.tor_cpu, report.generator_cpu
    );
    Ok(())
}

fn print_status(s: &admin::Status) {
    println!("ports:           {}", s.ports.join(", "));
    println!("store port:      {}", s.store_port);
    println!("epoch:           {}", s.epoch);
    println!("version counter: {}", s.version_counter);
    println!("hot keys:        {}", s.hot_keys);
    if !s.server_loads.is_empty() {
        let loads: Vec<String> = s
            .server_loads
            .iter()
            .map(|(id, l)| format!("{id}:{l}"))
            .collect();
        println!("server loads:    {}", loads.join(" "));
    }
    let d = &s.detection;
    println!(
        "detection:       {} samples ({} discarded, 1 in {} sampled now), {} intervals, {} adds, \
         {} evicts, {} failures, {} copies restored",
        d.samples,
        d.samples_discarded,
        d.sample_period,
        d.epochs,
        d.adds,
        d.evicts,
        d.failures,
        d.restored
    );
    println!("counters:");
    for (name, value) in &s.counters.0 {
        println!("  {name:<18} {value:>12}");
    }
    if !s.hot.is_empty() {
        println!();
        print_hot(&s.hot);
    }
}

fn print_hot(keys: &[HotKey]) {
    println!(
        "{:<24} {:>18} {:>5} {:>6} {:<20} {:>16} {:>10} {:>10}",
        "key", "keyhash", "home", "target", "replicas", "version", "reads", "writes"
    );
    for k in keys {
        let replicas: Vec<String> = k.replicas.iter().map(u8::to_string).collect();
        let name = k.key.clone().unwrap_or_else(|| "?".into());
        println!(
            "{:<24} {:>#18x} {:>5} {:>6} {:<20} {:>16} {:>10} {:>10}{}",
            name,
            k.keyhash,
            k.home,
            k.replica_target,
            replicas.join(","),
            k.ver_completed,
            k.reads,
            k.writes,
            match (k.evicting, k.cached, k.cache_hits) {
                (true, _, _) => "  (evicting)".to_owned(),
                (false, Some(cached), Some(hits)) => format!(
                    "  ({}, {hits} reads answered by the switch)",
                    if cached { "cached" } else { "not cached now" }
                ),
                _ => String::new(),
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        switch: SwitchArgs,
    }

    /// Every flag of `pegasus switch` (the daemon's) is a field of `DaemonConfig`, and every
    /// field a flag: a configuration file and a command line can say the same things.
    #[test]
    fn every_flag_is_a_field_and_every_field_a_flag() {
        let command = Cli::command();
        let flags: std::collections::BTreeSet<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|&long| long != "config")
            .map(|long| long.replace('-', "_"))
            .collect();
        let value = serde_json::to_value(DaemonConfig::default()).unwrap();
        let fields: std::collections::BTreeSet<String> =
            value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(flags, fields);
    }

    #[test]
    fn a_config_file_excludes_the_flags() {
        // The environment's cluster file is no flag: it does not conflict with a file.
        // SAFETY: no other thread of this test binary reads this variable.
        unsafe { std::env::set_var("PEGASUS_CLUSTER", "/nonexistent/cluster.toml") };
        assert!(Cli::try_parse_from(["switch", "--config", "x.toml"]).is_ok());
        // SAFETY: as above.
        unsafe { std::env::remove_var("PEGASUS_CLUSTER") };
        assert!(Cli::try_parse_from(["switch", "--config", "x.toml"]).is_ok());
        assert!(Cli::try_parse_from(["switch", "--config", "x.toml", "--ports", "s0"]).is_err());
        assert!(
            Cli::try_parse_from(["switch"]).is_err(),
            "--ports or --config"
        );
    }
}
