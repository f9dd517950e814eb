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
/// Name of the per-CPU array of `u64` counters indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the DEVMAP_HASH of the ports the switch may redirect to (key and value: ifindex).
pub const MAP_PORTS: &str = "PORTS";
/// Name of the hash map keyhash -> [`DirEntry`]: the coherence directory.
pub const MAP_DIRECTORY: &str = "DIRECTORY";
/// Name of the hash map keyhash -> u8 of keys the controller is evicting.
pub const MAP_EVICTING: &str = "EVICTING";
/// Name of the single-entry array holding the [`ServerTable`].
pub const MAP_SERVERS: &str = "SERVERS";
/// Name of the LRU hash map (client id << 32 | request id) -> [`RetryRoute`].
pub const MAP_RETRY_ROUTES: &str = "RETRY_ROUTES";
/// Default directory capacity (hot keys).
pub const DIRECTORY_CAPACITY_DEFAULT: u32 = 64;
/// Largest directory capacity the controller accepts.
pub const DIRECTORY_CAPACITY_MAX: u32 = 65_536;
/// Writes remembered for pinning retries (about one second of writes at 64k writes/s).
pub const RETRY_ROUTES_CAPACITY: u32 = 65_536;
/// Name of the XDP program that is the switch.
pub const PROGRAM_SWITCH: &str = "pegasus_switch";
/// Most ports one switch drives (the DEVMAP's capacity).
pub const MAX_PORTS: u32 = 64;

/// Run-time configuration of the switch, written by the controller before it attaches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchConfig {
    /// The stores' UDP port (host byte order); 0 means "not configured": pass everything.
    pub store_port: u16,
    /// The epoch stamped into the high 16 bits of every version.
    pub epoch: u16,
    /// Bitmap of the servers in the [`ServerTable`].
    pub all_servers: u32,
    /// [`crate::directory::Policy`] code.
    pub policy: u8,
    /// Copies of a hot key's write, primary included (1 = no copies).
    pub replication: u8,
    /// Reserved, 0.
    pub reserved: [u8; 6],
}

/// One hot key's entry in the directory. Written by user space only when the key is added;
/// after that only the XDP program changes it, under `lock`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirEntry {
    /// The newest version known to be complete.
    pub ver_completed: u64,
    /// Seqlock counter, odd while an update is in progress: user space takes a copy only when
    /// two reads agree on an even value.
    pub seq: u64,
    /// Reads routed by the entry.
    pub reads: u64,
    /// Writes routed by the entry.
    pub writes: u64,
    /// Replica set: bit i = server i holds `ver_completed`.
    pub rset: u32,
    /// Spin lock word: 0 free, 1 held (compare-and-swap in the XDP program).
    pub lock: u32,
    /// The key's home server.
    pub home: u8,
    /// 1 from insertion until the program applies a reply from home (see
    /// [`crate::directory::EntryView::installing`]); then 0 for good.
    pub installing: u8,
    pub reserved: [u8; 6],
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
        self.slots[(id & 31) as usize].load
    }
}

/// Where the first attempt of a write went, so that its retries go there too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryRoute {
    /// Destination IPv4 address, network order.
    pub ipv4: [u8; 4],
    /// 1 when the directory routed it (the retry carries the HOT flag again).
    pub steered: u8,
    pub reserved: [u8; 3],
}

/// The key of [`MAP_RETRY_ROUTES`].
#[inline(always)]
pub const fn retry_key(client_id: u16, request_id: u32) -> u64 {
    ((client_id as u64) << 32) | request_id as u64
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SwitchConfig {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for DirEntry {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ServerTable {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for RetryRoute {}

/// The switch's per-CPU counters, by index into [`MAP_COUNTERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Every packet the program saw.
    Packets = 0,
    /// Verdict XDP_PASS (handed to the kernel).
    VerdictPass = 1,
    /// Verdict XDP_REDIRECT (forwarded by the switch itself).
    VerdictRedirect = 2,
    /// Verdict XDP_DROP.
    VerdictDrop = 3,
    /// Pegasus requests (sent to a store).
    Requests = 4,
    /// Pegasus replies (sent by a store).
    Replies = 5,
    /// Writes stamped with a version.
    WritesStamped = 6,
    /// Packets on the Pegasus port that are not valid Pegasus messages.
    ParseFailures = 7,
    /// Pegasus packets the FIB could not forward (no route or no neighbour yet): passed.
    FibMisses = 8,
    /// Writes not stamped because the epoch's counter is exhausted: dropped.
    VersionExhausted = 9,
    /// Reads routed by the directory.
    HotReads = 10,
    /// Writes routed by the directory.
    HotWrites = 11,
    /// Retried writes sent where their first attempt went.
    RetriesPinned = 12,
    /// Replies that changed a directory entry (newer version, or a server joined).
    DirectoryUpdates = 13,
    /// Steered replies dropped because the directory could not vouch for them (eviction).
    RepliesDropped = 14,
    /// Replies dropped because the entry's lock stayed busy (the client retries).
    LockBusy = 15,
    /// Replicate acks consumed by the switch (their only reader).
    ReplicateAcks = 16,
}

impl Counter {
    /// Number of counters.
    pub const COUNT: u32 = 17;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Packets,
        Counter::VerdictPass,
        Counter::VerdictRedirect,
        Counter::VerdictDrop,
        Counter::Requests,
        Counter::Replies,
        Counter::WritesStamped,
        Counter::ParseFailures,
        Counter::FibMisses,
        Counter::VersionExhausted,
        Counter::HotReads,
        Counter::HotWrites,
        Counter::RetriesPinned,
        Counter::DirectoryUpdates,
        Counter::RepliesDropped,
        Counter::LockBusy,
        Counter::ReplicateAcks,
    ];

    /// A stable snake_case name (metric labels, JSON keys).
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::VerdictPass => "verdict_pass",
            Counter::VerdictRedirect => "verdict_redirect",
            Counter::VerdictDrop => "verdict_drop",
            Counter::Requests => "requests",
            Counter::Replies => "replies",
            Counter::WritesStamped => "writes_stamped",
            Counter::ParseFailures => "parse_failures",
            Counter::FibMisses => "fib_misses",
            Counter::VersionExhausted => "version_exhausted",
            Counter::HotReads => "hot_reads",
            Counter::HotWrites => "hot_writes",
            Counter::RetriesPinned => "retries_pinned",
            Counter::DirectoryUpdates => "directory_updates",
            Counter::RepliesDropped => "replies_dropped",
            Counter::LockBusy => "lock_busy",
            Counter::ReplicateAcks => "replicate_acks",
        }
    }
}

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
