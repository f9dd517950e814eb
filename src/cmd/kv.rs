//! `pegasus kv`: read and write keys, and `verify`, the end-to-end check of a rack.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use pegasus_client::Client;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use std::{collections::BTreeMap, process::ExitCode, sync::Arc, time::Instant};
use tokio::{sync::Semaphore, task::JoinSet};

#[derive(Args)]
pub struct KvArgs {
    #[command(flatten)]
    client: pegasus_bench::ClientArgs,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand)]
enum KvCommand {
    /// Print the value of KEY (exit status 2 if it does not exist).
    Get {
        key: String,
        /// Also print the version and the server that answered.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Write random keys with random values, read them all back and compare: the end-to-end
    /// check of a rack. Exits non-zero on any mismatch or error.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// Number of keys.
    #[arg(long, default_value_t = 2000)]
    keys: u32,
    /// Smallest value, in bytes.
    #[arg(long, default_value_t = 1)]
    value_min: usize,
    /// Largest value, in bytes.
    #[arg(long, default_value_t = 1000)]
    value_max: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seed of the keys and values (default: random). Keys are named after it.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: KvArgs) -> Result<ExitCode> {
    let cluster = args.client.cluster()?;
    let options = args.client.options();
    pegasus_bench::block_on(2, async move {
        let client = Client::connect(cluster, options).await?;
        match args.command {
            KvCommand::Get { key, verbose } => get(&client, &key, verbose).await,
            KvCommand::Put { key, value } => {
                let w = client.put(key.as_bytes(), value.as_bytes()).await?;
                println!("OK version={} server={}", w.version, w.server_id);
                Ok(ExitCode::SUCCESS)
            }
            KvCommand::Verify(v) => verify(Arc::new(client), v).await,
        }
    })
}

async fn get(client: &Client, key: &str, verbose: bool) -> Result<ExitCode> {
    let r = client.get(key.as_bytes()).await?;
    let Some(value) = r.value else {
        eprintln!("not found: {key}");
        return Ok(ExitCode::from(2));
    };
    if verbose {
        println!(
            "{} (version={} server={})",
            String::from_utf8_lossy(&value),
            r.version,
            r.server_id
        );
    } else {
        println!("{}", String::from_utf8_lossy(&value));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `kv verify` found.
#[derive(Debug, Serialize)]
pub struct VerifySummary {
    pub keys: u32,
    pub puts_ok: u32,
    pub gets_ok: u32,
    pub mismatches: u32,
    pub errors: u32,
    /// Replies per answering server id.
    pub replies_by_server: BTreeMap<u8, u32>,
    pub seconds: f64,
    /// Completed requests (puts and gets) per second over the run.
    pub ops_per_second: f64,
    pub seed: u64,
}

enum Outcome {
    Put(Result<u8, String>),
    Get(Result<(bool, u8), String>),
}

async fn verify(client: Arc<Client>, args: VerifyArgs) -> Result<ExitCode> {
    if args.value_min > args.value_max || args.concurrency == 0 {
        bail!("need --value-min <= --value-max and --concurrency >= 1");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let entries: Arc<Vec<(Vec<u8>, Vec<u8>)>> = Arc::new(
        (0..args.keys)
            .map(|i| {
                let len = rng.random_range(args.value_min..=args.value_max);
                let value: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                (format!("verify-{seed:x}-{i}").into_bytes(), value)
            })
            .collect(),
    );
    let started = Instant::now();
    let mut summary = VerifySummary {
        keys: args.keys,
        puts_ok: 0,
        gets_ok: 0,
        mismatches: 0,
        errors: 0,
        replies_by_server: BTreeMap::new(),
        seconds: 0.0,
        ops_per_second: 0.0,
        seed,
    };
    for phase_is_put in [true, false] {
        let limit = Arc::new(Semaphore::new(args.concurrency));
        let mut tasks = JoinSet::new();
        for i in 0..entries.len() {
            let permit = limit
                .clone()
                .acquire_owned()
                .await
                .context("semaphore closed")?;
            let (client, entries) = (client.clone(), entries.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let (key, value) = &entries[i];
                if phase_is_put {
                    Outcome::Put(
                        client
                            .put(key, value)
                            .await
                            .map(|w| w.server_id)
                            .map_err(|e| e.to_string()),
                    )
                } else {
                    Outcome::Get(
                        client
                            .get(key)
                            .await
                            .map(|r| (r.value.as_deref() == Some(value.as_slice()), r.server_id))
                            .map_err(|e| e.to_string()),
                    )
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done? {
                Outcome::Put(Ok(server)) => {
                    summary.puts_ok += 1;
                    *summary.replies_by_server.entry(server).or_default() += 1;
                }
                Outcome::Get(Ok((equal, server))) => {
                    *summary.replies_by_server.entry(server).or_default() += 1;
                    if equal {
                        summary.gets_ok += 1;
                    } else {
                        summary.mismatches += 1;
                    }
                }
                Outcome::Put(Err(e)) | Outcome::Get(Err(e)) => {
                    if summary.errors < 5 {
                        eprintln!("error: {e}");
                    }
                    summary.errors += 1;
                }
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let completed = summary.puts_ok + summary.gets_ok + summary.mismatches;
    summary.ops_per_second = completed as f64 / summary.seconds.max(1e-9);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "verify: {} keys, {} puts ok, {} gets ok, {} mismatches, {} errors in {:.2} s \
             ({:.0} requests/s; seed {:#x})",
            summary.keys,
            summary.puts_ok,
            summary.gets_ok,
            summary.mismatches,
            summary.errors,
            summary.seconds,
            summary.ops_per_second,
            seed
        );
        println!("replies by server: {:?}", summary.replies_by_server);
    }
    let clean = summary.mismatches == 0 && summary.errors == 0;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
