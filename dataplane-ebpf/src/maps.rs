//! The switch program's maps (their one user-space owner is `control::switch`; capacities
//! marked "set at load time" are the controller's to choose).

use crate::*;

#[map(name = "CONFIG")]
pub(crate) static CONFIG: Array<SwitchConfig> = Array::with_max_entries(1, 0);

#[map(name = "VERSION_COUNTER")]
pub(crate) static VERSION_COUNTER: Array<u64> = Array::with_max_entries(1, 0);

/// Each client's recently stamped writes (`pegasus_common::once`), by client id.
#[map(name = "WRITE_WINDOWS")]
pub(crate) static WRITE_WINDOWS: Array<ClientWindow> = Array::with_max_entries(once::CLIENTS, 0);

#[map(name = "COUNTERS")]
pub(crate) static COUNTERS: PerCpuArray<CounterBlock> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "PORTS")]
pub(crate) static PORTS: DevMapHash = DevMapHash::with_max_entries(switch::MAX_PORTS, 0);

/// The coherence directory, an entry per hot key at the index the controller gave it; its
/// capacity is set by the controller at load time.
#[map(name = "DIRECTORY")]
pub(crate) static DIRECTORY: Array<DirEntry> =
    Array::with_max_entries(switch::DIRECTORY_CAPACITY_DEFAULT, 0);

/// Every hot key's entry index, asked only for keys whose hot filter slot is shared.
#[map(name = "DIRECTORY_INDEX")]
pub(crate) static DIRECTORY_INDEX: HashMap<u64, u32> =
    HashMap::with_max_entries(switch::DIRECTORY_CAPACITY_DEFAULT, 0);

/// Each hot key's replica target, by its entry's `replica_slot`; capacity set at load time.
#[map(name = "REPLICA_TARGETS")]
pub(crate) static REPLICA_TARGETS: Array<u8> = Array::with_max_entries(1, 0);

/// Sampled requests for the controller's hot-key detection.
#[map(name = "SAMPLES")]
pub(crate) static SAMPLES: RingBuf = RingBuf::with_byte_size(switch::SAMPLES_RING_BYTES, 0);

/// Per CPU: requests left until the next sample.
#[map(name = "SAMPLER")]
pub(crate) static SAMPLER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// By a key's hot filter slot: no hot key, one (its entry), or several (`read_hot_filter`).
#[map(name = "HOT_FILTER")]
pub(crate) static HOT_FILTER: Array<u32> = Array::with_max_entries(switch::HOT_FILTER_SLOTS, 0);

#[map(name = "EVICTIONS")]
pub(crate) static EVICTIONS: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "EVICTING")]
pub(crate) static EVICTING: HashMap<u64, u8> =
    HashMap::with_max_entries(switch::DIRECTORY_CAPACITY_DEFAULT, 0);

#[map(name = "SERVERS")]
pub(crate) static SERVERS: Array<ServerTable> = Array::with_max_entries(1, 0);

/// Per CPU, so that a slot is never written by two CPUs at once (no torn entries, no lock).
#[map(name = "FIB_CACHE")]
pub(crate) static FIB_CACHE: PerCpuArray<FibEntry> =
    PerCpuArray::with_max_entries(switch::FIB_CACHE_SLOTS, 0);

#[map(name = "FIB_GENERATION")]
pub(crate) static FIB_GENERATION: Array<u32> = Array::with_max_entries(1, 0);
/// Words of `switch::RetryRoute`: an array, not an LRU hash, because remembering a route is
/// then one store instead of a node allocation (the hot write path's largest cost).
#[map(name = "RETRY_ROUTES")]
pub(crate) static RETRY_ROUTES: Array<RetrySlot> =
    Array::with_max_entries(switch::RETRY_ROUTES_CAPACITY, 0);

/// Each port's role (`roles::PortRole`), direct-mapped by ifindex; written by the controller
/// before it attaches.
#[map(name = "PORT_ROLES")]
pub(crate) static PORT_ROLES: Array<PortSlot> = Array::with_max_entries(switch::PORT_ROLE_SLOTS, 0);
