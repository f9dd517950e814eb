//! The ToR's forwarding capacity in packets per second, on real veth ports: the kernel's own
//! IPv4 forwarding against the XDP programs, with the traffic's source on another CPU than
//! the ToR.
//!
//! Three namespaces: a generator, the ToR (an ingress and an egress port) and a sink. The
//! ToR's receive work (the veth NAPI of its ingress port, in a kernel thread) runs on one CPU;
//! the generator and the sink's receive work on the other. The generator is a test run with
//! live frames (`Switch::generate`): it sends GETs to the sink's store port from inside the
//! kernel, faster than one CPU of the ToR forwards them, so the ToR's queue overflows and
//! what the sink counts per second is what the ToR can forward. A forwarder whose sink
//! counted (nearly) everything sent was not saturated: its figure is a lower bound.

use super::{allowed_cpus, fixtures, median, packet::UdpFrame, pin_thread, pin_to_cpu};
use crate::{
    lab::{
        mac_text,
        netns::{self, ScopedNetns},
    },
    switch::{AttachMode, Switch, SwitchSettings, Yardstick, ifindex},
};
use anyhow::{Context, Result, bail, ensure};
use pegasus_common::{
    directory::Policy,
    hash::key_hash,
    roles::PortRole,
    switch::{Counter, SAMPLE_PERIOD_DEFAULT},
    wire::{self, Header, Op},
};
use serde::Serialize;
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

const PORT: u16 = wire::DEFAULT_PORT;
const EPOCH: u16 = 1;
const HOT_KEY: &[u8] = b"capacity-hot-key";
const COLD_KEY: &[u8] = b"capacity-cold-key";
/// Limits on the options (one run stays under a few minutes).
pub const SECONDS_MIN: f64 = 0.1;
pub const SECONDS_MAX: f64 = 10.0;
pub const ROUNDS_MAX: u32 = 20;
/// Frames per test run of the generator; it runs again until the measurement's time is up.
const GENERATOR_CHUNK: u32 = 1 << 16;
/// A forwarder whose sink counted at least this share of what was sent kept up with the
/// generator: its rate is a lower bound of its capacity.
const KEPT_UP_SHARE: f64 = 0.99;
/// Time for the queues to drain after a measurement, before the sink is read.
const DRAIN: Duration = Duration::from_millis(50);

/// The addresses: generator 10.201.0.2 behind the ToR's ingress (10.201.0.1), sink
/// 10.201.1.2 behind its egress (10.201.1.1).
const GENERATOR_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const TOR_IN_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const TOR_OUT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 1);
const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);
const GENERATOR_MAC: [u8; 6] = [0x02, 0, 0, 0xc9, 0, 2];
const TOR_IN_MAC: [u8; 6] = [0x02, 0, 0, 0xc9, 0, 1];
const TOR_OUT_MAC: [u8; 6] = [0x02, 0, 0, 0xc9, 1, 1];
const SINK_MAC: [u8; 6] = [0x02, 0, 0, 0xc9, 1, 2];

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct CapacityOptions {
    /// Seconds the generator sends per measurement (flat out).
    pub seconds: f64,
    /// Measurements of every forwarder, interleaved; the report gives medians.
    pub rounds: u32,
    /// The switch samples one request in this many, as when it runs (0: none); a thread
    /// drains the samples as the controller does.
    pub sample_period: u16,
}

impl Default for CapacityOptions {
    fn default() -> Self {
        CapacityOptions {
            seconds: 1.0,
            rounds: 3,
            sample_period: SAMPLE_PERIOD_DEFAULT,
        }
    }
}

/// What forwards in the ToR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarder {
    /// Linux's IPv4 forwarding (no XDP program on the ToR).
    Kernel,
    /// The minimal XDP forwarder (parse, swap, DEVMAP redirect): the floor of any XDP switch.
    MinimalXdp,
    /// The Pegasus switch, GETs of a cold key.
    SwitchCold,
    /// The Pegasus switch, GETs of a hot key (directory lookup, replica choice, rewrite).
    SwitchHot,
}

impl Forwarder {
    const ALL: [Forwarder; 4] = [
        Forwarder::Kernel,
        Forwarder::MinimalXdp,
        Forwarder::SwitchCold,
        Forwarder::SwitchHot,
    ];

    fn name(self) -> &'static str {
        match self {
            Forwarder::Kernel => "kernel",
            Forwarder::MinimalXdp => "xdp_forwarder",
            Forwarder::SwitchCold => "switch_cold",
            Forwarder::SwitchHot => "switch_hot",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Forwarder::Kernel => "Linux IPv4 forwarding, no XDP program (GRO on the ingress port)",
            Forwarder::MinimalXdp => {
                "minimal XDP forwarder: parse, swap addresses, DEVMAP redirect"
            }
            Forwarder::SwitchCold => "Pegasus switch, GET of a cold key",
            Forwarder::SwitchHot => "Pegasus switch, GET of a hot key, steered by the directory",
        }
    }
}

/// One forwarder's capacity.
#[derive(Clone, Debug, Serialize)]
pub struct ForwarderCapacity {
    pub forwarder: &'static str,
    pub what: &'static str,
    /// Median over the rounds of the frames the sink counted per second of generation.
    pub packets_per_second: f64,
    /// Median of the frames the generator sent per second.
    pub offered_per_second: f64,
    /// Median share of a CPU that the ToR's receive thread used while the generator sent.
    pub tor_cpu_busy: f64,
    /// Median CPU time of the ToR per forwarded frame (its receive thread's time / frames
    /// the sink counted), and what one CPU forwards at that cost: the forwarder's capacity
    /// per ToR CPU, whether or not the generator saturated it.
    pub tor_ns_per_packet: f64,
    pub capacity_per_cpu: f64,
    /// Median over the rounds of (this forwarder / the kernel in the same round): of the
    /// capacity per CPU, and of the rate reached.
    pub capacity_ratio_to_kernel: f64,
    pub rate_ratio_to_kernel: f64,
    /// True when the sink counted at least 99% of what was sent in the median round: the
    /// forwarder kept up with the generator, and its capacity is at least this rate.
    pub lower_bound: bool,
}

/// The measurement's result.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    pub seconds: f64,
    pub rounds: u32,
    pub sample_period: u16,
    /// The CPU of the ToR's receive work, and the CPU of the generator and the sink.
    pub tor_cpu: usize,
    pub generator_cpu: usize,
    pub forwarders: Vec<ForwarderCapacity>,
}

/// Runs the measurement (the calling thread moves between its namespaces: run it on a thread
/// of its own). Needs root and two CPUs.
pub fn run(options: CapacityOptions) -> Result<CapacityReport> {
    ensure!(
        (SECONDS_MIN..=SECONDS_MAX).contains(&options.seconds),
        "seconds must be in {SECONDS_MIN}..={SECONDS_MAX}"
    );
    ensure!(
        (1..=ROUNDS_MAX).contains(&options.rounds),
        "rounds must be in 1..={ROUNDS_MAX}"
    );
    ensure!(
        netns::is_root(),
        "the capacity measurement needs root (namespaces, XDP)"
    );
    let cpus = allowed_cpus()?;
    let [tor_cpu, generator_cpu] = match cpus[..] {
        [a, b, ..] => [a, b],
        _ => bail!("the capacity measurement needs two CPUs (the ToR's and the generator's)"),
    };
    let rig = Rig::new()?;
    let mut switch = rig.load_switch(options.sample_period)?;
    let cold = get_frame(COLD_KEY);
    let hot = get_frame(HOT_KEY);

    // The samples drained on the generator's CPU, as the controller would.
    let mut samples = switch.take_samples()?;
    let stop = AtomicBool::new(false);
    let measured = std::thread::scope(|scope| {
        let drainer = scope.spawn(|| {
            let pinned = pin_to_cpu(generator_cpu);
            while !stop.load(Ordering::Relaxed) {
                samples.drain(|_| {});
                std::thread::sleep(Duration::from_millis(1));
            }
            pinned
        });
        // Keeps the ToR's CPU from idling: woken from idle, a virtual CPU takes tens of
        // microseconds to run the NAPI thread, while the generator fills the port's queue
        // (256 frames) in about a hundred. At the lowest priority, it yields to that thread
        // at once.
        let spinner = scope.spawn(|| -> Result<()> {
            pin_to_cpu(tor_cpu)?;
            make_idle_priority()?;
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            Ok(())
        });
        let mut rates: Vec<Vec<Round>> = vec![Vec::new(); Forwarder::ALL.len()];
        let result = (|| -> Result<()> {
            for _ in 0..options.rounds {
                for (i, &forwarder) in Forwarder::ALL.iter().enumerate() {
                    let frame = if forwarder == Forwarder::SwitchHot {
                        &hot
                    } else {
                        &cold
                    };
                    rig.set_forwarder(&mut switch, forwarder)?;
                    let tor_threads = rig.pin_receive_work(tor_cpu, generator_cpu)?;
                    rates[i].push(rig.measure(
                        &switch,
                        frame,
                        options.seconds,
                        generator_cpu,
                        &tor_threads,
                    )?);
                }
            }
            rig.set_forwarder(&mut switch, Forwarder::Kernel)
        })();
        stop.store(true, Ordering::Relaxed);
        let drained = drainer
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the sample drainer panicked")));
        let spun = spinner
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the spinner panicked")));
        result.and(drained).and(spun).map(|()| rates)
    })?;
    let counters = switch.counters()?;
    ensure!(
        counters.get(Counter::HotReads) > 0,
        "the switch steered no hot read: the hot key's measurement did not run through the \
         directory"
    );
    let kernel = measured[0].clone();
    let forwarders = Forwarder::ALL
        .iter()
        .zip(&measured)
        .map(|(&forwarder, rounds)| summarize(forwarder, rounds, &kernel))
        .collect();
    Ok(CapacityReport {
        seconds: options.seconds,
        rounds: options.rounds,
        sample_period: options.sample_period,
        tor_cpu,
        generator_cpu,
        forwarders,
    })
}

/// One measurement of a forwarder.
#[derive(Clone, Copy, Debug)]
struct Round {
    /// CPU time of the ToR's receive thread, frames that reached the sink, seconds sent.
    tor_busy_ns: f64,
    delivered: f64,
    seconds: f64,
    delivered_per_second: f64,
    offered_per_second: f64,
    delivered_share: f64,
}

fn summarize(forwarder: Forwarder, rounds: &[Round], kernel: &[Round]) -> ForwarderCapacity {
    let median_of = |f: &dyn Fn(&Round, &Round) -> f64| {
        median(rounds.iter().zip(kernel).map(|(r, k)| f(r, k)).collect())
    };
    let ns_per_packet = |r: &Round| r.tor_busy_ns / r.delivered.max(1.0);
    let tor_ns_per_packet = median_of(&|r, _| ns_per_packet(r));
    ForwarderCapacity {
        forwarder: forwarder.name(),
        what: forwarder.what(),
        packets_per_second: median_of(&|r, _| r.delivered_per_second),
        offered_per_second: median_of(&|r, _| r.offered_per_second),
        lower_bound: median_of(&|r, _| r.delivered_share) >= KEPT_UP_SHARE,
        tor_cpu_busy: median_of(&|r, _| r.tor_busy_ns / 1e9 / r.seconds),
        tor_ns_per_packet,
        capacity_per_cpu: 1e9 / tor_ns_per_packet.max(f64::MIN_POSITIVE),
        capacity_ratio_to_kernel: median_of(&|r, k| ns_per_packet(k) / ns_per_packet(r)),
        rate_ratio_to_kernel: median_of(&|r, k| {
            r.delivered_per_second / k.delivered_per_second.max(1.0)
        }),
    }
}

/// A GET from the generator to the sink's store port, addressed to the ToR's ingress MAC.
fn get_frame(key: &[u8]) -> Vec<u8> {
    let header =
        Header::request(Op::Get, key_hash(key), fixtures::CLIENT_ID, 1, 0).with_client_epoch(EPOCH);
    let mut frame = UdpFrame::new(
        SocketAddrV4::new(GENERATOR_IP, 40000),
        SocketAddrV4::new(SINK_IP, PORT),
        fixtures::payload(header, key, b""),
    );
    frame.src_mac = GENERATOR_MAC;
    frame.dst_mac = TOR_IN_MAC;
    frame.build()
}

/// The three namespaces and their ports.
struct Rig {
    generator: ScopedNetns,
    tor: ScopedNetns,
    sink: ScopedNetns,
    /// Port names: unique on the host, since the NAPI threads are found by name.
    generator_port: String,
    tor_in: String,
    tor_out: String,
    sink_port: String,
}

impl Rig {
    fn new() -> Result<Rig> {
        use std::sync::atomic::AtomicU32;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = (std::process::id() * 16 + NEXT.fetch_add(1, Ordering::Relaxed)) & 0xf_ffff;
        let rig = Rig {
            generator: ScopedNetns::new("capg")?,
            tor: ScopedNetns::new("capt")?,
            sink: ScopedNetns::new("caps")?,
            generator_port: format!("pc{tag:05x}g"),
            tor_in: format!("pc{tag:05x}i"),
            tor_out: format!("pc{tag:05x}o"),
            sink_port: format!("pc{tag:05x}s"),
        };
        let (g, t, s) = (rig.generator.name(), rig.tor.name(), rig.sink.name());
        for (a, a_ns, a_mac, b, b_ns, b_mac) in [
            (
                &rig.generator_port,
                g,
                GENERATOR_MAC,
                &rig.tor_in,
                t,
                TOR_IN_MAC,
            ),
            (&rig.tor_out, t, TOR_OUT_MAC, &rig.sink_port, s, SINK_MAC),
        ] {
            netns::ip(&[
                "link",
                "add",
                a,
                "netns",
                a_ns,
                "address",
                &mac_text(a_mac),
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                b_ns,
                "address",
                &mac_text(b_mac),
            ])?;
        }
        for (ns, port, ip) in [
            (g, &rig.generator_port, GENERATOR_IP),
            (t, &rig.tor_in, TOR_IN_IP),
            (t, &rig.tor_out, TOR_OUT_IP),
            (s, &rig.sink_port, SINK_IP),
        ] {
            netns::ip(&["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", port])?;
            netns::ip(&["-n", ns, "link", "set", port, "up"])?;
        }
        netns::set_neighbour(t, &SINK_IP.to_string(), &mac_text(SINK_MAC), &rig.tor_out)?;
        netns::set_neighbour(
            t,
            &GENERATOR_IP.to_string(),
            &mac_text(GENERATOR_MAC),
            &rig.tor_in,
        )?;
        netns::exec_in(t, "sysctl", &["-qw", "net.ipv4.conf.all.forwarding=1"])?;
        // NAPI (and so XDP frames from the generator, and a thread to pin) on the ports that
        // receive, with or without an XDP program.
        for (ns, port) in [(t, &rig.tor_in), (s, &rig.sink_port)] {
            netns::exec_in(ns, "ethtool", &["-K", port, "gro", "on"])?;
            write_sysfs(ns, port, "threaded", "1")?;
        }
        // Both receive threads poll on (every few tens of microseconds while frames keep
        // coming) instead of sleeping whenever their queue is empty: on a virtual CPU, a
        // wake-up takes longer than the generator needs to fill a port's 256 slots (the ToR's
        // queue would overflow while its CPU is mostly idle), and waking the sink's thread
        // would cost the ToR an inter-processor interrupt per batch, which a NIC does not.
        // Without it the figures would measure wake-ups instead of forwarding.
        for (ns, port, poll_ns) in [(t, &rig.tor_in, "20000"), (s, &rig.sink_port, "50000")] {
            write_sysfs(ns, port, "napi_defer_hard_irqs", "100")?;
            write_sysfs(ns, port, "gro_flush_timeout", poll_ns)?;
        }
        Ok(rig)
    }

    /// Loads the switch in the ToR's namespace (its only server: the sink, which is also
    /// the hot key's home), its ports known but not attached, and the sink and generator
    /// programs of the same object.
    fn load_switch(&self, sample_period: u16) -> Result<Switch> {
        netns::enter_current_thread(self.tor.name())?;
        let settings = SwitchSettings {
            policy: Policy::LeastLoaded,
            replication: 1,
            sample_period,
            servers: vec![(0, SINK_IP)],
            ..SwitchSettings::forwarding_only(PORT, EPOCH)
        };
        let mut switch = Switch::load(&settings)?;
        switch.add_port(&self.tor_in, PortRole::Client)?;
        switch.add_port(&self.tor_out, PortRole::Server)?;
        switch.directory_insert(key_hash(HOT_KEY), 0)?;
        netns::enter_current_thread(self.sink.name())?;
        switch.attach_traffic_sink(&self.sink_port)?;
        netns::enter_current_thread(self.generator.name())?;
        switch.load_traffic_generator(ifindex(&self.generator_port)?)?;
        Ok(switch)
    }

    /// Puts `forwarder` on the ToR's ingress port (and nothing else).
    fn set_forwarder(&self, switch: &mut Switch, forwarder: Forwarder) -> Result<()> {
        netns::enter_current_thread(self.tor.name())?;
        switch.detach_all()?;
        switch.detach_yardsticks()?;
        match forwarder {
            Forwarder::Kernel => {}
            Forwarder::MinimalXdp => {
                let out = ifindex(&self.tor_out)?;
                switch.load_yardstick(Yardstick::Forward, &self.tor_in, Some(out))?;
            }
            Forwarder::SwitchCold | Forwarder::SwitchHot => {
                switch.attach(&self.tor_in, PortRole::Client, AttachMode::Native)?;
            }
        }
        Ok(())
    }

    /// Pins the ToR's receive thread to `tor_cpu` and the sink's to `generator_cpu` (a port's
    /// NAPI thread may be made anew when a program is attached, so after every change). The
    /// sink's thread gets a real-time priority: it runs whenever it has frames, and the
    /// generator has the rest of that CPU, so the sink never holds the measurement back.
    /// Returns the ToR's receive threads.
    fn pin_receive_work(&self, tor_cpu: usize, generator_cpu: usize) -> Result<Vec<i32>> {
        for (port, cpu, real_time) in [
            (&self.tor_in, tor_cpu, false),
            (&self.sink_port, generator_cpu, true),
        ] {
            let threads = napi_threads(port)?;
            ensure!(!threads.is_empty(), "no NAPI thread for {port}");
            for tid in threads {
                pin_thread(tid, cpu).with_context(|| format!("pinning {port}'s NAPI thread"))?;
                if real_time {
                    make_real_time(tid)?;
                }
            }
        }
        napi_threads(&self.tor_in)
    }

    /// Sends copies of `frame` for `seconds` from the generator pinned to `cpu`, and counts
    /// what reached the sink.
    fn measure(
        &self,
        switch: &Switch,
        frame: &[u8],
        seconds: f64,
        cpu: usize,
        tor_threads: &[i32],
    ) -> Result<Round> {
        netns::enter_current_thread(self.generator.name())?;
        pin_to_cpu(cpu)?;
        let before = switch.traffic_sink_count()?;
        let tor_before = thread_runtime_ns(tor_threads)?;
        let (mut sent, mut took) = (0u64, Duration::ZERO);
        while took.as_secs_f64() < seconds {
            took += switch.generate(frame, GENERATOR_CHUNK)?;
            sent += u64::from(GENERATOR_CHUNK);
        }
        let tor_after = thread_runtime_ns(tor_threads)?;
        std::thread::sleep(DRAIN);
        let delivered = switch.traffic_sink_count()? - before;
        let took = took.as_secs_f64();
        Ok(Round {
            tor_busy_ns: tor_after.saturating_sub(tor_before) as f64,
            delivered: delivered as f64,
            seconds: took,
            delivered_per_second: delivered as f64 / took,
            offered_per_second: sent as f64 / took,
            delivered_share: delivered as f64 / sent as f64,
        })
    }
}

/// Writes `value` to the attribute `/sys/class/net/PORT/ATTRIBUTE` of namespace `ns`.
fn write_sysfs(ns: &str, port: &str, attribute: &str, value: &str) -> Result<()> {
    netns::exec_in(
        ns,
        "sh",
        &[
            "-c",
            &format!("echo {value} > /sys/class/net/{port}/{attribute}"),
        ],
    )
    .with_context(|| format!("setting {attribute} of {port} to {value}"))?;
    Ok(())
}

/// The kernel threads of `port`'s NAPI instances (named `napi/PORT-ID`, cut to 15 bytes).
fn napi_threads(port: &str) -> Result<Vec<i32>> {
    let prefix: String = format!("napi/{port}-").chars().take(15).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A thread that ends meanwhile has no comm any more: skipped.
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm"))
            && comm.trim_end().starts_with(&prefix)
        {
            found.push(pid);
        }
    }
    Ok(found)
}

/// CPU time the threads `tids` have used so far, in nanoseconds (the scheduler's own
/// account, `/proc/TID/schedstat`: exact, where `/proc/TID/stat` counts ticks).
fn thread_runtime_ns(tids: &[i32]) -> Result<u64> {
    let mut total = 0;
    for tid in tids {
        let stat = std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
            .with_context(|| format!("reading /proc/{tid}/schedstat"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .with_context(|| format!("a malformed /proc/{tid}/schedstat: {stat:?}"))?;
    }
    Ok(total)
}

/// Gives the calling thread the lowest priority (`SCHED_IDLE`): it runs only when nothing
/// else on its CPU wants to.
fn make_idle_priority() -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    ensure!(
        rc == 0,
        "sched_setscheduler(SCHED_IDLE): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Gives the thread `tid` a real-time (FIFO) priority, above every ordinary thread.
fn make_real_time(tid: i32) -> Result<()> {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: `param` is a valid sched_param for the call's duration.
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) };
    ensure!(
        rc == 0,
        "sched_setscheduler({tid}, SCHED_FIFO): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}
