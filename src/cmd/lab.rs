//! `pegasus lab`: an emulated rack on this host.

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand, ValueEnum};
use pegasus_control::lab::{
    self, Host, LabSpec,
    fault::{DirectionFaults, Injector, LinkPlan, LinkReport},
};
use serde::Serialize;
use std::{process::ExitCode, time::Duration};

/// Longest `restart-switch --down-ms` (and `restart-etcd`'s).
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
        /// In a chain of racks, whose switch (0 = the head).
        #[arg(long, default_value_t = 0)]
        rack: u8,
        /// How long the switch stays down, in milliseconds, from the kill.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=DOWN_MS_MAX))]
        down_ms: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Crash a rack of a chain (SIGKILL to its switch, with its controller, and to its
    /// stores), wait until etcd's configuration goes on without it (its lease expired and a
    /// live controller took it out), and rewrite the lab's cluster file to the chain left.
    /// Prints how long the reconfiguration took.
    KillRack {
        #[arg(long)]
        name: String,
        /// The rack's id (0 = the rack that was the head when the lab came up).
        #[arg(long)]
        rack: u8,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a rack to a chain as its new tail, under load if there is load: build and start
    /// it, mark it joining in etcd (the tail copies it every key and forwards it every new
    /// write; reads stay with the tail), wait until its controller has made it the tail, and
    /// rewrite the lab's cluster file. Prints how long each step took.
    AddRack {
        #[arg(long)]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a chain's etcd, wait, and start it again with its data: meanwhile the chain
    /// serves with the configuration it last read (and says so in its logs), and no rack can
    /// be taken out or join.
    RestartEtcd {
        #[arg(long)]
        name: String,
        /// How long etcd stays down, in milliseconds, from the kill.
        #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(0..=DOWN_MS_MAX))]
        down_ms: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inject network faults on links of a running lab (netem's drop, duplicate, delay,
    /// jitter and reorder, which this kernel lacks), seeded, until --seconds pass or the
    /// command is interrupted; then print what was done. Faults apply where the link meets
    /// its host: --direction to-switch faults what the host sends, from-switch what it
    /// receives. Example: `pegasus lab fault --name r1 --link c0 --dup 0.05 --dup-delay-ms
    /// 10-30 --seconds 20`.
    Fault(FaultArgs),
    /// Show a lab's namespaces, processes and switch counters.
    Status {
        #[arg(long)]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `pegasus lab fault`'s flags.
#[derive(Args)]
struct FaultArgs {
    /// The lab.
    #[arg(long)]
    name: String,
    /// A link, by its host: `sI` (server I) or `cJ` (client J), or, in a chain of racks,
    /// `lR` (rack R's link to the fabric between racks: to-switch is the chain messages
    /// coming into the rack, from-switch those leaving it); repeat for several.
    #[arg(long = "link", required = true, value_parser = parse_link)]
    links: Vec<LinkName>,
    /// Which way the faults apply.
    #[arg(long, value_enum, default_value = "both")]
    direction: WhichWay,
    /// Share of packets dropped (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Share of packets duplicated (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// How late a duplicate follows its packet, in milliseconds: `MS` or `LO-HI` (uniform).
    #[arg(long, default_value = "0", value_parser = parse_ms_range)]
    dup_delay_ms: (Duration, Duration),
    /// Delay of every packet, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Plus or minus this much, uniformly, in milliseconds (reorders packets); at most
    /// --delay-ms.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// With --delay-ms: share of packets sent at once instead of delayed (netem's reorder).
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Seed of every decision and delay (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long to inject, in seconds; 0: until interrupted (Ctrl-C, SIGTERM).
    #[arg(long, default_value_t = 0.0)]
    seconds: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum WhichWay {
    Both,
    ToSwitch,
    FromSwitch,
}

/// A link of a lab: a host's, or one between two racks of a chain.
#[derive(Clone, Copy, Debug)]
enum LinkName {
    Host(Host),
    Chain(u8),
}

impl LinkName {
    fn label(self) -> String {
        match self {
            LinkName::Host(host) => host.addressing().tor_port,
            LinkName::Chain(rack) => format!("l{rack}"),
        }
    }
}

fn parse_link(text: &str) -> Result<LinkName, String> {
    let bad = || {
        format!("{text:?} is not a link: sI (server I), cJ (client J) or lR (rack R's chain link)")
    };
    let (kind, index) = text.split_at_checked(1).ok_or_else(bad)?;
    let index: u8 = index.parse().map_err(|_| bad())?;
    match kind {
        "s" => Ok(LinkName::Host(Host::Server(index))),
        "c" => Ok(LinkName::Host(Host::Client(index))),
        "l" => Ok(LinkName::Chain(index)),
        _ => Err(bad()),
    }
}

fn parse_ms_range(text: &str) -> Result<(Duration, Duration), String> {
    let ms = |t: &str| -> Result<Duration, String> {
        let v: f64 = t
            .trim()
            .parse()
            .map_err(|_| format!("{t:?} is not a number of milliseconds"))?;
        if !(0.0..=lab::fault::DELAY_MAX.as_secs_f64() * 1000.0).contains(&v) {
            return Err(format!("{v} ms is outside 0..={:?}", lab::fault::DELAY_MAX));
        }
        Ok(Duration::from_secs_f64(v / 1000.0))
    };
    match text.split_once('-') {
        Some((lo, hi)) => Ok((ms(lo)?, ms(hi)?)),
        None => ms(text).map(|d| (d, d)),
    }
}

/// What `lab fault` reports: its settings and, per link, what the injector did.
#[derive(Serialize)]
struct FaultOutcome {
    seed: u64,
    seconds: f64,
    links: Vec<(String, LinkReport)>,
}

fn inject(args: FaultArgs) -> Result<ExitCode> {
    let state = lab::load(&args.name)?;
    let faults = DirectionFaults {
        drop: args.drop,
        duplicate: args.dup,
        duplicate_delay: args.dup_delay_ms,
        delay: Duration::from_secs_f64(args.delay_ms.max(0.0) / 1000.0),
        jitter: Duration::from_secs_f64(args.jitter_ms.max(0.0) / 1000.0),
        reorder: args.reorder,
    };
    ensure!(
        args.seconds >= 0.0 && args.seconds.is_finite(),
        "--seconds must be 0 or more"
    );
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut injectors = Vec::new();
    for (i, &link) in args.links.iter().enumerate() {
        let exists = match link {
            LinkName::Host(Host::Server(s)) => s < state.spec.servers,
            LinkName::Host(Host::Client(c)) => c < state.spec.clients,
            LinkName::Chain(rack) => state.spec.racks > 1 && rack < state.spec.racks,
        };
        if !exists {
            bail!("lab {} has no link {}", args.name, link.label());
        }
        let pick = |wanted: bool| {
            if wanted {
                faults.clone()
            } else {
                DirectionFaults::default()
            }
        };
        let plan = LinkPlan {
            to_switch: pick(!matches!(args.direction, WhichWay::FromSwitch)),
            from_switch: pick(!matches!(args.direction, WhichWay::ToSwitch)),
            // Each link draws its own faults from the one seed.
            seed: pegasus_common::fault::splitmix64(seed ^ i as u64),
        };
        let endpoints = match link {
            LinkName::Host(Host::Client(j)) if state.spec.racks > 1 => {
                lab::chain::client_link(&args.name, j)
            }
            LinkName::Host(host) => host.link(&args.name),
            LinkName::Chain(rack) => lab::chain::chain_link(&args.name, rack),
        };
        let injector = Injector::start(&endpoints, &plan)
            .with_context(|| format!("faults on {}", link.label()))?;
        injectors.push((link.label(), injector));
    }
    if !args.json {
        eprintln!(
            "injecting on {} link(s) with seed {seed}{}",
            injectors.len(),
            if args.seconds > 0.0 {
                format!(" for {} s", args.seconds)
            } else {
                " until interrupted".into()
            }
        );
    }
    let started = std::time::Instant::now();
    pegasus_bench::block_on(1, async {
        let interrupted = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        };
        let waited: std::io::Result<()> = if args.seconds > 0.0 {
            tokio::select! {
                r = interrupted => r,
                _ = tokio::time::sleep(Duration::from_secs_f64(args.seconds)) => Ok(()),
            }
        } else {
            interrupted.await
        };
        anyhow::Ok(waited?)
    })?;
    let mut links = Vec::new();
    for (port, injector) in injectors {
        links.push((port, injector.stop()?));
    }
    let outcome = FaultOutcome {
        seed,
        seconds: started.elapsed().as_secs_f64(),
        links,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        println!("seed {} ({:.1} s)", outcome.seed, outcome.seconds);
        for (port, r) in &outcome.links {
            for (way, d) in [("to switch", r.to_switch), ("from switch", r.from_switch)] {
                println!(
                    "  {port} {way:<11} packets {:>8}  dropped {:>6}  duplicated {:>6}  \
                     held {:>6}  relayed {:>6}  not carried {:>4}",
                    d.packets, d.dropped, d.duplicated, d.held, d.relayed, d.not_carried
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: LabArgs) -> Result<ExitCode> {
    match args.command {
        LabCommand::Fault(args) => inject(args),
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
            rack,
            down_ms,
            json,
        } => {
            let exe = std::env::current_exe()?;
            let down = Duration::from_millis(down_ms);
            let restart = lab::restart_rack_switch(&name, rack, down, &exe)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&restart)?);
            } else {
                println!(
                    "switch of lab {name} (rack {rack}) restarted: pid {} killed, down {} ms, \
                     pid {} forwarding after {} ms",
                    restart.killed_pid, restart.down_ms, restart.pid, restart.recovery_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::RestartEtcd {
            name,
            down_ms,
            json,
        } => {
            let restart = lab::restart_etcd(&name, Duration::from_millis(down_ms))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&restart)?);
            } else {
                println!(
                    "etcd of lab {name} restarted: down {} ms, serving after {} ms",
                    restart.down_ms, restart.recovery_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::AddRack { name, json } => {
            let exe = std::env::current_exe()?;
            let added = lab::chain::add_rack(&name, &exe)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                println!(
                    "rack {} joined lab {name}'s chain as its tail: up in {} ms, every key \
                     copied and the tail after {} ms more: epoch {}, racks {:?} (head first)",
                    added.rack, added.started_ms, added.joined_ms, added.epoch, added.racks
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::KillRack { name, rack, json } => {
            let killed = lab::chain::kill_rack(&name, rack)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&killed)?);
            } else {
                println!(
                    "rack {rack} of lab {name} killed ({}); the chain went on without it after {} ms: \
                     epoch {}, racks {:?} (head first)",
                    killed.killed.join(", "),
                    killed.reconfigured_ms,
                    killed.epoch,
                    killed.racks
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
            if status.racks.is_empty() {
                if let Some(s) = &status.switch {
                    println!("switch counters:");
                    for (name, value) in &s.counters.0 {
                        println!("  {name:<18} {value:>12}");
                    }
                }
            } else {
                // A chain: one column of counters per rack that runs, by rack id.
                let running: Vec<(usize, &pegasus_control::service::admin::Status)> = status
                    .racks
                    .iter()
                    .enumerate()
                    .filter_map(|(r, s)| s.as_ref().map(|s| (r, s)))
                    .collect();
                print!("{:<20}", "switch counters");
                for (rack, _) in &running {
                    print!(" {:>12}", format!("rack {rack}"));
                }
                println!();
                if let Some((_, first)) = running.first() {
                    for name in first.counters.0.keys() {
                        print!("  {name:<18}");
                        for (_, s) in &running {
                            print!(" {:>12}", s.counters.0.get(name).copied().unwrap_or(0));
                        }
                        println!();
                    }
                }
                let killed: Vec<String> = (0..status.racks.len())
                    .filter(|&r| status.racks[r].is_none())
                    .map(|r| r.to_string())
                    .collect();
                if !killed.is_empty() {
                    println!("racks killed: {}", killed.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
