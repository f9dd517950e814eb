//! The control library of the XDP switch: the only code that loads the program and touches its
//! maps (as Katran's `KatranLb` is for Katran's programs).

pub mod admin;
pub mod packet;

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, DevMapHash, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use pegasus_common::switch::{self as shared, Counter, SwitchConfig};
use serde::Serialize;
use std::{collections::BTreeMap, ffi::CString};

/// The XDP object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pegasus-dataplane"));

/// How the program is attached to a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native) XDP: the fast path. On veth, the peer needs GRO or an XDP program.
    Native,
    /// Generic (skb) XDP: works on any interface, slower.
    Skb,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

impl std::str::FromStr for AttachMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "native" | "driver" => Ok(AttachMode::Native),
            "skb" | "generic" => Ok(AttachMode::Skb),
            _ => bail!("unknown XDP mode {s:?} (expected native or skb)"),
        }
    }
}

/// Settings the program needs before it sees its first packet.
#[derive(Clone, Copy, Debug)]
pub struct SwitchSettings {
    /// The stores' UDP port.
    pub store_port: u16,
    /// The epoch stamped into versions (bumped on every restart by the controller).
    pub epoch: u16,
}

/// Sum over CPUs of every switch counter, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// One counter's value (0 if absent).
    pub fn get(&self, c: Counter) -> u64 {
        self.0.get(c.name()).copied().unwrap_or(0)
    }
}

/// What a test run of the program on one packet gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketVerdict {
    /// The XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, `XDP_REDIRECT` = 4, `XDP_DROP` = 1).
    pub action: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

/// XDP action codes (from `linux/bpf.h`), for readable tests and output.
pub mod action {
    pub const ABORTED: u32 = 0;
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    pub const TX: u32 = 3;
    pub const REDIRECT: u32 = 4;

    /// The action's name.
    pub fn name(a: u32) -> &'static str {
        match a {
            ABORTED => "XDP_ABORTED",
            DROP => "XDP_DROP",
            PASS => "XDP_PASS",
            TX => "XDP_TX",
            REDIRECT => "XDP_REDIRECT",
            _ => "unknown",
        }
    }
}

/// A loaded switch program with its maps. Dropping it detaches the program from every port.
pub struct Switch {
    ebpf: Ebpf,
    attached: Vec<(String, XdpLinkId)>,
}

impl Switch {
    /// Loads the program into the kernel and writes its configuration. Nothing is attached yet.
    pub fn load(settings: SwitchSettings) -> Result<Switch> {
        if settings.store_port == 0 {
            bail!("the store port must not be 0");
        }
        let mut ebpf = Ebpf::load(OBJECT).context(
            "loading the XDP object into the kernel failed (are you root, with a kernel >= 5.12?)",
        )?;
        let program: &mut Xdp = ebpf
            .program_mut(shared::PROGRAM_SWITCH)
            .context("the object has no switch program")?
            .try_into()?;
        program
            .load()
            .context("the kernel's verifier rejected the switch program")?;
        let mut switch = Switch {
            ebpf,
            attached: Vec::new(),
        };
        let config = SwitchConfig {
            store_port: settings.store_port,
            epoch: settings.epoch,
            reserved: 0,
        };
        let mut config_map: Array<&mut MapData, SwitchConfig> =
            Array::try_from(switch.map_mut(shared::MAP_CONFIG)?)?;
        config_map.set(0, config, 0)?;
        Ok(switch)
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the object has no map {name}"))
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("the object has no map {name}"))
    }

    /// Lets the program redirect packets to `interface` (adds it to the PORTS DEVMAP).
    pub fn add_port(&mut self, interface: &str) -> Result<u32> {
        let ifindex = ifindex(interface)?;
        let mut ports: DevMapHash<&mut MapData> =
            DevMapHash::try_from(self.map_mut(shared::MAP_PORTS)?)?;
        ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding {interface} to the port map"))?;
        Ok(ifindex)
    }

    /// Adds `interface` as a port and attaches the program to it.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<()> {
        self.add_port(interface)?;
        let program: &mut Xdp = self
            .ebpf
            .program_mut(shared::PROGRAM_SWITCH)
            .context("no switch program")?
            .try_into()?;
        let link = program
            .attach(interface, mode.xdp_mode())
            .with_context(|| {
                format!("attaching XDP ({mode:?}) to {interface} failed; try --mode skb")
            })?;
        self.attached.push((interface.to_owned(), link));
        Ok(())
    }

    /// Interfaces the program is attached to.
    pub fn ports(&self) -> impl Iterator<Item = &str> {
        self.attached.iter().map(|(name, _)| name.as_str())
    }

    /// Detaches the program from every port (also done on drop).
    pub fn detach_all(&mut self) -> Result<()> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(shared::PROGRAM_SWITCH)
            .context("no switch program")?
            .try_into()?;
        for (name, link) in self.attached.drain(..) {
            program
                .detach(link)
                .with_context(|| format!("detaching from {name}"))?;
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map(shared::MAP_COUNTERS)?)?;
        let mut out = BTreeMap::new();
        for c in Counter::ALL {
            let per_cpu = map.get(&(c as u32), 0)?;
            out.insert(c.name().to_owned(), per_cpu.iter().sum());
        }
        Ok(Counters(out))
    }

    /// The global version counter (the counter part of the last stamped version).
    pub fn version_counter(&self) -> Result<u64> {
        let map: Array<&MapData, u64> = Array::try_from(self.map(shared::MAP_VERSION_COUNTER)?)?;
        Ok(map.get(&0, 0)?)
    }

    /// Runs the loaded program on one synthetic packet (`BPF_PROG_TEST_RUN`) and returns its
    /// verdict and the packet as the program left it. Maps are shared with the live program.
    /// The FIB lookups happen in the calling thread's network namespace.
    pub fn run_on_packet(&self, packet: &[u8]) -> Result<PacketVerdict> {
        let (verdict, _) = self.run_repeated(packet, 1)?;
        Ok(verdict)
    }

    /// Runs the program `repeat` times on the same packet; returns the last verdict and the
    /// kernel's mean time per run in nanoseconds.
    pub fn run_repeated(&self, packet: &[u8], repeat: u32) -> Result<(PacketVerdict, f64)> {
        if repeat == 0 {
            bail!("repeat must be at least 1");
        }
        let program: &Xdp = self
            .ebpf
            .program(shared::PROGRAM_SWITCH)
            .context("no switch program")?
            .try_into()?;
        // Room for the packet to grow (it never does today) and the kernel's headroom rules.
        let mut out = vec![0u8; packet.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                repeat,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN failed")?;
        out.truncate(result.data_size_out as usize);
        let ns = result.duration.as_nanos() as f64;
        Ok((
            PacketVerdict {
                action: result.return_value,
                packet: out,
            },
            ns,
        ))
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Err(e) = self.detach_all() {
            tracing::warn!("detaching the switch program: {e:#}");
        }
    }
}

/// The interface index of `name` in the current namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).context("interface name contains a NUL byte")?;
    // SAFETY: c is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface named {name:?} in this network namespace");
    }
    Ok(index)
}
