//! `pegasus experiment store-ceiling`: one store's ceiling on one core. A rack with one store
//! (one worker thread, pinned to CPU 1) and two client namespaces whose load generators
//! (pinned to CPU 0) run closed loops of workload A (50% writes). Reports the requests per
//! second served, the store's CPU utilisation over the run and their ratio: the ceiling per
//! core when the clients, not the store, are the limit. One JSON line.

use super::{
    print_json,
    rack::{self, BenchRun, Rack},
};
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use pegasus_control::lab::{self, Dataplane};
use serde::Serialize;
use std::{process::ExitCode, time::Instant};

/// The CPUs of the store and of the clients.
const STORE_CPU: usize = 1;
const CLIENTS_CPU: usize = 0;
/// Client namespaces driving the store.
const CLIENTS: u8 = 2;

#[derive(Args)]
pub struct CeilingArgs {
    /// What forwards on the ToR.
    #[arg(long, default_value = "xdp")]
    dataplane: Dataplane,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Requests outstanding per client.
    #[arg(long, default_value_t = 128)]
    concurrency: u32,
    /// Keys in the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
}

#[derive(Serialize)]
struct CeilingRun {
    dataplane: Dataplane,
    requests_per_second: f64,
    store_cpu_utilisation: f64,
    ceiling_estimate_per_core: Option<f64>,
    errors: u64,
}

pub fn run(args: CeilingArgs) -> Result<ExitCode> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        cpus > STORE_CPU,
        "the experiment needs at least {} CPUs",
        STORE_CPU + 1
    );
    let mut spec = rack::spec("ceil", 1, None, args.dataplane, Some(0));
    spec.clients = CLIENTS;
    let rack = Rack::up(spec)?;
    rack.load(args.keys)?;
    let store = store_pid(&rack)?;
    pin(store, STORE_CPU)?;
    // The load generators inherit this process's CPU.
    pin(0, CLIENTS_CPU)?;
    let run = BenchRun {
        concurrency: args.concurrency,
        read_ratio: 0.5,
        ..BenchRun::closed(None, args.seconds)
    };
    let ticks_before = cpu_ticks(store)?;
    let started = Instant::now();
    let summaries = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (rack, run) = (&rack, &run);
                scope.spawn(move || rack.run(client, args.keys, run))
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a load generator thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let utilisation = (cpu_ticks(store)? - ticks_before) as f64 / ticks_per_second / elapsed;
    let served: f64 = summaries.iter().map(|s| s.ops_per_second).sum();
    print_json(&CeilingRun {
        dataplane: args.dataplane,
        requests_per_second: served,
        store_cpu_utilisation: utilisation,
        ceiling_estimate_per_core: (utilisation > 0.0).then(|| served / utilisation),
        errors: summaries.iter().map(|s| s.errors).sum(),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The pid of the rack's store (the only process in its namespace).
fn store_pid(rack: &Rack) -> Result<i32> {
    let ns = lab::server_ns(&rack.spec.name, 0);
    let pids = lab::netns::ip(&["netns", "pids", &ns])?;
    let mut pids = pids.lines().filter_map(|l| l.trim().parse::<i32>().ok());
    match (pids.next(), pids.next()) {
        (Some(pid), None) => Ok(pid),
        _ => bail!("expected one process in {ns}"),
    }
}

/// Pins `pid` (0: this process) to `cpu`.
fn pin(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it for cpu < 1024.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    ensure!(
        rc == 0,
        "pinning {pid} to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// User plus system time `pid` has run, in clock ticks.
fn cpu_ticks(pid: i32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("an unreadable /proc stat")?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of stat(5), counted here from field 3 (the state).
    let tick = |i: usize| -> Result<u64> { Ok(fields.get(i).context("a short stat")?.parse()?) };
    Ok(tick(11)? + tick(12)?)
}
