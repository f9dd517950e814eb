//! The control library of the XDP switch: the only code that loads the program and touches its
//! maps (as Katran's `KatranLb` is for Katran's programs).

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use pegasus_common::{
    cache::CacheEntry,
    directory::{Policy, SERVERS_MAX, ServerSet, bit},
    roles::PortRole,
    switch::{
        self as shared, Counter, CounterBlock, DirEntry, PortSlot, RetrySlot, ServerSlot,
        ServerTable, SwitchConfig,
    },
};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    ffi::CString,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

mod traffic;

/// How long a directory entry freed by a removal waits before another key gets it: a packet
/// that found the old key just before the removal may still be updating it (a program run
/// takes microseconds).
const ENTRY_REUSE_AFTER: Duration = Duration::from_millis(100);

/// `bpf_map_update_elem` flag: fail if the key exists (linux/bpf.h).
const BPF_NOEXIST: u64 = 1;

/// How many times a program load is tried when the verifier gave up because a signal arrived
/// during its run (EAGAIN; a long verification on a busy machine meets one now and then, and
/// libbpf retries likewise).
const LOAD_ATTEMPTS: u32 = 5;

/// Runs `load` (a program's `load()`), again on EAGAIN, up to [`LOAD_ATTEMPTS`] times.
pub(crate) fn load_retrying(
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < LOAD_ATTEMPTS =>
            {
                attempt += 1;
                tracing::debug!("program load interrupted (EAGAIN); attempt {attempt}");
            }
            other => return other,
        }
    }
}

/// The XDP object built by `build.rs`.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pegasus-dataplane"));

/// How the program is attached to a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// What the switch does with the hot keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SwitchMode {
    /// Pegasus: a coherence directory steers and replicates their requests
    /// (`pegasus_switch`).
    #[default]
    Directory,
    /// The in-switch cache baseline (NetCache-style): their reads are answered from values
    /// the switch caches, their writes go home (`pegasus_cache`, docs/cache.md).
    Cache,
}

impl SwitchMode {
    /// The XDP program of this mode.
    pub fn program(self) -> &'static str {
        match self {
            SwitchMode::Directory => shared::PROGRAM_SWITCH,
            SwitchMode::Cache => shared::PROGRAM_CACHE,
        }
    }
}

/// Settings the program needs before it sees its first packet.
#[derive(Clone, Debug)]
pub struct SwitchSettings {
    /// The stores' UDP port.
    pub store_port: u16,
    /// The epoch stamped into versions (bumped on every restart by the controller).
    pub epoch: u16,
    /// How the directory picks a server for a hot key.
    pub policy: Policy,
    /// Copies of a hot key's write, primary included.
    pub replication: u8,
    /// Most hot keys the directory holds.
    pub directory_capacity: u32,
    /// One request in this many is sampled for hot-key detection (0 = none).
    pub sample_period: u16,
    /// The rack's servers: id and IPv4 address.
    pub servers: Vec<(u8, Ipv4Addr)>,
    /// Directory (Pegasus) or cache (the baseline).
    pub mode: SwitchMode,
    /// A rack of a chain other than the tail: steered hot reads carry the committed version
    /// ([`SwitchConfig::mark_committed`]).
    pub mark_committed: bool,
}

impl SwitchSettings {
    /// Settings for a switch with no servers known (forwarding and version stamping only).
    pub fn forwarding_only(store_port: u16, epoch: u16) -> SwitchSettings {
        SwitchSettings {
            store_port,
            epoch,
            policy: Policy::LeastLoaded,
            replication: 1,
            directory_capacity: shared::DIRECTORY_CAPACITY_DEFAULT,
            sample_period: 0,
            servers: Vec::new(),
            mode: SwitchMode::Directory,
            mark_committed: false,
        }
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.store_port != 0, "the store port must not be 0");
        ensure!(
            (1..=shared::DIRECTORY_CAPACITY_MAX).contains(&self.directory_capacity),
            "the directory capacity must be between 1 and {}",
            shared::DIRECTORY_CAPACITY_MAX
        );
        ensure!(
            (1..=SERVERS_MAX).contains(&(self.replication as u32)),
            "the replication factor must be between 1 and {SERVERS_MAX}"
        );
        ensure!(
            self.sample_period <= shared::SAMPLE_PERIOD_MAX,
            "the sample period must be at most {}",
            shared::SAMPLE_PERIOD_MAX
        );
        for (id, _) in &self.servers {
            ensure!((*id as u32) < SERVERS_MAX, "server id {id} out of range");
        }
        Ok(())
    }
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
    directory_capacity: u32,
    mode: SwitchMode,
    /// Test runs: the port a frame from each /24 arrives on (see [`Switch::run_on_packet`]).
    test_ingress: Vec<([u8; 3], u32)>,
    /// Directory entries (each also its key's replica target slot): free ones, ones freed
    /// recently (not reused until [`ENTRY_REUSE_AFTER`] has passed), the one each key in the
    /// directory holds, and the entries of the keys in each hot filter slot that has any.
    free_entries: Vec<u16>,
    released_entries: std::collections::VecDeque<(u16, Instant)>,
    entries: std::collections::HashMap<u64, u16>,
    filter_slots: std::collections::HashMap<u32, Vec<u32>>,
    /// Yardsticks attached by [`Switch::load_yardstick`].
    yardstick_links: Vec<(&'static str, XdpLinkId)>,
}

impl Switch {
    /// Loads the program into the kernel and writes its configuration and server table.
    /// Nothing is attached yet.
    pub fn load(settings: &SwitchSettings) -> Result<Switch> {
        settings.validate()?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(shared::MAP_DIRECTORY, settings.directory_capacity)
            .map_max_entries(shared::MAP_DIRECTORY_INDEX, settings.directory_capacity)
            .map_max_entries(shared::MAP_EVICTING, settings.directory_capacity)
            .map_max_entries(shared::MAP_CACHE, settings.directory_capacity)
            .map_max_entries(shared::MAP_REPLICA_TARGETS, settings.directory_capacity)
            .load(OBJECT)
            .context(
                "loading the XDP object into the kernel failed (are you root, with a kernel >= 5.12?)",
            )?;
        let name = settings.mode.program();
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("the object has no program {name}"))?
            .try_into()?;
        load_retrying(|| program.load())
            .with_context(|| format!("the kernel's verifier rejected the program {name}"))?;
        let mut switch = Switch {
            ebpf,
            attached: Vec::new(),
            directory_capacity: settings.directory_capacity,
            mode: settings.mode,
            test_ingress: Vec::new(),
            // Entry 0 last: taken entries are never 0 while others are free.
            free_entries: (0..settings.directory_capacity.min(u16::MAX as u32 + 1))
                .rev()
                .map(|s| s as u16)
                .collect(),
            released_entries: std::collections::VecDeque::new(),
            entries: std::collections::HashMap::new(),
            filter_slots: std::collections::HashMap::new(),
            yardstick_links: Vec::new(),
        };
        let mut table = ServerTable::default();
        let mut all_servers: ServerSet = 0;
        for &(id, ip) in &settings.servers {
            table.slots[id as usize] = ServerSlot {
                ipv4: ip.octets(),
                load: 0,
                valid: 1,
                reserved: 0,
            };
            all_servers |= bit(id);
        }
        let mut servers: Array<&mut MapData, ServerTable> =
            Array::try_from(switch.map_mut(shared::MAP_SERVERS)?)?;
        servers.set(0, table, 0)?;
        let config = SwitchConfig {
            store_port: settings.store_port,
            epoch: settings.epoch,
            all_servers,
            policy: settings.policy as u8,
            replication: settings.replication,
            sample_period: settings.sample_period,
            mark_committed: settings.mark_committed as u8,
            reserved: [0; 7],
        };
        let mut config_map: Array<&mut MapData, SwitchConfig> =
            Array::try_from(switch.map_mut(shared::MAP_CONFIG)?)?;
        config_map.set(0, config, 0)?;
        Ok(switch)
    }

    /// Puts a key in the directory with `home` as its only replica (and, in cache mode, a
    /// new entry in the cache, which the program fills). The entries are written only here:
    /// afterwards only the XDP program changes them (under their locks).
    pub fn directory_insert(&mut self, keyhash: u64, home: u8) -> Result<()> {
        ensure!(
            (home as u32) < SERVERS_MAX,
            "home server {home} out of range"
        );
        ensure!(
            !self.entries.contains_key(&keyhash),
            "the key is already in the directory"
        );
        let slot = self.free_entry().with_context(|| {
            format!(
                "the directory is full ({} keys; {} freed entries wait {} ms before reuse)",
                self.entries.len(),
                self.released_entries.len(),
                ENTRY_REUSE_AFTER.as_millis()
            )
        })?;
        if self.mode == SwitchMode::Cache {
            // Before the filter: the program looks the key up from then on.
            let mut cache: HashMap<&mut MapData, u64, CacheEntry> =
                HashMap::try_from(self.map_mut(shared::MAP_CACHE)?)?;
            cache
                .insert(keyhash, CacheEntry::new(), BPF_NOEXIST)
                .map_err(|e| anyhow::anyhow!("adding the key to the cache: {e}"))?;
        }
        // The key starts with the configured replication (target 0) until the controller
        // sizes it by its load.
        self.write_replica_target(slot, 0)?;
        let entry = DirEntry {
            replica_slot: slot,
            ..DirEntry::new(keyhash, home)
        };
        // The entry, then the index, then the filter: from the filter's change on, the
        // program finds the key, and everything it finds then is in place. The entry is free
        // (no slot has pointed to it for `ENTRY_REUSE_AFTER`): nothing races this write.
        let mut dir: Array<&mut MapData, DirEntry> =
            Array::try_from(self.map_mut(shared::MAP_DIRECTORY)?)?;
        dir.set(u32::from(slot), entry, 0)?;
        let mut index: HashMap<&mut MapData, u64, u32> =
            HashMap::try_from(self.map_mut(shared::MAP_DIRECTORY_INDEX)?)?;
        if let Err(e) = index.insert(keyhash, u32::from(slot), BPF_NOEXIST) {
            self.cache_remove(keyhash)?;
            return Err(e).context("adding the key to the directory's index");
        }
        self.free_entries.pop();
        self.entries.insert(keyhash, slot);
        self.adjust_hot_filter(keyhash, slot, true)?;
        Ok(())
    }

    /// An entry no key holds and none has held for [`ENTRY_REUSE_AFTER`] (it stays in the
    /// free list until the caller takes it).
    fn free_entry(&mut self) -> Option<u16> {
        while let Some(&(slot, released)) = self.released_entries.front()
            && released.elapsed() >= ENTRY_REUSE_AFTER
        {
            self.released_entries.pop_front();
            self.free_entries.push(slot);
        }
        self.free_entries.last().copied()
    }

    /// Sets how many servers a hot key's writes go to (copies included; 0: the configured
    /// replication). One array store: the program reads the target on each hot write.
    pub fn set_replica_target(&mut self, keyhash: u64, replicas: u8) -> Result<()> {
        ensure!(
            u32::from(replicas) <= SERVERS_MAX,
            "a replica target of {replicas} is more than {SERVERS_MAX} servers"
        );
        let slot = *self
            .entries
            .get(&keyhash)
            .context("the key is not in the directory")?;
        self.write_replica_target(slot, replicas)
    }

    /// A hot key's replica target (0: the configured replication), if it is in the directory.
    pub fn replica_target(&self, keyhash: u64) -> Result<Option<u8>> {
        let Some(&slot) = self.entries.get(&keyhash) else {
            return Ok(None);
        };
        let map: Array<&MapData, u8> = Array::try_from(self.map(shared::MAP_REPLICA_TARGETS)?)?;
        Ok(Some(map.get(&u32::from(slot), 0)?))
    }

    fn write_replica_target(&mut self, slot: u16, replicas: u8) -> Result<()> {
        let mut map: Array<&mut MapData, u8> =
            Array::try_from(self.map_mut(shared::MAP_REPLICA_TARGETS)?)?;
        map.set(u32::from(slot), replicas, 0)?;
        Ok(())
    }

    /// Removes a key from the directory (and its evicting mark). Only safe once its home holds
    /// the newest version: see `controller::Controller::evict`.
    pub fn directory_remove(&mut self, keyhash: u64) -> Result<()> {
        if let Some(slot) = self.entries.remove(&keyhash) {
            // The filter, then the index: from the filter's change on, the program no longer
            // finds the key. A packet that found it just before may still update the entry,
            // which is why the entry waits before another key gets it.
            self.adjust_hot_filter(keyhash, slot, false)?;
            let mut index: HashMap<&mut MapData, u64, u32> =
                HashMap::try_from(self.map_mut(shared::MAP_DIRECTORY_INDEX)?)?;
            removed(index.remove(&keyhash))?;
            self.released_entries.push_back((slot, Instant::now()));
        }
        self.cache_remove(keyhash)?;
        self.set_evicting(keyhash, false)
    }

    /// Removes a key's cache entry (cache mode): its reads go home from then on, which holds
    /// every write (all of them went there).
    fn cache_remove(&mut self, keyhash: u64) -> Result<()> {
        if self.mode == SwitchMode::Cache {
            let mut cache: HashMap<&mut MapData, u64, CacheEntry> =
                HashMap::try_from(self.map_mut(shared::MAP_CACHE)?)?;
            removed(cache.remove(&keyhash))?;
        }
        Ok(())
    }

    /// A consistent copy of a key's cache entry (cache mode; `None` in directory mode or for a
    /// key not cached), taken as [`Self::directory_entry`] takes one.
    pub fn cache_entry(&self, keyhash: u64) -> Result<Option<CacheEntry>> {
        if self.mode != SwitchMode::Cache {
            return Ok(None);
        }
        let cache: HashMap<&MapData, u64, CacheEntry> =
            HashMap::try_from(self.map(shared::MAP_CACHE)?)?;
        consistent_copy(
            || ignore_missing(cache.get(&keyhash, 0).map(Some)),
            |first: &CacheEntry, second| first.seq.is_multiple_of(2) && first.seq == second.seq,
        )
        .with_context(|| format!("the cache entry of {keyhash:#x}"))
    }

    /// Directory or cache.
    pub fn mode(&self) -> SwitchMode {
        self.mode
    }

    /// Adds a directory key's entry to (or removes it from) its hot filter slot and writes
    /// the slot's word ([`shared::hot_filter_word`]). Only the control plane writes the
    /// filter, one key at a time.
    fn adjust_hot_filter(&mut self, keyhash: u64, entry: u16, add: bool) -> Result<()> {
        let slot = shared::hot_filter_slot(keyhash);
        let keys = self.filter_slots.entry(slot).or_default();
        if add {
            keys.push(u32::from(entry));
        } else {
            let at = keys
                .iter()
                .position(|&e| e == u32::from(entry))
                .expect("a directory key's entry is in its filter slot");
            keys.swap_remove(at);
        }
        let word = shared::hot_filter_word(keys);
        if keys.is_empty() {
            self.filter_slots.remove(&slot);
        }
        let mut filter: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(shared::MAP_HOT_FILTER)?)?;
        filter.set(slot, word, 0)?;
        Ok(())
    }

    /// Marks a key as being evicted (its writes go home), or clears the mark.
    pub fn set_evicting(&mut self, keyhash: u64, evicting: bool) -> Result<()> {
        let marked = self.is_evicting(keyhash)?;
        if evicting && !marked {
            // The count first: the program must not skip the lookup of a marked key.
            let count = self.evicting_count()? + 1;
            self.set_evictions(count)?;
            let mut marks: HashMap<&mut MapData, u64, u8> =
                HashMap::try_from(self.map_mut(shared::MAP_EVICTING)?)?;
            marks.insert(keyhash, 1, 0)?;
        } else if !evicting && marked {
            let mut marks: HashMap<&mut MapData, u64, u8> =
                HashMap::try_from(self.map_mut(shared::MAP_EVICTING)?)?;
            removed(marks.remove(&keyhash))?;
            let count = self.evicting_count()?;
            self.set_evictions(count)?;
        }
        Ok(())
    }

    /// Keys marked in `EVICTING`.
    fn evicting_count(&self) -> Result<u32> {
        let marks: HashMap<&MapData, u64, u8> = HashMap::try_from(self.map(shared::MAP_EVICTING)?)?;
        let mut count = 0u32;
        for key in marks.keys() {
            key?;
            count += 1;
        }
        Ok(count)
    }

    fn set_evictions(&mut self, count: u32) -> Result<()> {
        let mut map: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(shared::MAP_EVICTIONS)?)?;
        map.set(0, count, 0)?;
        Ok(())
    }

    /// True when the key is marked as being evicted.
    pub fn is_evicting(&self, keyhash: u64) -> Result<bool> {
        let marks: HashMap<&MapData, u64, u8> = HashMap::try_from(self.map(shared::MAP_EVICTING)?)?;
        Ok(ignore_missing(marks.get(&keyhash, 0).map(Some))?.is_some())
    }

    /// A consistent copy of a key's entry: the program may be updating it, so copies are taken
    /// until two agree on an even seqlock counter (bounded attempts).
    pub fn directory_entry(&self, keyhash: u64) -> Result<Option<DirEntry>> {
        let Some(&slot) = self.entries.get(&keyhash) else {
            return Ok(None);
        };
        let dir: Array<&MapData, DirEntry> = Array::try_from(self.map(shared::MAP_DIRECTORY)?)?;
        let entry = consistent_copy(
            || Ok(Some(dir.get(&u32::from(slot), 0)?)),
            |first, second| {
                first.seq.is_multiple_of(2)
                    && first.seq == second.seq
                    && (first.ver_completed, first.rset) == (second.ver_completed, second.rset)
            },
        )
        .with_context(|| format!("the directory entry of {keyhash:#x}"))?;
        if let Some(entry) = &entry {
            ensure!(
                entry.keyhash == keyhash,
                "directory entry {slot} names {:#x}, not {keyhash:#x}",
                entry.keyhash
            );
        }
        Ok(entry)
    }

    /// Every key in the directory with a consistent copy of its entry.
    pub fn directory_list(&self) -> Result<Vec<(u64, DirEntry)>> {
        let mut keys: Vec<u64> = self.entries.keys().copied().collect();
        keys.sort_unstable();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(e) = self.directory_entry(k)? {
                out.push((k, e));
            }
        }
        Ok(out)
    }

    /// The load each server last reported, by server id.
    pub fn server_loads(&self) -> Result<Vec<(u8, u16)>> {
        let table: Array<&MapData, ServerTable> = Array::try_from(self.map(shared::MAP_SERVERS)?)?;
        let t = table.get(&0, 0)?;
        Ok((0..SERVERS_MAX as u8)
            .filter(|&i| t.slots[i as usize].valid != 0)
            .map(|i| (i, t.slots[i as usize].load))
            .collect())
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the object has no map {name}"))
    }

    /// Fences the retry routes (see `shared::RETRY_FENCE_WORD`): for the next retry window,
    /// every retried write whose route this switch did not remember itself is dropped. For a
    /// restarted switch, before it attaches: the writes of the switch before it may still be
    /// retried.
    pub fn fence_retries(&mut self) -> Result<()> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to write to. The coarse monotonic clock is the one the
        // program stamps routes with (bpf_ktime_get_coarse_ns).
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
        ensure!(
            rc == 0,
            "clock_gettime: {}",
            std::io::Error::last_os_error()
        );
        let fence = RetrySlot {
            word: shared::RETRY_FENCE_WORD,
            written_ns: now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64,
        };
        let mut routes: Array<&mut MapData, RetrySlot> =
            Array::try_from(self.map_mut(shared::MAP_RETRY_ROUTES)?)?;
        for slot in 0..shared::RETRY_ROUTES_CAPACITY {
            routes.set(slot, fence, 0)?;
        }
        Ok(())
    }

    /// Stamps versions in `epoch` from now on (the counter goes on: versions keep growing).
    /// Requests whose client learned another epoch are refused with the new one
    /// (`once::admits_epoch`), as after a restart.
    pub fn set_epoch(&mut self, epoch: u16) -> Result<()> {
        let mut config_map: Array<&mut MapData, SwitchConfig> =
            Array::try_from(self.map_mut(shared::MAP_CONFIG)?)?;
        let mut config = config_map.get(&0, 0)?;
        ensure!(
            epoch >= config.epoch,
            "the version epoch goes back from {} to {epoch}",
            config.epoch
        );
        config.epoch = epoch;
        config_map.set(0, config, 0)?;
        Ok(())
    }

    /// Samples one GET or PUT in `period` from now on (0: none); the controller adapts it to
    /// the rack's rate (`controller::hotkeys::sample_period_for`).
    pub fn set_sample_period(&mut self, period: u16) -> Result<()> {
        ensure!(
            period <= shared::SAMPLE_PERIOD_MAX,
            "the sample period must be at most {}",
            shared::SAMPLE_PERIOD_MAX
        );
        let mut config_map: Array<&mut MapData, SwitchConfig> =
            Array::try_from(self.map_mut(shared::MAP_CONFIG)?)?;
        let mut config = config_map.get(&0, 0)?;
        config.sample_period = period;
        config_map.set(0, config, 0)?;
        Ok(())
    }

    /// The sample period in effect (one GET or PUT in this many sampled; 0: none).
    pub fn sample_period(&self) -> Result<u16> {
        let config_map: Array<&MapData, SwitchConfig> =
            Array::try_from(self.map(shared::MAP_CONFIG)?)?;
        Ok(config_map.get(&0, 0)?.sample_period)
    }

    /// Most keys the directory holds (fixed at load time).
    pub fn directory_capacity(&self) -> u32 {
        self.directory_capacity
    }

    /// Takes the samples ring buffer out of the switch (once): its reader is the hot-key
    /// detection's, not the switch's.
    pub fn take_samples(&mut self) -> Result<SampleReader> {
        let map = self
            .ebpf
            .take_map(shared::MAP_SAMPLES)
            .context("the samples ring buffer was already taken")?;
        Ok(SampleReader {
            ring: RingBuf::try_from(map)?,
        })
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("the object has no map {name}"))
    }

    /// Lets the program redirect packets to `interface` (adds it to the PORTS DEVMAP) and
    /// records the port's role, which decides what the program admits from it
    /// (`pegasus_common::roles`). Two ports whose ifindexes share a role slot are refused.
    pub fn add_port(&mut self, interface: &str, role: PortRole) -> Result<u32> {
        let ifindex = ifindex(interface)?;
        let mut roles: Array<&mut MapData, PortSlot> =
            Array::try_from(self.map_mut(shared::MAP_PORT_ROLES)?)?;
        let slot = shared::port_slot(ifindex);
        let held = roles.get(&slot, 0)?;
        ensure!(
            held.ifindex == 0 || held.ifindex == ifindex,
            "{interface} (ifindex {ifindex}) shares its role slot with ifindex {}; the switch \
             tells ports apart by ifindex modulo {}",
            held.ifindex,
            shared::PORT_ROLE_SLOTS
        );
        let entry = PortSlot {
            ifindex,
            role: role as u8,
            reserved: [0; 3],
        };
        roles.set(slot, entry, 0)?;
        let mut ports: DevMapHash<&mut MapData> =
            DevMapHash::try_from(self.map_mut(shared::MAP_PORTS)?)?;
        ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding {interface} to the port map"))?;
        Ok(ifindex)
    }

    /// Adds `interface` as a port with `role` and attaches the program to it.
    pub fn attach(&mut self, interface: &str, role: PortRole, mode: AttachMode) -> Result<()> {
        self.add_port(interface, role)?;
        let program: &mut Xdp = self
            .ebpf
            .program_mut(self.mode.program())
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
            .program_mut(self.mode.program())
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
        let map: PerCpuArray<&MapData, CounterBlock> =
            PerCpuArray::try_from(self.map(shared::MAP_COUNTERS)?)?;
        let per_cpu = map.get(&0, 0)?;
        let mut out = BTreeMap::new();
        for &c in Counter::ALL {
            let total = per_cpu.iter().map(|block| block.values[c as usize]).sum();
            out.insert(c.name().to_owned(), total);
        }
        Ok(Counters(out))
    }

    /// The global version counter (the counter part of the last stamped version).
    /// Starts a new generation of the forwarding cache: every cached decision is asked of the
    /// FIB again, so route and neighbour changes take effect. The running switch calls it
    /// every `FIB_GENERATION_PERIOD_MS`.
    pub fn bump_fib_generation(&mut self) -> Result<u32> {
        let mut map: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(shared::MAP_FIB_GENERATION)?)?;
        // 0 and 1 are the same generation to the program (an unset map reads 0).
        let next = map.get(&0, 0)?.wrapping_add(1).max(2);
        map.set(0, next, 0)?;
        Ok(next)
    }

    pub fn version_counter(&self) -> Result<u64> {
        let map: Array<&MapData, u64> = Array::try_from(self.map(shared::MAP_VERSION_COUNTER)?)?;
        Ok(map.get(&0, 0)?)
    }

    /// Test kit: sets a key's directory entry to exactly `entry` (inserting it, filter slot
    /// included, if absent), so that a fixture can start from any state. A running switch's
    /// controller never does this: it would race the program's own updates.
    #[cfg(feature = "testkit")]
    pub fn set_directory_entry(&mut self, keyhash: u64, entry: DirEntry) -> Result<()> {
        if self.directory_entry(keyhash)?.is_none() {
            self.directory_insert(keyhash, entry.home)?;
        }
        let slot = self.entries[&keyhash];
        let entry = DirEntry {
            keyhash,
            replica_slot: slot,
            ..entry
        };
        let mut dir: Array<&mut MapData, DirEntry> =
            Array::try_from(self.map_mut(shared::MAP_DIRECTORY)?)?;
        dir.set(u32::from(slot), entry, 0)?;
        Ok(())
    }

    /// Test kit: sets the version counter (the next PUT is stamped with `counter + 1`).
    #[cfg(feature = "testkit")]
    pub fn set_version_counter(&mut self, counter: u64) -> Result<()> {
        let mut map: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut(shared::MAP_VERSION_COUNTER)?)?;
        map.set(0, counter, 0)?;
        Ok(())
    }

    /// Test kit: sets a client's window of recently stamped writes.
    #[cfg(feature = "testkit")]
    pub fn set_write_window(
        &mut self,
        client_id: u16,
        window: pegasus_common::once::ClientWindow,
    ) -> Result<()> {
        let mut map: Array<&mut MapData, pegasus_common::once::ClientWindow> =
            Array::try_from(self.map_mut(shared::MAP_WRITE_WINDOWS)?)?;
        map.set(client_id as u32, window, 0)?;
        Ok(())
    }

    /// Test kit: a client's window of recently stamped writes.
    #[cfg(feature = "testkit")]
    pub fn write_window(&self, client_id: u16) -> Result<pegasus_common::once::ClientWindow> {
        let map: Array<&MapData, pegasus_common::once::ClientWindow> =
            Array::try_from(self.map(shared::MAP_WRITE_WINDOWS)?)?;
        Ok(map.get(&(client_id as u32), 0)?)
    }

    /// Test kit: sets one slot of the retry routes.
    #[cfg(feature = "testkit")]
    pub fn set_retry_slot(&mut self, slot: u32, value: RetrySlot) -> Result<()> {
        let mut map: Array<&mut MapData, RetrySlot> =
            Array::try_from(self.map_mut(shared::MAP_RETRY_ROUTES)?)?;
        map.set(slot, value, 0)?;
        Ok(())
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
        self.test_run(self.mode.program(), packet, repeat)
    }

    /// Loads one of the minimal programs the benchmark compares the switch with
    /// ([`Yardstick`]), if it is not loaded yet, and attaches it (native mode) to `interface`
    /// until [`Self::detach_yardsticks`] or the switch is dropped. Attached, it stays in the
    /// kernel's XDP dispatcher: a test run of a program that is not there adds and removes
    /// it, waiting for an RCU grace period each time (milliseconds per call).
    /// [`Yardstick::Forward`] redirects to the port `to` (which must be one of the switch's
    /// ports for the redirect to happen).
    pub fn load_yardstick(
        &mut self,
        yardstick: Yardstick,
        interface: &str,
        to: Option<u32>,
    ) -> Result<()> {
        if let Some(port) = to {
            let mut map: Array<&mut MapData, u32> =
                Array::try_from(self.map_mut(shared::MAP_BASELINE_PORT)?)?;
            map.set(0, port, 0)?;
        }
        let link = self.attach_extra(yardstick.program(), interface)?;
        self.yardstick_links.push((yardstick.program(), link));
        Ok(())
    }

    /// Detaches every yardstick [`Self::load_yardstick`] attached (they stay loaded).
    pub fn detach_yardsticks(&mut self) -> Result<()> {
        for (name, link) in std::mem::take(&mut self.yardstick_links) {
            let program: &mut Xdp = self
                .ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            program
                .detach(link)
                .with_context(|| format!("detaching {name}"))?;
        }
        Ok(())
    }

    /// Loads the object's program `name` if it is not loaded yet.
    fn load_extra(&mut self, name: &str) -> Result<&mut Xdp> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("the object has no program {name}"))?
            .try_into()?;
        if program.fd().is_err() {
            load_retrying(|| program.load())
                .with_context(|| format!("the kernel's verifier rejected {name}"))?;
        }
        Ok(program)
    }

    /// Loads the object's program `name` if needed and attaches it (native mode) to
    /// `interface` of the calling thread's network namespace.
    fn attach_extra(&mut self, name: &str, interface: &str) -> Result<XdpLinkId> {
        self.load_extra(name)?
            .attach(interface, AttachMode::Native.xdp_mode())
            .with_context(|| format!("attaching {name} to {interface}"))
    }

    /// As [`Self::run_repeated`], for a yardstick ([`Self::load_yardstick`] first).
    pub fn run_yardstick_repeated(
        &self,
        yardstick: Yardstick,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(PacketVerdict, f64)> {
        self.test_run(yardstick.program(), packet, repeat)
    }

    /// Test kit: a frame whose IPv4 source is in `prefix`/24 is test-run as if it arrived on
    /// port `ifindex` (whose role then applies); other frames arrive on no port (the
    /// namespace's loopback, a client port for the program).
    #[cfg(feature = "testkit")]
    pub fn set_test_ingress(&mut self, prefix: [u8; 3], ifindex: u32) {
        self.test_ingress.retain(|(p, _)| *p != prefix);
        self.test_ingress.push((prefix, ifindex));
    }

    /// The `xdp_md` a test run of `packet` starts from: its ingress port, when known.
    fn test_context(&self, packet: &[u8]) -> Option<[u8; 24]> {
        let is_ipv4 = packet.get(12..14) == Some(&[0x08, 0x00][..]);
        let source = packet.get(26..29).filter(|_| is_ipv4)?;
        let &(_, ifindex) = self.test_ingress.iter().find(|(p, _)| p == source)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (u32 each); data_end must be the packet's length.
        let mut md = [0u8; 24];
        md[4..8].copy_from_slice(&(packet.len() as u32).to_ne_bytes());
        md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        Some(md)
    }

    fn test_run(&self, name: &str, packet: &[u8], repeat: u32) -> Result<(PacketVerdict, f64)> {
        if repeat == 0 {
            bail!("repeat must be at least 1");
        }
        let context = self.test_context(packet);
        let program: &Xdp = self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        // Room for the packet to grow (it never does today) and the kernel's headroom rules.
        let mut out = vec![0u8; packet.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ctx_in: context.as_ref().map(|c| &c[..]),
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

/// A missing key is not an error for removals and lookups.
/// Reads the requests the switch samples (`shared::MAP_SAMPLES`).
pub struct SampleReader {
    ring: RingBuf<MapData>,
}

impl SampleReader {
    /// Hands every sample waiting in the ring buffer to `each`; returns how many there were.
    /// Malformed records (never written by this program) are skipped.
    pub fn drain(&mut self, mut each: impl FnMut(&shared::Sample)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<shared::Sample>() {
                // SAFETY: the record holds a Sample written by the program (a plain C struct
                // of integers and bytes: every bit pattern is valid); read unaligned.
                let sample =
                    unsafe { std::ptr::read_unaligned(item.as_ptr() as *const shared::Sample) };
                each(&sample);
                n += 1;
            }
        }
        n
    }
}

/// The minimal XDP programs `pegasus switch cost` measures the switch against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Yardstick {
    /// Parse Ethernet/IPv4/UDP, swap the addresses, `XDP_TX` (the yardstick).
    Reflect,
    /// The same, then redirect through the `PORTS` DEVMAP: the least any XDP switch does.
    Forward,
    /// `Reflect`, then the atomic fetch-add on the version counter that stamps a write.
    Stamp,
}

impl Yardstick {
    fn program(self) -> &'static str {
        match self {
            Yardstick::Reflect => shared::PROGRAM_BASELINE,
            Yardstick::Forward => shared::PROGRAM_BASELINE_FORWARD,
            Yardstick::Stamp => shared::PROGRAM_BASELINE_STAMP,
        }
    }
}

/// A copy of a map value that `agree` accepts of two reads in a row by `read` (the program may
/// be updating it; bounded attempts); `None` when `read` finds no value.
fn consistent_copy<V>(
    read: impl Fn() -> Result<Option<V>>,
    agree: impl Fn(&V, &V) -> bool,
) -> Result<Option<V>> {
    const ATTEMPTS_MAX: usize = 1000;
    for _ in 0..ATTEMPTS_MAX {
        let (Some(first), Some(second)) = (read()?, read()?) else {
            return Ok(None);
        };
        if agree(&first, &second) {
            return Ok(Some(second));
        }
        std::thread::yield_now();
    }
    bail!("it kept changing; try again")
}

/// Whether a map delete removed something (a missing key is not an error).
fn removed(r: Result<(), MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(ref s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(MapError::KeyNotFound) | Err(MapError::ElementNotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn ignore_missing<T: Default>(r: Result<T, MapError>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(MapError::KeyNotFound) | Err(MapError::ElementNotFound) => Ok(T::default()),
        Err(e) => Err(e.into()),
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
