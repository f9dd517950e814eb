//! Drives requests at a rack: closed loop (N requests outstanding, each worker waiting for its
//! reply) or open loop (requests sent at a fixed rate whatever the replies, each request's
//! latency counted from the time it was meant to be sent, as wrk2 does, so that a stalled
//! rack cannot hide its stall by slowing the generator: no coordinated omission).

use super::report::{OpKind, Outcome, Recorder};
use anyhow::{Context, Result};
use pegasus_client::{
    Client, ClientError,
    workload::{HotSwap, KeyChooser, KeyNames},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{sync::Semaphore, task::JoinSet};

/// How requests are paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// `concurrency` workers, each with one request outstanding.
    Closed { concurrency: u32 },
    /// `rate` requests per second, at most `max_outstanding` at once (past that the sender
    /// waits, and the wait counts in the latency of the requests it delays).
    Open { rate: f64, max_outstanding: u32 },
}

/// What to send.
pub struct Plan {
    pub chooser: KeyChooser,
    pub names: KeyNames,
    /// When (from the start) and how the hot set changes.
    pub swap: Option<(Duration, HotSwap)>,
    pub read_ratio: f64,
    pub value: Arc<[u8]>,
    /// Not measured: the start of the run, for caches and the controller to settle.
    pub warmup: Duration,
    /// Measured, after the warm-up.
    pub measure: Duration,
    pub seed: u64,
    pub pace: Pace,
}

impl Plan {
    /// The next request of a run that started `since` ago.
    fn next(&self, rng: &mut StdRng, since: Duration) -> (OpKind, String) {
        let mut rank = self.chooser.sample(rng);
        if let Some((at, swap)) = self.swap
            && since >= at
        {
            rank = swap.apply(rank);
        }
        let op = if rng.random_bool(self.read_ratio) {
            OpKind::Read
        } else {
            OpKind::Update
        };
        (op, self.names.name(rank))
    }
}

/// Sends one request and tells how it ended.
pub async fn execute(client: &Client, op: OpKind, key: &str, value: &[u8]) -> Outcome {
    let answered = match op {
        OpKind::Read => client.get(key.as_bytes()).await.map(|r| r.server_id),
        OpKind::Update => client.put(key.as_bytes(), value).await.map(|w| w.server_id),
    };
    match answered {
        Ok(server) => Outcome::Ok { server },
        Err(ClientError::Timeout { .. }) => Outcome::Timeout,
        Err(_) => Outcome::Error,
    }
}

/// Runs `plan` from `start`, recording requests sent in the measured part into `recorder`.
pub async fn run(
    clients: Vec<Arc<Client>>,
    plan: Plan,
    start: Instant,
    recorder: Arc<Mutex<Recorder>>,
) -> Result<()> {
    assert!(!clients.is_empty(), "at least one client");
    let plan = Arc::new(plan);
    let measured_from = start + plan.warmup;
    let end = measured_from + plan.measure;
    let record = move |recorder: &Mutex<Recorder>, sent: Instant, op, outcome| {
        if sent >= measured_from {
            recorder
                .lock()
                .expect("recorder poisoned")
                .record(op, sent.elapsed(), outcome);
        }
    };
    match plan.pace {
        Pace::Closed { concurrency } => {
            let mut workers = JoinSet::new();
            for worker in 0..concurrency {
                let client = clients[worker as usize % clients.len()].clone();
                let (plan, recorder) = (plan.clone(), recorder.clone());
                workers.spawn(async move {
                    let mut rng = StdRng::seed_from_u64(plan.seed ^ (worker as u64) << 40);
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            return;
                        }
                        let (op, key) = plan.next(&mut rng, sent - start);
                        let outcome = execute(&client, op, &key, &plan.value).await;
                        record(&recorder, sent, op, outcome);
                    }
                });
            }
            while let Some(done) = workers.join_next().await {
                done?;
            }
        }
        Pace::Open {
            rate,
            max_outstanding,
        } => {
            let permits = Arc::new(Semaphore::new(max_outstanding as usize));
            let runtime = tokio::runtime::Handle::current();
            let pacer_permits = permits.clone();
            // A thread of its own: it sleeps to each send time with the kernel's precision
            // (tens of microseconds), not the runtime timer's millisecond.
            let pacer = std::thread::Builder::new()
                .name("bench-pacer".into())
                .spawn(move || {
                    let mut rng = StdRng::seed_from_u64(plan.seed);
                    for i in 0u64.. {
                        let intended = start + Duration::from_secs_f64(i as f64 / rate);
                        if intended >= end {
                            break;
                        }
                        let now = Instant::now();
                        if intended > now {
                            std::thread::sleep(intended - now);
                        }
                        let permit = runtime
                            .block_on(pacer_permits.clone().acquire_owned())
                            .expect("the semaphore is never closed");
                        let (op, key) = plan.next(&mut rng, intended - start);
                        let client = clients[i as usize % clients.len()].clone();
                        let (plan, recorder) = (plan.clone(), recorder.clone());
                        runtime.spawn(async move {
                            let outcome = execute(&client, op, &key, &plan.value).await;
                            record(&recorder, intended, op, outcome);
                            drop(permit);
                        });
                    }
                })
                .context("starting the pacer thread")?;
            tokio::task::spawn_blocking(move || pacer.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
            // Every request answered or given up.
            let _all = permits.acquire_many(max_outstanding).await?;
        }
    }
    Ok(())
}
