//! What the switch (the XDP program) and its controller share: the map value types, the map
//! names, the counter indices, and the rule that classifies a packet.
//!
//! The types are `#[repr(C)]` plain old data: they are copied byte for byte between user space
//! and the kernel. With the `user` feature they implement `aya::Pod`.

use crate::wire::{self, Op};

/// Name of the single-entry array holding [`SwitchConfig`].
pub const MAP_CONFIG: &str = "CONFIG";
/// Name of the single-entry array holding the global version counter (a `u64`).
pub const MAP_VERSION_COUNTER: &str = "VERSION_COUNTER";
/// Name of the per-CPU array holding one [`CounterBlock`] (the counters, indexed by
/// [`Counter`]): one map lookup per packet, however many counters it bumps.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the DEVMAP_HASH of the ports the switch may redirect to (key and value: ifindex).
pub const MAP_PORTS: &str = "PORTS";
/// Name of the array of [`DirEntry`]s: the coherence directory, one entry per hot key, at the
/// index the controller gave the key (its capacity is the directory's, set at load time). A
/// key is found through [`MAP_HOT_FILTER`], and through [`MAP_DIRECTORY_INDEX`] only when
/// its filter slot is shared; the entry names its key ([`DirEntry::keyhash`]), which the
/// program checks.
pub const MAP_DIRECTORY: &str = "DIRECTORY";
/// Name of the hash map keyhash -> entry index (`u32`) of every key in the directory: asked
/// only for keys whose hot filter slot more than one hot key shares.
pub const MAP_DIRECTORY_INDEX: &str = "DIRECTORY_INDEX";
/// Name of the array of [`HOT_FILTER_SLOTS`] words (`u32`) that finds a key's entry without a
/// hash lookup: slot [`hot_filter_slot`] of a key says whether no hot key, one (then which
/// entry) or several share it ([`read_hot_filter`]). So a cold key costs one array lookup,
/// and a hot key two (filter, entry) unless its slot is shared. The controller writes a key's
/// entry before its slot and its slot before it reuses the entry: the program never misses
/// a key in the directory.
pub const MAP_HOT_FILTER: &str = "HOT_FILTER";
/// Slots of the hot filter: 256 KiB. With 64 hot keys, a cold key finds its slot taken 0.1%
/// of the time (and then compares the entry's key); with 4,096, 6%. Two hot keys share a
/// slot as often (then both are found through the index).
pub const HOT_FILTER_SLOTS: u32 = 65_536;
/// A hot filter slot no hot key has.
pub const HOT_FILTER_EMPTY: u32 = 0;
/// A hot filter slot that more than one hot key shares.
pub const HOT_FILTER_SHARED: u32 = u32::MAX;

/// The hot filter slot of a key hash: its top 16 bits.
#[inline(always)]
pub const fn hot_filter_slot(keyhash: u64) -> u32 {
    (keyhash >> 48) as u32 & (HOT_FILTER_SLOTS - 1)
}

/// What a hot filter slot says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterAnswer {
    /// No hot key has the slot: the key is cold.
    Cold,
    /// One hot key has it, whose entry is at this index (the key may be another one).
    Entry(u32),
    /// Several do: ask the index.
    Shared,
}

/// Reads a hot filter slot's word.
#[inline(always)]
pub const fn read_hot_filter(word: u32) -> FilterAnswer {
    match word {
        HOT_FILTER_EMPTY => FilterAnswer::Cold,
        HOT_FILTER_SHARED => FilterAnswer::Shared,
        index_plus_one => FilterAnswer::Entry(index_plus_one - 1),
    }
}

/// The word of a hot filter slot held by the hot keys whose entries are at `entries` (the
/// controller's side of [`read_hot_filter`]).
pub fn hot_filter_word(entries: &[u32]) -> u32 {
    match entries {
        [] => HOT_FILTER_EMPTY,
        [index] => {
            assert!(
                *index < DIRECTORY_CAPACITY_MAX,
                "entry index {index} out of range"
            );
            index + 1
        }
        _ => HOT_FILTER_SHARED,
    }
}

/// Name of the array of hot keys' replica targets (`u8`: servers a hot write goes to, copies
/// included; 0: the configured replication), indexed by [`DirEntry::replica_slot`]. The
/// controller sizes each key's target by its share of the load
/// ([`crate::directory::replicas_for_load`]); one array store changes it, with no race on
/// the entry the program updates. Capacity: the directory's.
pub const MAP_REPLICA_TARGETS: &str = "REPLICA_TARGETS";

/// Name of the hash map keyhash -> u8 of keys the controller is evicting.
pub const MAP_EVICTING: &str = "EVICTING";
/// Name of the single-entry array holding how many keys are marked in [`MAP_EVICTING`]: while
/// it is 0 (nearly always) the program skips that hash lookup. The controller raises it before
/// marking a key and lowers it after unmarking one, so a packet that skips the lookup sees
/// the directory as it was just before the mark or just after the unmark.
pub const MAP_EVICTIONS: &str = "EVICTIONS";
/// Name of the single-entry array holding the [`ServerTable`].
pub const MAP_SERVERS: &str = "SERVERS";
/// Name of the array of retry routes: one 64-bit word per slot, direct-mapped by client and
/// request id ([`retry_route`]).
pub const MAP_RETRY_ROUTES: &str = "RETRY_ROUTES";
/// Name of the array, by client id, of [`crate::once::ClientWindow`]s: the writes each client
/// had stamped recently, so that every copy of a write gets one version. 512 bytes for each of
/// the 65,536 client ids: 32 MiB, allocated when the program is loaded.
pub const MAP_WRITE_WINDOWS: &str = "WRITE_WINDOWS";
/// Default directory capacity (hot keys).
pub const DIRECTORY_CAPACITY_DEFAULT: u32 = 64;
/// Copies of each hot key by default. Measured (docs/measurements.md): on 8 servers under Zipf
/// 1.2, 3 copies leave the busiest server 1.21-1.23x the mean (the hottest key's 3 servers
/// saturate first); 4 balance the rack (1.01-1.02x).
pub const REPLICATION_DEFAULT: u8 = 4;
/// Largest directory capacity the controller accepts.
pub const DIRECTORY_CAPACITY_MAX: u32 = 65_536;
/// Slots of the retry routes (a power of two). A steered write's route stays until another
/// write's route lands in its slot: with 65,536 slots, a retry 100 ms after its first
/// attempt finds its route with probability exp(-writes in between / 65,536), 98.5% at
/// 10,000 hot writes/s.
pub const RETRY_ROUTES_CAPACITY: u32 = 65_536;
/// Name of the per-CPU array of [`FibEntry`] slots: the forwarding cache, direct-mapped by
/// destination address ([`fib_slot`]).
pub const MAP_FIB_CACHE: &str = "FIB_CACHE";
/// Slots of the forwarding cache (per CPU).
pub const FIB_CACHE_SLOTS: u32 = 256;
/// Name of the single-entry array holding the forwarding cache's generation: an entry of an
/// older generation is not used. The control plane bumps it every
/// [`FIB_GENERATION_PERIOD_MS`], so route and neighbour changes take effect within that time.
pub const MAP_FIB_GENERATION: &str = "FIB_GENERATION";
pub const FIB_GENERATION_PERIOD_MS: u64 = 1_000;

/// The forwarding cache slot of a destination address (network order, as read).
#[inline(always)]
pub const fn fib_slot(ipv4: u32) -> u32 {
    ipv4.wrapping_mul(0x9e37_79b1) >> 24 & (FIB_CACHE_SLOTS - 1)
}
// The map values are copied byte for byte between user space and the kernel: no padding.
const _: () = assert!(core::mem::size_of::<SwitchConfig>() == 24);
const _: () = assert!(core::mem::size_of::<DirEntry>() == 72);
const _: () =
    assert!(core::mem::size_of::<ServerTable>() == 8 * crate::directory::SERVERS_MAX as usize);

/// Name of the array of [`PortSlot`]s: each switch port's [`crate::roles::PortRole`],
/// direct-mapped by ifindex ([`port_slot`]). A packet from a port whose slot holds another
/// ifindex (or none) is from a client-facing port: unknown means untrusted. The controller
/// refuses two ports that share a slot.
pub const MAP_PORT_ROLES: &str = "PORT_ROLES";
/// Slots of the port roles (a power of two).
pub const PORT_ROLE_SLOTS: u32 = 1024;

/// One slot of [`MAP_PORT_ROLES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSlot {
    /// The port's ifindex; 0: an empty slot.
    pub ifindex: u32,
    /// [`crate::roles::PortRole`] code.
    pub role: u8,
    pub reserved: [u8; 3],
}

/// The slot of a port's role.
#[inline(always)]
pub const fn port_slot(ifindex: u32) -> u32 {
    ifindex & (PORT_ROLE_SLOTS - 1)
}

/// Name of the XDP program that is the switch.
pub const PROGRAM_SWITCH: &str = "pegasus_switch";
/// The in-switch cache baseline (`crate::cache`): the same switch, but hot keys' reads are
/// answered from cached values instead of steered.
pub const PROGRAM_CACHE: &str = "pegasus_cache";
/// Cached values of the cache baseline: keyhash -> `crate::cache::CacheEntry`, the same
/// capacity as the directory.
pub const MAP_CACHE: &str = "CACHE";
/// Name of the minimal XDP program (parse, swap, XDP_TX) that `pegasus switch cost` measures
/// the switch against.
pub const PROGRAM_BASELINE: &str = "baseline_reflect";
/// Name of the second yardstick: the minimal program that forwards (parse, swap, redirect
/// through the `PORTS` DEVMAP to the port in [`MAP_BASELINE_PORT`]). The switch forwards
/// every packet it handles; this shows what the redirect alone costs.
pub const PROGRAM_BASELINE_FORWARD: &str = "baseline_forward";
/// Name of the third yardstick: the minimal program plus the atomic fetch-add on the version
/// counter that stamps every fresh write (its cost when both CPUs stamp at once).
pub const PROGRAM_BASELINE_STAMP: &str = "baseline_stamp";
/// Name of the single-entry array holding the ifindex `baseline_forward` redirects to.
pub const MAP_BASELINE_PORT: &str = "BASELINE_PORT";
/// Name of the traffic generator of `pegasus switch capacity` (test-run with live frames, it
/// sends each frame out of the port in [`MAP_GENERATOR_PORT`]) and of its single-entry array.
pub const PROGRAM_TRAFFIC_GENERATOR: &str = "traffic_generator";
pub const MAP_GENERATOR_PORT: &str = "GENERATOR_PORT";
/// Name of the receiving end of `pegasus switch capacity` (counts every frame into the
/// per-CPU [`MAP_SINK_COUNT`], then drops it).
pub const PROGRAM_TRAFFIC_SINK: &str = "traffic_sink";
pub const MAP_SINK_COUNT: &str = "SINK_COUNT";
/// Name of the ring buffer of [`Sample`]s: the requests the switch samples for the
/// controller's hot-key detection.
pub const MAP_SAMPLES: &str = "SAMPLES";
/// Bytes of the samples ring buffer: 4,096 samples of 272 bytes (a power of two of pages, as
/// the kernel wants).
pub const SAMPLES_RING_BYTES: u32 = 1 << 20;
/// Name of the per-CPU countdown (`u32`) to the next sampled request.
pub const MAP_SAMPLER: &str = "SAMPLER";
/// Default sampling period (one request in this many), and the largest accepted.
pub const SAMPLE_PERIOD_DEFAULT: u16 = 8;
pub const SAMPLE_PERIOD_MAX: u16 = 1 << 14;

/// A sampled request, as the XDP program writes it into [`MAP_SAMPLES`]: the key's hash and
/// the key itself (the controller needs it to ask servers to push the value).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub keyhash: u64,
    /// Bytes of `key` that are the key (at most [`wire::MAX_KEY_LEN`]).
    pub key_len: u16,
    /// [`Op`] code (GET or PUT).
    pub op: u8,
    pub reserved: [u8; 5],
    pub key: [u8; wire::MAX_KEY_LEN],
}

impl Sample {
    /// The sampled key, if the record is well formed.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.get(..self.key_len as usize)
    }
}

/// Most ports one switch drives (the DEVMAP's capacity): a rack of 64 servers and its
/// client-facing and inter-rack ports.
pub const MAX_PORTS: u32 = 128;

/// Run-time configuration of the switch, written by the controller before it attaches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Bitmap of the servers in the [`ServerTable`].
    pub all_servers: crate::directory::ServerSet,
    /// The stores' UDP port (host byte order); 0 means "not configured": pass everything.
    pub store_port: u16,
    /// The epoch stamped into the high 16 bits of every version.
    pub epoch: u16,
    /// [`crate::directory::Policy`] code.
    pub policy: u8,
    /// Copies of a hot key's write, primary included (1 = no copies).
    pub replication: u8,
    /// One GET or PUT in this many is sampled into [`MAP_SAMPLES`] (per CPU, in turn);
    /// 0 = no sampling.
    pub sample_period: u16,
    /// 1 in a rack of a chain other than the tail: a hot read the directory steers carries
    /// the version the rack knows committed ([`crate::wire::flags::COMMITTED`]), so that its
    /// store may answer it (reads served by every rack, docs/chain.md); 0 otherwise.
    pub mark_committed: u8,
    /// Reserved, 0 (no padding: the value is copied byte for byte).
    pub reserved: [u8; 7],
}

/// One hot key's entry in the directory. Written by user space only when the key is added;
/// after that only the XDP program changes it, under `lock`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirEntry {
    /// The key this entry belongs to (entries are reused: a request whose filter slot points
    /// here is steered by it only if it names the request's key).
    pub keyhash: u64,
    /// The newest version known to be complete.
    pub ver_completed: u64,
    /// In a chain of racks: the newest version known to be committed (held by the tail), from
    /// the CHAIN_ACKs that crossed the switch ([`crate::directory::learn_commit`]); 0 else.
    pub ver_committed: u64,
    /// Seqlock counter, odd while an update is in progress: user space takes a copy only when
    /// two reads agree on an even value.
    pub seq: u64,
    /// Reads routed by the entry.
    pub reads: u64,
    /// Writes routed by the entry.
    pub writes: u64,
    /// Replica set: bit i = server i holds `ver_completed`.
    pub rset: crate::directory::ServerSet,
    /// Spin lock word: 0 free, 1 held (compare-and-swap in the XDP program).
    pub lock: u32,
    /// The key's home server.
    pub home: u8,
    /// 1 from insertion until the program applies a reply from home (see
    /// [`crate::directory::EntryView::installing`]); then 0 for good.
    pub installing: u8,
    /// The key's [`crate::directory::RecentMix`]: recent reads and writes.
    pub mix_reads: u16,
    pub mix_writes: u16,
    /// The entry's own index in [`MAP_DIRECTORY`], which is also the key's slot in
    /// [`MAP_REPLICA_TARGETS`] (how many servers its writes go to). Written with the entry,
    /// never changed (the target itself changes in that map).
    pub replica_slot: u16,
    /// Reserved, 0 (no padding: the value is copied byte for byte).
    pub reserved: [u8; 4],
}

impl DirEntry {
    /// The key's recent read/write mix, as the program counts it.
    pub const fn recent_mix(&self) -> crate::directory::RecentMix {
        crate::directory::RecentMix {
            reads: self.mix_reads,
            writes: self.mix_writes,
        }
    }

    /// A new entry for the key `keyhash` whose home is `home`: home is the only replica,
    /// installing, with a new key's mix.
    pub const fn new(keyhash: u64, home: u8) -> DirEntry {
        DirEntry {
            keyhash,
            ver_completed: 0,
            ver_committed: 0,
            seq: 0,
            reads: 0,
            writes: 0,
            rset: crate::directory::bit(home),
            lock: 0,
            home,
            installing: 1,
            mix_reads: crate::directory::RecentMix::NEW.reads,
            mix_writes: crate::directory::RecentMix::NEW.writes,
            replica_slot: 0,
            reserved: [0; 4],
        }
    }

    /// What the directory's rules see of this entry (a consistent copy, in user space).
    pub const fn view(&self, evicting: bool) -> crate::directory::EntryView {
        crate::directory::EntryView {
            rset: self.rset,
            home: self.home,
            evicting,
            installing: self.installing != 0,
        }
    }
}

/// One server as the switch sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerSlot {
    /// IPv4 address, network order.
    pub ipv4: [u8; 4],
    /// Last load the server reported.
    pub load: u16,
    /// 1 when the slot describes a server.
    pub valid: u8,
    pub reserved: u8,
}

/// Every server of the rack, by server id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTable {
    pub slots: [ServerSlot; crate::directory::SERVERS_MAX as usize],
}

impl Default for ServerTable {
    fn default() -> Self {
        ServerTable {
            slots: [ServerSlot::default(); crate::directory::SERVERS_MAX as usize],
        }
    }
}

impl crate::directory::Loads for ServerTable {
    #[inline(always)]
    fn load(&self, id: u32) -> u16 {
        self.slots[(id % crate::directory::SERVERS_MAX) as usize].load
    }
}

/// A forwarding decision of the kernel's FIB (`bpf_fib_lookup`), cached per destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibEntry {
    /// The destination it is for (network order, as read); a slot holds one at a time.
    pub ipv4: u32,
    /// The cache generation it was made in; 0 = empty slot.
    pub generation: u32,
    /// Egress port.
    pub ifindex: u32,
    /// Next hop's and egress port's MAC addresses.
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub reserved: [u8; 4],
}

/// How long after its first attempt a client may still retry a write: the switch's retry rule
/// ([`RetryRoute::decide`]) is sound for retries within it. The client library refuses
/// options whose retries could outlast it.
pub const RETRY_WINDOW_NS: u64 = 2_000_000_000;

/// One slot of [`MAP_RETRY_ROUTES`]: the route word ([`RetryRoute::word`]) and when it was
/// written (`bpf_ktime_get_ns`). The program writes the time first, then the word, each with
/// one store; two CPUs writing one slot at once leave a word of one and a time of the other,
/// and both times are "now".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetrySlot {
    pub word: u64,
    pub written_ns: u64,
}

/// What the switch does with a retried write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Its first attempt was steered there: send it there, HOT.
    Pinned([u8; 4]),
    /// Its first attempt was not steered (or never reached the switch): send it where it is
    /// addressed, home.
    Home,
    /// Its route may have been overwritten: sending it anywhere but the first server could
    /// apply it twice, so drop it (the client's write then times out: it may or may not have
    /// happened, and the history stays linearizable).
    Drop,
}

/// Where a steered write's first attempt went, remembered so that its retries go there too:
/// the slot of [`MAP_RETRY_ROUTES`] for (client id, request id), and the word stored there,
/// a 32-bit tag of the request in the high half and the destination IPv4 address (as read,
/// network order) in the low half. A slot holds one route: a later write whose route lands in
/// the same slot replaces it, which [`RetryRoute::decide`] accounts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryRoute {
    pub slot: u32,
    pub tag: u32,
}

/// A word no request's route ever equals (its tag, 0, marks no request), but not an empty
/// slot either. A restarted switch fills every slot with it, stamped with its start time, so
/// that retries of writes from before the restart (whose routes it cannot know) are dropped
/// for a retry window instead of going home, where they may be applied a second time.
pub const RETRY_FENCE_WORD: u64 = u32::MAX as u64;

/// The slot and tag of a request's retry route.
#[inline(always)]
pub const fn retry_route(client_id: u16, request_id: u32) -> RetryRoute {
    let h = crate::hash::fmix64(((client_id as u64) << 32) | request_id as u64);
    let tag = (h >> 32) as u32;
    RetryRoute {
        slot: h as u32 & (RETRY_ROUTES_CAPACITY - 1),
        // Tag 0 marks an empty slot.
        tag: if tag == 0 { 1 } else { tag },
    }
}

impl RetryRoute {
    /// The word to store for a route to `ipv4`.
    #[inline(always)]
    pub const fn word(self, ipv4: [u8; 4]) -> u64 {
        (self.tag as u64) << 32 | u32::from_ne_bytes(ipv4) as u64
    }

    /// The destination in `word`, if the word is this request's route.
    #[inline(always)]
    pub const fn destination(self, word: u64) -> Option<[u8; 4]> {
        if (word >> 32) as u32 == self.tag {
            Some((word as u32).to_ne_bytes())
        } else {
            None
        }
    }

    /// The retry rule. The slot holds this request's route: pinned. It holds another route
    /// written within the retry window: this request's route, if it had one, may have been
    /// overwritten by it: drop. It is empty, or its route is older than the window: had this
    /// request's first attempt (within the window) been steered, its route would have been
    /// written after that one and would be there (or a newer one): home.
    #[inline(always)]
    pub const fn decide(self, slot: RetrySlot, now_ns: u64) -> RetryDecision {
        if let Some(destination) = self.destination(slot.word) {
            return RetryDecision::Pinned(destination);
        }
        if slot.word != 0 && now_ns.saturating_sub(slot.written_ns) < RETRY_WINDOW_NS {
            RetryDecision::Drop
        } else {
            RetryDecision::Home
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SwitchConfig {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for RetrySlot {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for DirEntry {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ServerTable {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FibEntry {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PortSlot {}

/// Declares the switch's counters once: the enum (its discriminant is the index into
/// [`MAP_COUNTERS`]), [`Counter::COUNT`], [`Counter::ALL`], and each counter's stable name and
/// help text. The XDP program, the status, the metrics and the docs all read this one table.
macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal,)+) => {
        /// The switch's per-CPU counters, by index into [`MAP_COUNTERS`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Counter {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)+];
            /// Number of counters.
            pub const COUNT: u32 = Counter::ALL.len() as u32;

            /// A stable snake_case name (metric labels, JSON keys).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)+
                }
            }

            /// What it counts, in one sentence (the metrics' help text).
            pub const fn help(self) -> &'static str {
                match self {
                    $(Counter::$variant => concat!($($doc),+),)+
                }
            }
        }
    };
}

counters! {
    /// Every packet the program saw.
    Packets = "packets",
    /// Verdict XDP_PASS (handed to the kernel).
    VerdictPass = "verdict_pass",
    /// Verdict XDP_REDIRECT (forwarded by the switch itself).
    VerdictRedirect = "verdict_redirect",
    /// Verdict XDP_DROP.
    VerdictDrop = "verdict_drop",
    /// Pegasus requests (sent to a store).
    Requests = "requests",
    /// Pegasus replies (sent by a store).
    Replies = "replies",
    /// Writes stamped with a new version.
    WritesStamped = "writes_stamped",
    /// Copies of a write stamped before (duplicates, retries): given its version again.
    StampsReused = "stamps_reused",
    /// Copies of a write whose client has finished it (a window of newer writes since): dropped.
    StaleDuplicates = "stale_duplicates",
    /// Writes whose client epoch is not the switch's: marked for the store to refuse.
    StaleEpochs = "stale_epochs",
    /// Packets on the Pegasus port that are not valid Pegasus messages: dropped.
    ParseFailures = "parse_failures",
    /// Pegasus packets the FIB could not forward (no route or no neighbour yet): passed.
    FibMisses = "fib_misses",
    /// Writes not stamped because the epoch's counter is exhausted: dropped.
    VersionExhausted = "version_exhausted",
    /// Reads routed by the directory.
    HotReads = "hot_reads",
    /// Writes routed by the directory.
    HotWrites = "hot_writes",
    /// Retried writes sent where their first attempt went.
    RetriesPinned = "retries_pinned",
    /// Replies that changed a directory entry (newer version, or a server joined).
    DirectoryUpdates = "directory_updates",
    /// Steered replies dropped because the directory could not vouch for them (eviction).
    RepliesDropped = "replies_dropped",
    /// Replies dropped because the entry's lock stayed busy (the client retries).
    LockBusy = "lock_busy",
    /// Replicate acks consumed by the switch (their only reader).
    ReplicateAcks = "replicate_acks",
    /// Forwarding decisions asked of the kernel's FIB (cache misses and expiries).
    FibLookups = "fib_lookups",
    /// Retried writes dropped because their route may have been overwritten.
    RetriesDropped = "retries_dropped",
    /// Requests sampled into the samples ring buffer.
    Samples = "samples",
    /// Samples lost because the ring buffer was full (the controller reads too slowly).
    SamplesLost = "samples_lost",
    /// Packets sent back out of the port they came in on (`XDP_TX`: cache hits).
    VerdictTx = "verdict_tx",
    /// GETs answered by the switch from its cache (cache mode).
    CacheHits = "cache_hits",
    /// Cache entries filled or validated by a reply (cache mode).
    CacheFills = "cache_fills",
    /// Cache entries invalidated by a write or a reply (cache mode).
    CacheInvalidations = "cache_invalidations",
    /// Requests and replies that the role of the port they arrived on forbids (an op a
    /// client may not send, a reply not from the server it claims): dropped.
    RoleDrops = "role_drops",
    /// Requests from a client-facing port whose switch-only fields (version, replica
    /// bitmap, STAMPED, HOT, CACHED) were set, and were cleared.
    RequestsCleaned = "requests_cleaned",
    /// Packets to or from the store port that the program cannot parse (IP options, VLAN
    /// tags, first fragments): dropped, never left to the kernel to forward unchecked.
    Unparseable = "unparseable",
}

/// One CPU's counters, the value of [`MAP_COUNTERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CounterBlock {
    pub values: [u64; Counter::COUNT as usize],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for CounterBlock {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Sample {}

/// What the switch makes of a UDP packet, from its ports and the first bytes of its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    /// Not to or from the store port: none of the switch's business.
    NotPegasus,
    /// On the store port but not a valid Pegasus header: passed to the kernel untouched.
    Malformed,
    /// A request to a store; `stamp` says whether the switch must stamp a version on it.
    Request { op: Op, stamp: bool },
    /// A reply from a store.
    Reply { op: Op },
}

/// The fields of a Pegasus header the classification looks at. `None` for a payload too short
/// to hold a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub magic: u16,
    pub proto_version: u8,
    pub op_code: u8,
    pub flags: u8,
}

/// Classifies a UDP packet. The rule, in order:
/// 1. neither port is the store port: [`PacketClass::NotPegasus`];
/// 2. payload shorter than the header, wrong magic or version, unknown op, or an op whose
///    direction disagrees with the ports: [`PacketClass::Malformed`];
/// 3. to the store port: a request; a PUT is stamped unless it carries `flags::STAMPED`;
/// 4. from the store port: a reply.
#[inline(always)]
pub fn classify(
    store_port: u16,
    src_port: u16,
    dst_port: u16,
    header: Option<HeaderPrefix>,
) -> PacketClass {
    let to_store = dst_port == store_port;
    let from_store = src_port == store_port;
    if store_port == 0 || (!to_store && !from_store) {
        return PacketClass::NotPegasus;
    }
    let Some(h) = header else {
        return PacketClass::Malformed;
    };
    if h.magic != wire::MAGIC || h.proto_version != wire::PROTOCOL_VERSION {
        return PacketClass::Malformed;
    }
    let Some(op) = Op::from_u8(h.op_code) else {
        return PacketClass::Malformed;
    };
    // Server-to-server messages go from the store port to the store port: the op decides.
    if op.is_request() && to_store {
        let stamp = op.is_write() && h.flags & wire::flags::STAMPED == 0;
        PacketClass::Request { op, stamp }
    } else if !op.is_request() && from_store {
        PacketClass::Reply { op }
    } else {
        PacketClass::Malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_filter_slot_names_its_one_key_entry_or_sends_to_the_index() {
        assert_eq!(read_hot_filter(hot_filter_word(&[])), FilterAnswer::Cold);
        for index in [0, 1, 4_095, DIRECTORY_CAPACITY_MAX - 1] {
            assert_eq!(
                read_hot_filter(hot_filter_word(&[index])),
                FilterAnswer::Entry(index)
            );
        }
        assert_eq!(
            read_hot_filter(hot_filter_word(&[3, 9])),
            FilterAnswer::Shared
        );
        assert_eq!(
            read_hot_filter(hot_filter_word(&[0, 1, 2])),
            FilterAnswer::Shared
        );
    }

    #[test]
    fn a_fence_drops_every_retry_for_a_window_and_no_longer() {
        let started = 5_000_000_000;
        let fence = RetrySlot {
            word: RETRY_FENCE_WORD,
            written_ns: started,
        };
        for (client, request) in [(0u16, 0u32), (7, 1234), (u16::MAX, u32::MAX)] {
            let route = retry_route(client, request);
            assert_eq!(route.destination(RETRY_FENCE_WORD), None);
            assert_eq!(route.decide(fence, started + 1), RetryDecision::Drop);
            assert_eq!(
                route.decide(fence, started + RETRY_WINDOW_NS - 1),
                RetryDecision::Drop
            );
            assert_eq!(
                route.decide(fence, started + RETRY_WINDOW_NS),
                RetryDecision::Home
            );
        }
    }

    #[test]
    fn retry_routes_round_trip_and_reject_other_requests() {
        let route = retry_route(7, 1234);
        assert!(route.slot < RETRY_ROUTES_CAPACITY);
        assert_ne!(route.tag, 0, "tag 0 marks an empty slot");
        let word = route.word([10, 1, 2, 2]);
        assert_eq!(route.destination(word), Some([10, 1, 2, 2]));
        assert_eq!(route.destination(0), None, "an empty slot");
        // Another request (another client, or the next request id) does not match.
        for other in [retry_route(8, 1234), retry_route(7, 1235)] {
            assert_ne!(other.tag, route.tag);
            assert_eq!(other.destination(word), None);
        }
        // Slots spread: 10,000 consecutive request ids of one client use many slots.
        let slots: std::collections::HashSet<u32> =
            (0..10_000).map(|id| retry_route(3, id).slot).collect();
        assert!(slots.len() > 9_000, "{}", slots.len());
    }

    #[test]
    fn the_retry_rule() {
        let me = retry_route(7, 1);
        let other = retry_route(7, 2);
        let now = 10 * RETRY_WINDOW_NS;
        let at = |word, written_ns| RetrySlot { word, written_ns };
        let mine = me.word([10, 1, 3, 2]);
        assert_eq!(
            me.decide(at(mine, 0), now),
            RetryDecision::Pinned([10, 1, 3, 2]),
            "its own route, however old"
        );
        assert_eq!(me.decide(RetrySlot::default(), now), RetryDecision::Home);
        let theirs = other.word([10, 1, 4, 2]);
        assert_eq!(
            me.decide(at(theirs, now - 1), now),
            RetryDecision::Drop,
            "a fresh route of another request may have replaced it"
        );
        assert_eq!(
            me.decide(at(theirs, now - RETRY_WINDOW_NS), now),
            RetryDecision::Home,
            "a route older than the window cannot have replaced a route of this retry's window"
        );
    }

    #[test]
    fn fib_slots_are_in_range_and_spread() {
        let slots: std::collections::HashSet<u32> = (0..64u32)
            .map(|i| fib_slot(u32::from_ne_bytes([10, 1, i as u8, 2])))
            .collect();
        assert!(slots.iter().all(|&s| s < FIB_CACHE_SLOTS));
        assert!(slots.len() > 40, "{}", slots.len());
    }
    use crate::wire::flags::STAMPED;

    const PORT: u16 = 7400;

    fn prefix(op: Op, flags: u8) -> Option<HeaderPrefix> {
        Some(HeaderPrefix {
            magic: wire::MAGIC,
            proto_version: wire::PROTOCOL_VERSION,
            op_code: op as u8,
            flags,
        })
    }

    #[test]
    fn other_ports_are_not_pegasus() {
        assert_eq!(
            classify(PORT, 1000, 53, prefix(Op::Put, 0)),
            PacketClass::NotPegasus
        );
        assert_eq!(
            classify(0, PORT, PORT, prefix(Op::Put, 0)),
            PacketClass::NotPegasus
        );
    }

    #[test]
    fn requests_and_stamping() {
        for op in Op::ALL {
            let c = classify(PORT, 40000, PORT, prefix(op, 0));
            if op.is_request() {
                assert_eq!(
                    c,
                    PacketClass::Request {
                        op,
                        stamp: op == Op::Put
                    }
                );
            } else {
                assert_eq!(c, PacketClass::Malformed, "{op:?} sent to the store port");
            }
        }
        assert_eq!(
            classify(PORT, 40000, PORT, prefix(Op::Put, STAMPED)),
            PacketClass::Request {
                op: Op::Put,
                stamp: false
            }
        );
    }

    #[test]
    fn replies() {
        for op in Op::ALL {
            let c = classify(PORT, PORT, 40000, prefix(op, 0));
            if op.is_request() {
                assert_eq!(c, PacketClass::Malformed, "{op:?} sent from the store port");
            } else {
                assert_eq!(c, PacketClass::Reply { op });
            }
        }
    }

    #[test]
    fn malformed_headers() {
        assert_eq!(classify(PORT, 1, PORT, None), PacketClass::Malformed);
        let mut p = prefix(Op::Get, 0).unwrap();
        p.magic = 0x1234;
        assert_eq!(classify(PORT, 1, PORT, Some(p)), PacketClass::Malformed);
        let mut p = prefix(Op::Get, 0).unwrap();
        p.proto_version = 9;
        assert_eq!(classify(PORT, 1, PORT, Some(p)), PacketClass::Malformed);
        let mut p = prefix(Op::Get, 0).unwrap();
        p.op_code = 0;
        assert_eq!(classify(PORT, 1, PORT, Some(p)), PacketClass::Malformed);
    }

    #[test]
    fn counter_indices_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
