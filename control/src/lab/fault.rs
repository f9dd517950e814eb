//! Network faults for tests and experiments, on a kernel without netem: drop, duplicate,
//! delay (fixed plus jitter) and reorder, per link and direction, seeded
//! ([`pegasus_common::fault`] has the design).
//!
//! An [`Injector`] owns one link: it attaches the tc programs of the fault object to the host
//! end (egress: packets to the switch; ingress: packets from it) and runs the relay, a thread
//! that takes held and duplicated frames from the programs' ring buffer and sends each when
//! its delay is over, through a packet socket: out of the host end (marked) for packets to the
//! switch, out of the ToR end (with the marker source MAC) for packets from it. Dropping the
//! injector stops the relay and detaches the programs (TCX links); frames still held are
//! sent first, so a stop loses nothing that was not meant to be dropped.

use super::netns;
use anyhow::{Context, Result, anyhow, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{SchedClassifier, TcAttachType},
};
use pegasus_common::fault::{
    self as shared, Direction, FRAME_MAX, FaultCounts, HeldFrame, LinkFaults, PPM, REINJECTED_MAC,
    REINJECTED_MARK,
};
use serde::Serialize;
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The fault object built by `build.rs` (not the switch's).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pegasus-faults"));

/// Longest delay the relay accepts (a held frame waits in its memory).
pub const DELAY_MAX: Duration = Duration::from_secs(60);
/// Most frames held at once; beyond it a frame to hold is sent at once (counted).
const HELD_MAX: usize = 1 << 20;
/// How often the relay wakes with nothing due (to see a stop and refresh the counts).
const RELAY_TICK: Duration = Duration::from_millis(20);

/// One link: the host end (a server's or client's `eth0`) and the ToR end (its switch port).
#[derive(Clone, Debug)]
pub struct Link {
    pub host_ns: String,
    pub host_interface: String,
    pub tor_ns: String,
    pub tor_interface: String,
}

/// The faults of one direction of a link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirectionFaults {
    /// Share of packets dropped.
    pub drop: f64,
    /// Share of packets duplicated.
    pub duplicate: f64,
    /// How late a duplicate follows its packet: uniform in this range.
    pub duplicate_delay: (Duration, Duration),
    /// Delay of every packet (netem's `delay`), ...
    pub delay: Duration,
    /// ... plus or minus a uniform jitter (which reorders packets).
    pub jitter: Duration,
    /// With a delay: share of packets sent at once instead (netem's `reorder`).
    pub reorder: f64,
}

impl DirectionFaults {
    /// Only loss.
    pub fn loss(share: f64) -> DirectionFaults {
        DirectionFaults {
            drop: share,
            ..DirectionFaults::default()
        }
    }

    fn check(&self) -> Result<()> {
        for (what, share) in [
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            ensure!(
                (0.0..=1.0).contains(&share),
                "{what} is a share from 0 to 1, not {share}"
            );
        }
        let (lo, hi) = self.duplicate_delay;
        ensure!(
            lo <= hi,
            "the duplicate delay range {lo:?}..{hi:?} is empty"
        );
        ensure!(
            hi <= DELAY_MAX && self.delay + self.jitter <= DELAY_MAX,
            "delays are at most {DELAY_MAX:?}"
        );
        ensure!(
            self.jitter <= self.delay,
            "the jitter ({:?}) exceeds the delay ({:?})",
            self.jitter,
            self.delay
        );
        Ok(())
    }

    fn link_faults(&self, seed: u64) -> LinkFaults {
        let ppm = |share: f64| (share * PPM as f64).round() as u32;
        let held = if self.delay.is_zero() {
            0.0
        } else {
            1.0 - self.reorder
        };
        LinkFaults {
            drop_ppm: ppm(self.drop),
            duplicate_ppm: ppm(self.duplicate),
            hold_ppm: ppm(held),
            _pad: 0,
            seed,
        }
    }

    /// How long packet `n` is held, and how late its duplicate follows it.
    fn delays(&self, seed: u64, direction: Direction, n: u64) -> (Duration, Duration) {
        let unit = |which| shared::draw(seed, direction, n, which) as f64 / PPM as f64;
        let held = self.delay.as_secs_f64() + self.jitter.as_secs_f64() * (2.0 * unit(3) - 1.0);
        let (lo, hi) = self.duplicate_delay;
        let copy = lo.as_secs_f64() + (hi - lo).as_secs_f64() * unit(4);
        (
            Duration::from_secs_f64(held.max(0.0)),
            Duration::from_secs_f64(copy),
        )
    }
}

/// The faults of a link: each direction, and the seed of every decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkPlan {
    pub to_switch: DirectionFaults,
    pub from_switch: DirectionFaults,
    pub seed: u64,
}

impl LinkPlan {
    fn direction(&self, d: Direction) -> &DirectionFaults {
        match d {
            Direction::ToSwitch => &self.to_switch,
            Direction::FromSwitch => &self.from_switch,
        }
    }
}

/// What one direction saw and did.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DirectionReport {
    pub packets: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub held: u64,
    /// Frames the relay sent back (held packets and duplicates).
    pub relayed: u64,
    /// Copies the programs could not hand over (ring full, frame too long): those packets
    /// went on unfaulted.
    pub not_carried: u64,
    /// Frames the relay could not send.
    pub send_errors: u64,
    /// The longest any frame was sent after its due time, in microseconds.
    pub worst_lateness_us: u64,
}

/// What a link's injector did, by direction.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct LinkReport {
    pub to_switch: DirectionReport,
    pub from_switch: DirectionReport,
}

impl LinkReport {
    fn direction_mut(&mut self, d: Direction) -> &mut DirectionReport {
        match d {
            Direction::ToSwitch => &mut self.to_switch,
            Direction::FromSwitch => &mut self.from_switch,
        }
    }
}

/// Faults on one link while this lives.
pub struct Injector {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LinkReport>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Injector {
    /// Attaches the fault programs to `link`'s host end and starts its relay.
    pub fn start(link: &Link, plan: &LinkPlan) -> Result<Injector> {
        plan.to_switch.check().context("to the switch")?;
        plan.from_switch.check().context("from the switch")?;
        let (link, plan) = (link.clone(), plan.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LinkReport::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = {
            let (stop, report) = (stop.clone(), report.clone());
            // A thread of its own: it enters the namespaces to attach and to open sockets.
            std::thread::spawn(move || {
                let relay = match Relay::new(&link, &plan) {
                    Ok(relay) => {
                        let _ = ready_tx.send(Ok(()));
                        relay
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                relay.run(&stop, &report)
            })
        };
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the fault relay died while starting"))??;
        Ok(Injector {
            stop,
            report,
            thread: Some(thread),
        })
    }

    /// What the injector did so far (refreshed every few tens of milliseconds).
    pub fn report(&self) -> LinkReport {
        *self.report.lock().expect("fault report poisoned")
    }

    /// Sends what is still held, detaches the programs and returns the final report.
    pub fn stop(mut self) -> Result<LinkReport> {
        self.finish()?;
        Ok(self.report())
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("the fault relay panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("fault relay: {e:#}");
        }
    }
}

/// A frame waiting for its time.
struct Due {
    at: Instant,
    order: u64,
    direction: Direction,
    bytes: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// The relay's state: the loaded programs (their links live as long as it), the ring, the two
/// packet sockets.
struct Relay {
    ebpf: Ebpf,
    plan: LinkPlan,
    /// Out of the host end, marked: frames to the switch.
    to_switch: OwnedFd,
    /// Out of the ToR end: frames from the switch.
    from_switch: OwnedFd,
}

impl Relay {
    fn new(link: &Link, plan: &LinkPlan) -> Result<Relay> {
        netns::enter_current_thread(&link.tor_ns)?;
        let from_switch = packet_socket(&link.tor_interface, None).with_context(|| {
            format!(
                "a packet socket on {} in {}",
                link.tor_interface, link.tor_ns
            )
        })?;
        netns::enter_current_thread(&link.host_ns)?;
        let to_switch =
            packet_socket(&link.host_interface, Some(REINJECTED_MARK)).with_context(|| {
                format!(
                    "a packet socket on {} in {}",
                    link.host_interface, link.host_ns
                )
            })?;
        netns::run("ethtool", &["-K", &link.host_interface, "tx", "off"]).ok();
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .context("loading the fault object")?;
        {
            let mut config: Array<_, LinkFaults> = Array::try_from(
                ebpf.map_mut(shared::MAP_FAULT_CONFIG)
                    .context("no fault config map")?,
            )?;
            for d in Direction::ALL {
                config.set(d as u32, plan.direction(d).link_faults(plan.seed), 0)?;
            }
        }
        for (program, attach) in [
            (shared::PROGRAM_FAULT_TO_SWITCH, TcAttachType::Egress),
            (shared::PROGRAM_FAULT_FROM_SWITCH, TcAttachType::Ingress),
        ] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(program)
                .with_context(|| format!("no {program} program"))?
                .try_into()?;
            crate::switch::load_retrying(|| program.load())
                .context("verifying the fault program")?;
            program
                .attach(&link.host_interface, attach)
                .with_context(|| {
                    format!("attaching to {} in {}", link.host_interface, link.host_ns)
                })?;
        }
        Ok(Relay {
            ebpf,
            plan: plan.clone(),
            to_switch,
            from_switch,
        })
    }

    fn run(mut self, stop: &AtomicBool, report: &Mutex<LinkReport>) -> Result<()> {
        let mut ring = RingBuf::try_from(
            self.ebpf
                .take_map(shared::MAP_FAULT_FRAMES)
                .context("no fault ring")?,
        )?;
        let counts: PerCpuArray<MapData, FaultCounts> = PerCpuArray::try_from(
            self.ebpf
                .take_map(shared::MAP_FAULT_COUNTS)
                .context("no fault counts")?,
        )?;
        let mut waiting: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
        let mut order = 0u64;
        let mut relayed = LinkReport::default();
        let mut last_refresh = Instant::now();
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping {
                // Detached first, so that the last drain below sees every frame the programs
                // handed over and the counts read after it match what was relayed.
                self.detach()?;
            }
            while let Some(item) = ring.next() {
                if item.len() < std::mem::size_of::<HeldFrame>() {
                    continue;
                }
                // SAFETY: the program submits whole HeldFrames; read unaligned from the ring.
                let frame: HeldFrame = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                let Some(direction) = Direction::from_u32(frame.direction) else {
                    continue;
                };
                let len = (frame.len as usize).min(FRAME_MAX);
                let bytes = frame.bytes[..len].to_vec();
                let (held_for, copy_after) =
                    self.plan
                        .direction(direction)
                        .delays(self.plan.seed, direction, frame.n);
                let now = Instant::now();
                let sent_at = if frame.held != 0 { now + held_for } else { now };
                let mut schedule = |at: Instant, bytes: Vec<u8>| {
                    order += 1;
                    waiting.push(Reverse(Due {
                        at,
                        order,
                        direction,
                        bytes,
                    }));
                };
                if frame.held != 0 {
                    schedule(sent_at, bytes.clone());
                }
                if frame.duplicate != 0 {
                    schedule(sent_at + copy_after, bytes);
                }
            }
            let now = Instant::now();
            while let Some(Reverse(due)) = waiting.peek() {
                // When stopping, everything still held goes now: nothing is lost by a stop.
                if due.at > now && !stopping && waiting.len() <= HELD_MAX {
                    break;
                }
                let Reverse(due) = waiting.pop().expect("peeked");
                let r = relayed.direction_mut(due.direction);
                let late = now.saturating_duration_since(due.at).as_micros() as u64;
                if !stopping {
                    r.worst_lateness_us = r.worst_lateness_us.max(late);
                }
                let socket = match due.direction {
                    Direction::ToSwitch => &self.to_switch,
                    Direction::FromSwitch => &self.from_switch,
                };
                let mut bytes = due.bytes;
                if due.direction == Direction::FromSwitch {
                    bytes[6..12].copy_from_slice(&REINJECTED_MAC);
                }
                if send(socket, &bytes).is_ok() {
                    r.relayed += 1;
                } else {
                    r.send_errors += 1;
                }
            }
            if stopping || last_refresh.elapsed() >= RELAY_TICK {
                last_refresh = Instant::now();
                let mut merged = relayed;
                for d in Direction::ALL {
                    let per_cpu = counts.get(&(d as u32), 0)?;
                    let r = merged.direction_mut(d);
                    for c in per_cpu.iter() {
                        r.packets += c.seen;
                        r.dropped += c.dropped;
                        r.duplicated += c.duplicated;
                        r.held += c.held;
                        r.not_carried += c.not_carried;
                    }
                }
                *report.lock().expect("fault report poisoned") = merged;
            }
            if stopping {
                return Ok(());
            }
            let wait = waiting
                .peek()
                .map(|Reverse(d)| d.at.saturating_duration_since(Instant::now()))
                .unwrap_or(RELAY_TICK)
                .min(RELAY_TICK);
            poll_readable(ring.as_raw_fd(), wait);
        }
    }
}

impl Relay {
    fn detach(&mut self) -> Result<()> {
        for name in [
            shared::PROGRAM_FAULT_TO_SWITCH,
            shared::PROGRAM_FAULT_FROM_SWITCH,
        ] {
            let program: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .with_context(|| format!("no {name} program"))?
                .try_into()?;
            program.unload().context("detaching a fault program")?;
        }
        Ok(())
    }
}

/// An AF_PACKET socket that sends whole frames out of `interface` (in the calling thread's
/// namespace), with `mark` on every frame if given. It receives nothing (protocol 0).
fn packet_socket(interface: &str, mark: Option<u32>) -> Result<OwnedFd> {
    let ifindex = {
        let name = std::ffi::CString::new(interface)?;
        // SAFETY: a valid NUL-terminated name.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    };
    ensure!(ifindex != 0, "no interface {interface}");
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_ll is valid; the fields set are the documented ones.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: bind with a valid sockaddr_ll and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    ensure!(rc == 0, "bind: {}", std::io::Error::last_os_error());
    if let Some(mark) = mark {
        // SAFETY: setsockopt with a u32 and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&raw const mark).cast(),
                4,
            )
        };
        ensure!(rc == 0, "SO_MARK: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn send(socket: &OwnedFd, frame: &[u8]) -> std::io::Result<()> {
    // SAFETY: send(2) of a valid buffer on a bound packet socket.
    let n = unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until `fd` is readable or `timeout` passes.
fn poll_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
    // SAFETY: poll(2) on one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Packet loss on several hosts' links, from the switch (what arrives at each host), as
/// the linearizability tests use it: one [`Injector`] per host.
pub struct PacketLoss {
    _injectors: Vec<Injector>,
}

impl PacketLoss {
    /// Drops `percent` % of the packets arriving at each host of `links`, seeded.
    pub fn start(links: &[Link], percent: f64, seed: u64) -> Result<PacketLoss> {
        ensure!(
            (0.0..=100.0).contains(&percent),
            "loss is a percentage, not {percent}"
        );
        let plan = LinkPlan {
            from_switch: DirectionFaults::loss(percent / 100.0),
            seed,
            ..LinkPlan::default()
        };
        let injectors = links
            .iter()
            .map(|link| Injector::start(link, &plan))
            .collect::<Result<_>>()?;
        Ok(PacketLoss {
            _injectors: injectors,
        })
    }
}
