//! `pegasus experiment hot-keys`: how many hot keys the directory needs. For each rack size,
//! skew and number of hot keys the controller keeps (found by itself), a rack of stores with
//! an emulated capacity runs a read-only closed loop after a warm-up; one JSON line per run
//! with the busiest server over the mean, next to n·log2(n) (the theory's bound on the keys
//! that need replicating).

use super::{
    print_json,
    rack::{self, BenchRun, Rack},
};
use anyhow::{Result, ensure};
use clap::Args;
use pegasus_control::lab::Dataplane;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Args)]
pub struct HotKeysArgs {
    /// Rack sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8")]
    servers: Vec<u8>,
    /// Zipf exponents, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.99,1.2")]
    thetas: Vec<f64>,
    /// Hot keys the controller keeps, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,4,8,16,32,64")]
    hot_keys: Vec<u32>,
    /// Emulated capacity of every store, requests/s.
    #[arg(long, default_value_t = 2000)]
    capacity_ops: u32,
    /// Copies of each hot key.
    #[arg(long, default_value_t = pegasus_common::switch::REPLICATION_DEFAULT)]
    replication: u8,
    /// Seconds of warm-up (the controller finds the keys), then seconds measured.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Keys in the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
}

/// One run's line.
#[derive(Serialize)]
struct HotKeysRun {
    servers: u8,
    /// n·log2(n) for this rack.
    n_log_n: f64,
    theta: f64,
    hot_keys: u32,
    replication: u8,
    capacity_ops: u32,
    max_over_mean: f64,
    ops_per_second: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

pub fn run(args: HotKeysArgs) -> Result<ExitCode> {
    ensure!(
        !args.servers.is_empty() && !args.thetas.is_empty() && !args.hot_keys.is_empty(),
        "the sweep is empty"
    );
    for &servers in &args.servers {
        for &theta in &args.thetas {
            for &hot_keys in &args.hot_keys {
                let mut spec = rack::spec(
                    "hk",
                    servers,
                    Some(args.capacity_ops),
                    Dataplane::Xdp,
                    Some(hot_keys),
                );
                spec.replication = args.replication;
                let rack = Rack::up(spec)?;
                rack.load(args.keys)?;
                let run = BenchRun {
                    warmup: args.warmup,
                    ..BenchRun::closed(Some(theta), args.seconds)
                };
                let s = rack.run(0, args.keys, &run)?;
                let n = f64::from(servers);
                print_json(&HotKeysRun {
                    servers,
                    n_log_n: n * n.log2(),
                    theta,
                    hot_keys,
                    replication: args.replication,
                    capacity_ops: args.capacity_ops,
                    max_over_mean: s.max_over_mean,
                    ops_per_second: s.ops_per_second,
                    p50_us: s.latency_us.p50,
                    p99_us: s.latency_us.p99,
                    errors: s.errors,
                })?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
