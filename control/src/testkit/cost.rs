//! The per-packet cost of the switch program, path by path, through `BPF_PROG_TEST_RUN`, each
//! next to the minimal program (parse Ethernet/IPv4/UDP, swap addresses, XDP_TX) measured in
//! the same round: the ratio is what to read, since absolute times depend on the machine and
//! on who else uses it.

use super::{
    allowed_cpus, fixtures, median,
    testbed::{self, Testbed},
};
use crate::switch::{
    AttachMode, PacketVerdict, Switch, SwitchSettings, Yardstick, action, ifindex,
};
use anyhow::{Context, Result, ensure};
use pegasus_common::roles::PortRole;
use pegasus_common::{
    directory::{Policy, bit},
    hash::key_hash,
    wire::{self, Header, Op},
};
use serde::Serialize;

const PORT: u16 = wire::DEFAULT_PORT;
const EPOCH: u16 = 1;
const SERVERS: u8 = 4;
const HOT_KEY: &[u8] = b"bench-hot-key";
/// The hot key's home in the benchmark (the switch does not compute placements: the entry
/// says so, and hot requests are addressed there).
const HOT_HOME: u8 = 0;
const COLD_KEY: &[u8] = b"bench-cold-key";
/// The hot key's completed version in the benchmark.
const HOT_VERSION: u64 = 1_000;
/// Runs of one packet per test-run call. The kernel runs the program on the *same* buffer
/// each time, so changes accumulate: with a TTL of 255, 250 runs all see a forwardable packet.
pub const BATCH: u32 = 250;
const TTL: u8 = 255;
/// Limits on the options (one run stays under a few minutes).
pub const PACKETS_MAX: u32 = 10_000_000;
pub const ROUNDS_MAX: u32 = 1_000;

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct CostOptions {
    /// Packets per measurement of a path (in test-run calls of [`BATCH`] runs each).
    pub packets: u32,
    /// Measurements of each path and of the baseline, interleaved; the report gives medians.
    pub rounds: u32,
    /// The switch samples one request in this many, as when it runs (0: no sampling); the
    /// benchmark drains the samples between batches, as the controller does.
    pub sample_period: u16,
}

impl Default for CostOptions {
    fn default() -> Self {
        CostOptions {
            packets: 100_000,
            rounds: 7,
            sample_period: pegasus_common::switch::SAMPLE_PERIOD_DEFAULT,
        }
    }
}

/// One path's cost.
#[derive(Clone, Debug, Serialize)]
pub struct PathCost {
    pub path: &'static str,
    pub what: &'static str,
    /// Median nanoseconds per packet over the rounds.
    pub ns_per_packet: f64,
    /// Median nanoseconds per packet of the baseline, measured the same way in the same
    /// rounds.
    pub baseline_ns_per_packet: f64,
    /// Median over rounds of (this path / baseline of the same round).
    pub ratio: f64,
    /// Median nanoseconds per packet of the forwarding yardstick (the baseline, then a
    /// redirect through the DEVMAP), and the median ratio of the path to it.
    pub forwarder_ns_per_packet: f64,
    pub forwarder_ratio: f64,
    /// The target for the ratio to the minimal forwarder (every path forwards its packet, so
    /// the forwarder is the floor), and whether the median meets it.
    pub target_ratio: f64,
    pub meets_target: bool,
}

/// The version counter's atomic fetch-add (what every fresh write pays), on one CPU and with
/// both CPUs adding at once: the yardstick with the add against the one without, measured
/// the same way, medians over the rounds.
#[derive(Clone, Debug, Serialize)]
pub struct CounterContention {
    /// CPUs adding at once in the contended measurement (the first two CPUs the process may
    /// use).
    pub cpus: usize,
    /// Nanoseconds per packet of the reflect yardstick and of the stamp yardstick (the same,
    /// then the fetch-add), on one CPU.
    pub reflect_alone_ns: f64,
    pub stamp_alone_ns: f64,
    /// The same with every CPU running them at once (the mean over the CPUs).
    pub reflect_contended_ns: f64,
    pub stamp_contended_ns: f64,
    /// What the fetch-add adds to a packet, alone and contended (stamp - reflect: a median of
    /// differences, so it can come out slightly negative when the add is lost in the noise).
    pub add_alone_ns: f64,
    pub add_contended_ns: f64,
}

/// The benchmark's result.
#[derive(Clone, Debug, Serialize)]
pub struct CostReport {
    pub packets: u32,
    pub rounds: u32,
    /// One request in this many was sampled (0: none).
    pub sample_period: u16,
    pub paths: Vec<PathCost>,
    /// `None` on a machine where the process may use only one CPU.
    pub counter_contention: Option<CounterContention>,
}

/// Runs the benchmark in a testbed namespace (which the calling thread enters: run it on a
/// thread of its own). Needs root.
pub fn run(options: CostOptions) -> Result<CostReport> {
    ensure!(
        (BATCH..=PACKETS_MAX).contains(&options.packets),
        "packets must be in {BATCH}..={PACKETS_MAX}"
    );
    ensure!(
        (1..=ROUNDS_MAX).contains(&options.rounds),
        "rounds must be in 1..={ROUNDS_MAX}"
    );
    let settings = SwitchSettings {
        policy: Policy::LeastLoaded,
        replication: 3,
        sample_period: options.sample_period,
        ..SwitchSettings::forwarding_only(PORT, EPOCH)
    };
    let mut bed = Testbed::new("bench", SERVERS, settings)?;
    // Both programs attached (to ports that carry no traffic), so that test runs do not wait
    // for the XDP dispatcher to change (see `Switch::load_baseline`).
    bed.switch
        .attach("sv0", PortRole::Server, AttachMode::Native)?;
    bed.switch
        .load_yardstick(Yardstick::Reflect, "cl0p", None)?;
    let to = ifindex("sv0")?;
    bed.switch
        .load_yardstick(Yardstick::Forward, "sv1p", Some(to))?;
    bed.switch.load_yardstick(Yardstick::Stamp, "sv2p", None)?;
    let switch = &mut bed.switch;
    let mut sampled = switch.take_samples()?;
    make_hot(switch)?;

    let request = |key, op, request_id, flags| {
        let mut payload = message(op, key, request_id, 0);
        payload[wire::offset::FLAGS] = flags;
        let mut frame = testbed::request_to(HOT_HOME, PORT, payload);
        frame.ttl = TTL;
        frame.build()
    };
    let cold_get = request(COLD_KEY, Op::Get, 1, 0);
    let cold_put = request(COLD_KEY, Op::Put, 2, 0);
    let hot_get = request(HOT_KEY, Op::Get, 3, 0);
    // Every run of the same first attempt is steered afresh and remembers its route again (its
    // version comes from its window slot after the first run, as for a duplicate).
    let hot_put = request(HOT_KEY, Op::Put, 4, 0);
    let hot_put_retry = request(HOT_KEY, Op::Put, 4, wire::flags::RETRY);
    let mut reply = message(Op::PutReply, b"", 5, HOT_VERSION);
    set_keyhash(&mut reply, HOT_KEY);
    reply[wire::offset::SERVER_ID] = 1;
    let mut reply_update = testbed::reply_from(1, PORT, reply);
    reply_update.ttl = TTL;
    let reply_update = reply_update.build();

    // (path, what it does, frame, target ratio to the minimal forwarder)
    let paths: [(&'static str, &'static str, &[u8], f64); 6] = [
        (
            "cold_forward",
            "GET of a cold key: parse, directory miss, forwarding cache, redirect",
            &cold_get,
            1.3,
        ),
        (
            "cold_write",
            "PUT of a cold key: also stamps a version (a repeated run is a copy of one write: \
             its window slot gives the version again)",
            &cold_put,
            1.3,
        ),
        (
            "hot_read",
            "GET of a hot key: directory, replica choice, address rewrite",
            &hot_get,
            1.8,
        ),
        (
            "hot_write",
            "PUT of a hot key: stamp, policy, replica bitmap, route remembered for retries",
            &hot_put,
            2.2,
        ),
        (
            "hot_write_retry",
            "retried PUT of a hot key: stamp, pinned to its first server",
            &hot_put_retry,
            1.8,
        ),
        (
            "reply_update",
            "PUT_REPLY of a hot key: admission, locked update of the entry, redirect",
            &reply_update,
            1.8,
        ),
    ];
    // The retry needs its first attempt's route.
    switch.run_on_packet(&hot_put)?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); paths.len()];
    let batches = options.packets / BATCH;
    for _ in 0..options.rounds {
        for (i, &(path, _, frame, _)) in paths.iter().enumerate() {
            // The baseline's batches, then the path's: the kernel's XDP dispatcher waits for an
            // RCU grace period each time the test-run program changes, so alternate rarely.
            let mut yardstick_totals = [0.0; 2];
            for (yardstick, expected, slot) in [
                (Yardstick::Reflect, action::TX, 0usize),
                (Yardstick::Forward, action::REDIRECT, 1),
            ] {
                for _ in 0..batches {
                    let (verdict, ns) = switch.run_yardstick_repeated(yardstick, frame, BATCH)?;
                    ensure!(
                        verdict.action == expected,
                        "{yardstick:?}: unexpected verdict {}",
                        action::name(verdict.action)
                    );
                    yardstick_totals[slot] += ns;
                }
            }
            let mut path_total = 0.0;
            for _ in 0..batches {
                let (verdict, ns) = switch.run_repeated(frame, BATCH)?;
                sampled.drain(|_| {});
                ensure!(
                    verdict.action == action::REDIRECT,
                    "{path}: the switch did not forward the packet ({})",
                    action::name(verdict.action)
                );
                path_total += ns;
            }
            let n = batches as f64;
            samples[i].push(Sample {
                path: path_total / n,
                reflect: yardstick_totals[0] / n,
                forward: yardstick_totals[1] / n,
            });
        }
    }
    let counter_contention = counter_contention(switch, &cold_get, batches, options.rounds)?;
    Ok(CostReport {
        packets: options.packets,
        rounds: options.rounds,
        sample_period: options.sample_period,
        paths: paths
            .iter()
            .zip(&samples)
            .map(|(&(path, what, _, target), samples)| summarize(path, what, target, samples))
            .collect(),
        counter_contention,
    })
}

/// Measures the version counter's fetch-add on one CPU and on two at once
/// ([`CounterContention`]); `None` when the process may use only one CPU.
fn counter_contention(
    switch: &Switch,
    frame: &[u8],
    batches: u32,
    rounds: u32,
) -> Result<Option<CounterContention>> {
    let cpus = allowed_cpus()?;
    if cpus.len() < 2 {
        return Ok(None);
    }
    let both = &cpus[..2];
    let (mut reflect_alone, mut stamp_alone) = (Vec::new(), Vec::new());
    let (mut reflect_both, mut stamp_both) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        reflect_alone.push(on_cpus(
            switch,
            Yardstick::Reflect,
            frame,
            batches,
            &both[..1],
        )?);
        stamp_alone.push(on_cpus(
            switch,
            Yardstick::Stamp,
            frame,
            batches,
            &both[..1],
        )?);
        reflect_both.push(on_cpus(switch, Yardstick::Reflect, frame, batches, both)?);
        stamp_both.push(on_cpus(switch, Yardstick::Stamp, frame, batches, both)?);
    }
    let differences = |with: &[f64], without: &[f64]| {
        median(with.iter().zip(without).map(|(a, b)| a - b).collect())
    };
    Ok(Some(CounterContention {
        cpus: both.len(),
        add_alone_ns: differences(&stamp_alone, &reflect_alone),
        add_contended_ns: differences(&stamp_both, &reflect_both),
        reflect_alone_ns: median(reflect_alone),
        stamp_alone_ns: median(stamp_alone),
        reflect_contended_ns: median(reflect_both),
        stamp_contended_ns: median(stamp_both),
    }))
}

/// Runs `batches` batches of a yardstick on each of `cpus` at once (a thread pinned to each,
/// started together), and returns the mean nanoseconds per packet over the CPUs. The threads
/// inherit the caller's network namespace, where the test runs' ingress ports are.
fn on_cpus(
    switch: &Switch,
    yardstick: Yardstick,
    frame: &[u8],
    batches: u32,
    cpus: &[usize],
) -> Result<f64> {
    let start = std::sync::Barrier::new(cpus.len());
    let per_cpu: Vec<Result<f64>> = std::thread::scope(|scope| {
        let threads: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                let start = &start;
                scope.spawn(move || {
                    // Every thread reaches the barrier, whatever happens before it.
                    let pinned = super::pin_to_cpu(cpu);
                    start.wait();
                    pinned?;
                    let mut total = 0.0;
                    for _ in 0..batches {
                        let (verdict, ns) =
                            switch.run_yardstick_repeated(yardstick, frame, BATCH)?;
                        ensure!(
                            verdict.action == action::TX,
                            "{yardstick:?}: unexpected verdict {}",
                            action::name(verdict.action)
                        );
                        total += ns;
                    }
                    Ok(total / batches as f64)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread panicked")))
            })
            .collect()
    });
    let per_cpu = per_cpu.into_iter().collect::<Result<Vec<f64>>>()?;
    Ok(per_cpu.iter().sum::<f64>() / per_cpu.len() as f64)
}

/// One round's nanoseconds per packet of a path and of the two yardsticks.
#[derive(Clone, Copy, Debug)]
struct Sample {
    path: f64,
    reflect: f64,
    forward: f64,
}

fn summarize(
    path: &'static str,
    what: &'static str,
    target_ratio: f64,
    samples: &[Sample],
) -> PathCost {
    let med = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let ratio = med(&|s| s.path / s.reflect);
    let forwarder_ratio = med(&|s| s.path / s.forward);
    PathCost {
        path,
        what,
        ns_per_packet: med(&|s| s.path),
        baseline_ns_per_packet: med(&|s| s.reflect),
        ratio,
        forwarder_ns_per_packet: med(&|s| s.forward),
        forwarder_ratio,
        target_ratio,
        meets_target: forwarder_ratio <= target_ratio,
    }
}

/// Installs the hot key with home 0 and brings servers 1 and 2 into its replica set, through
/// the program itself (replies of version [`HOT_VERSION`]).
fn make_hot(switch: &mut Switch) -> Result<()> {
    let keyhash = key_hash(HOT_KEY);
    switch.directory_insert(keyhash, HOT_HOME)?;
    for server in [0u8, 1, 2] {
        let mut reply = message(Op::GetReply, b"", 1, HOT_VERSION);
        set_keyhash(&mut reply, HOT_KEY);
        reply[wire::offset::SERVER_ID] = server;
        let PacketVerdict { action, .. } =
            switch.run_on_packet(&testbed::reply_from(server, PORT, reply).build())?;
        ensure!(
            action == action::REDIRECT,
            "the set-up reply was not forwarded"
        );
    }
    let entry = switch
        .directory_entry(keyhash)?
        .context("the hot key's entry vanished")?;
    ensure!(
        entry.rset == bit(0) | bit(1) | bit(2) && entry.ver_completed == HOT_VERSION,
        "the hot key's entry is not as set up: {entry:?}"
    );
    Ok(())
}

/// A Pegasus message for `key` from the fixtures' client with `request_id` and `version`; a
/// request carries the switch's epoch, as from a client that has learned it.
fn message(op: Op, key: &[u8], request_id: u32, version: u64) -> Vec<u8> {
    let epoch = if op.is_request() { EPOCH } else { 0 };
    let header = Header {
        version,
        ..Header::request(op, key_hash(key), fixtures::CLIENT_ID, request_id, 0)
            .with_client_epoch(epoch)
    };
    let value: &[u8] = if op == Op::Put { b"value" } else { b"" };
    fixtures::payload(header, key, value)
}

/// Replies carry an empty key: their key hash names the key.
fn set_keyhash(payload: &mut [u8], key: &[u8]) {
    payload[wire::offset::KEYHASH..wire::offset::KEYHASH + 8]
        .copy_from_slice(&key_hash(key).to_be_bytes());
}
