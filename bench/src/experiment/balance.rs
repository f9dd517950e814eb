//! `pegasus experiment balance`: a rack of stores with an emulated capacity under a skewed,
//! read-only closed loop, first with no hot keys, then with the most popular keys added to
//! the directory by hand (each pushed from home to `replication - 1` more servers). One JSON
//! line per run: busiest server over the mean, throughput, latency.

use super::{
    print_json,
    rack::{self, BenchRun, Rack, SkewedRack},
};
use anyhow::{Result, ensure};
use clap::Args;
use pegasus_control::lab::Dataplane;
use serde::Serialize;
use std::{collections::BTreeMap, process::ExitCode};

#[derive(Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    rack: SkewedRack,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Copies of each hot key.
    #[arg(long, default_value_t = pegasus_common::switch::REPLICATION_DEFAULT)]
    replication: u8,
    /// The most popular keys added to the directory in the second run.
    #[arg(long, default_value_t = 16)]
    hot: u32,
    /// Keys in the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
}

/// One run's line.
#[derive(Serialize)]
struct BalanceRun {
    /// `none` or `top-N`.
    directory: String,
    theta: f64,
    capacity_ops: u32,
    replication: u8,
    max_over_mean: f64,
    ops_per_second: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
    per_server: BTreeMap<u8, u64>,
}

pub fn run(args: BalanceArgs) -> Result<ExitCode> {
    ensure!(args.hot >= 1, "--hot must be at least 1");
    let mut spec = rack::spec(
        "bal",
        args.rack.servers,
        Some(args.rack.capacity_ops),
        Dataplane::Xdp,
        Some(0), // the directory is set by hand
    );
    spec.replication = args.replication;
    let rack = Rack::up(spec)?;
    rack.load(args.keys)?;
    let run = BenchRun::closed(Some(args.rack.theta), args.seconds);
    let line = |directory: String| -> Result<()> {
        let s = rack.run(0, args.keys, &run)?;
        print_json(&BalanceRun {
            directory,
            theta: args.rack.theta,
            capacity_ops: args.rack.capacity_ops,
            replication: args.replication,
            max_over_mean: s.max_over_mean,
            ops_per_second: s.ops_per_second,
            p50_us: s.latency_us.p50,
            p99_us: s.latency_us.p99,
            errors: s.errors,
            per_server: s.per_server,
        })
    };
    line("none".into())?;
    let top: Vec<String> = (0..args.hot).map(|i| format!("user{i}")).collect();
    rack.hot_add(&top)?;
    line(format!("top-{}", args.hot))?;
    Ok(ExitCode::SUCCESS)
}
