// GENERATED from pegasus_common by control::p4::constants. Do not edit: regenerate with
// PEGASUS_BLESS=1 cargo test -p pegasus-control --test p4_constants (which fails on drift).
#ifndef PEGASUS_CONSTANTS_P4
#define PEGASUS_CONSTANTS_P4

// wire::MAGIC: the first two bytes of every Pegasus header.
#define PEGASUS_MAGIC 16w0x5047
// wire::PROTOCOL_VERSION.
#define PEGASUS_PROTOCOL_VERSION 8w3
// wire::HEADER_LEN: bytes of the fixed header.
#define PEGASUS_HEADER_BYTES 40
// wire::DEFAULT_PORT: the stores' UDP port.
#define PEGASUS_STORE_PORT 16w7400
// wire::CONTROLLER_CLIENT_ID: a client may not use it.
#define PEGASUS_CONTROLLER_CLIENT_ID 16w0xffff
// wire::Op::Get, a request.
#define OP_GET 8w1
// wire::Op::Put, a request, a write.
#define OP_PUT 8w2
// wire::Op::GetReply, a reply, reports a version.
#define OP_GET_REPLY 8w3
// wire::Op::PutReply, a reply, reports a version.
#define OP_PUT_REPLY 8w4
// wire::Op::Replicate, a request.
#define OP_REPLICATE 8w5
// wire::Op::ReplicateAck, a reply, reports a version.
#define OP_REPLICATE_ACK 8w6
// wire::Op::ChainPut, a request.
#define OP_CHAIN_PUT 8w7
// wire::Op::ChainAck, a reply.
#define OP_CHAIN_ACK 8w8
// wire::Op::Error, a reply.
#define OP_ERROR 8w9
// wire::Op::Push, a request.
#define OP_PUSH 8w10
// wire::Op::PushReply, a reply, reports a version.
#define OP_PUSH_REPLY 8w11
// The lowest op code.
#define OP_FIRST 8w1
// The highest op code; every code between is an op.
#define OP_LAST 8w11
// wire::Op::is_request.
#define IS_REQUEST_OP(op) ((op) == OP_GET || (op) == OP_PUT || (op) == OP_REPLICATE || (op) == OP_CHAIN_PUT || (op) == OP_PUSH)
// wire::Op::reports_version: replies the directory learns from.
#define REPORTS_VERSION_OP(op) ((op) == OP_GET_REPLY || (op) == OP_PUT_REPLY || (op) == OP_REPLICATE_ACK || (op) == OP_PUSH_REPLY)
// wire::flags::STAMPED.
#define FLAG_STAMPED 8w0x01
// wire::flags::HOT.
#define FLAG_HOT 8w0x02
// wire::flags::RETRY.
#define FLAG_RETRY 8w0x04
// wire::flags::CACHED.
#define FLAG_CACHED 8w0x08
// wire::flags::STALE_EPOCH.
#define FLAG_STALE_EPOCH 8w0x10
// roles::CLIENT_FLAGS: the only flags a client port keeps.
#define CLIENT_FLAGS 8w0x04
// wire::offset::MAGIC: the header's fields in order (headers.p4 checks).
#define OFFSET_MAGIC 0
// wire::offset::PROTO_VERSION: the header's fields in order (headers.p4 checks).
#define OFFSET_PROTO_VERSION 2
// wire::offset::OP: the header's fields in order (headers.p4 checks).
#define OFFSET_OP 3
// wire::offset::KEYHASH: the header's fields in order (headers.p4 checks).
#define OFFSET_KEYHASH 4
// wire::offset::VERSION: the header's fields in order (headers.p4 checks).
#define OFFSET_VERSION 12
// wire::offset::REQUEST_ID: the header's fields in order (headers.p4 checks).
#define OFFSET_REQUEST_ID 20
// wire::offset::CLIENT_ID: the header's fields in order (headers.p4 checks).
#define OFFSET_CLIENT_ID 24
// wire::offset::SERVER_ID: the header's fields in order (headers.p4 checks).
#define OFFSET_SERVER_ID 26
// wire::offset::FLAGS: the header's fields in order (headers.p4 checks).
#define OFFSET_FLAGS 27
// wire::offset::REPLICA_BITMAP: the header's fields in order (headers.p4 checks).
#define OFFSET_REPLICA_BITMAP 28
// wire::offset::LOAD: the header's fields in order (headers.p4 checks).
#define OFFSET_LOAD 36
// wire::offset::STATUS: the header's fields in order (headers.p4 checks).
#define OFFSET_STATUS 38
// version::COUNTER_BITS: a version is epoch << this | counter.
#define VERSION_COUNTER_BITS 48
// directory::SERVERS_MAX: servers a rack (and a replica bitmap) holds.
#define SERVERS_MAX 64
// once::WRITE_WINDOW: writes remembered per client.
#define WRITE_WINDOW 64
// once::CLIENTS: client ids with a window.
#define WRITE_CLIENTS 65536
// once::WRITE_ID_BIT: set in every recorded write id.
#define WRITE_ID_BIT 32w0x80000000
// switch::RETRY_ROUTES_CAPACITY: slots of retried writes' routes.
#define RETRY_ROUTES 65536
// switch::RETRY_WINDOW_NS in microseconds (the timestamps of P4 targets).
#define RETRY_WINDOW_US 48w2000000
// switch::DIRECTORY_CAPACITY_MAX: hot keys a directory holds at most.
#define DIRECTORY_CAPACITY_MAX 65536
// directory::MIX_WINDOW: requests in a hot key's recent read/write mix.
#define MIX_WINDOW 16w64
// directory::MIX_PRIOR_READS: the mix a new hot key starts from.
#define MIX_PRIOR_READS 16w16
// directory::COPY_READS_PER_WRITE: copies pay when reads are this many per write.
#define COPY_READS_PER_WRITE 32w1
// hash::fmix64's first multiplier (retry routes are hashed with it).
#define FMIX64_C1 64w0xff51afd7ed558ccd
// hash::fmix64's second multiplier.
#define FMIX64_C2 64w0xc4ceb9fe1a85ec53
// roles::PortRole::Client: what a port of this role admits.
#define ROLE_CLIENT 8w0
// roles::PortRole::Server: what a port of this role admits.
#define ROLE_SERVER 8w1
// roles::PortRole::Chain: what a port of this role admits.
#define ROLE_CHAIN 8w2
// directory::Policy::LeastLoaded.
#define POLICY_LEAST_LOADED 8w0
// directory::Policy::RoundRobin.
#define POLICY_ROUND_ROBIN 8w1
// directory::Policy::TwoChoices.
#define POLICY_TWO_CHOICES 8w2
// switch::Counter::Packets:  Every packet the program saw.
#define COUNTER_PACKETS 0
// switch::Counter::VerdictPass:  Verdict XDP_PASS (handed to the kernel).
#define COUNTER_VERDICT_PASS 1
// switch::Counter::VerdictRedirect:  Verdict XDP_REDIRECT (forwarded by the switch itself).
#define COUNTER_VERDICT_REDIRECT 2
// switch::Counter::VerdictDrop:  Verdict XDP_DROP.
#define COUNTER_VERDICT_DROP 3
// switch::Counter::Requests:  Pegasus requests (sent to a store).
#define COUNTER_REQUESTS 4
// switch::Counter::Replies:  Pegasus replies (sent by a store).
#define COUNTER_REPLIES 5
// switch::Counter::WritesStamped:  Writes stamped with a new version.
#define COUNTER_WRITES_STAMPED 6
// switch::Counter::StampsReused:  Copies of a write stamped before (duplicates, retries): given its version again.
#define COUNTER_STAMPS_REUSED 7
// switch::Counter::StaleDuplicates:  Copies of a write whose client has finished it (a window of newer writes since): dropped.
#define COUNTER_STALE_DUPLICATES 8
// switch::Counter::StaleEpochs:  Writes whose client epoch is not the switch's: marked for the store to refuse.
#define COUNTER_STALE_EPOCHS 9
// switch::Counter::ParseFailures:  Packets on the Pegasus port that are not valid Pegasus messages: dropped.
#define COUNTER_PARSE_FAILURES 10
// switch::Counter::FibMisses:  Pegasus packets the FIB could not forward (no route or no neighbour yet): passed.
#define COUNTER_FIB_MISSES 11
// switch::Counter::VersionExhausted:  Writes not stamped because the epoch's counter is exhausted: dropped.
#define COUNTER_VERSION_EXHAUSTED 12
// switch::Counter::HotReads:  Reads routed by the directory.
#define COUNTER_HOT_READS 13
// switch::Counter::HotWrites:  Writes routed by the directory.
#define COUNTER_HOT_WRITES 14
// switch::Counter::RetriesPinned:  Retried writes sent where their first attempt went.
#define COUNTER_RETRIES_PINNED 15
// switch::Counter::DirectoryUpdates:  Replies that changed a directory entry (newer version, or a server joined).
#define COUNTER_DIRECTORY_UPDATES 16
// switch::Counter::RepliesDropped:  Steered replies dropped because the directory could not vouch for them (eviction).
#define COUNTER_REPLIES_DROPPED 17
// switch::Counter::LockBusy:  Replies dropped because the entry's lock stayed busy (the client retries).
#define COUNTER_LOCK_BUSY 18
// switch::Counter::ReplicateAcks:  Replicate acks consumed by the switch (their only reader).
#define COUNTER_REPLICATE_ACKS 19
// switch::Counter::FibLookups:  Forwarding decisions asked of the kernel's FIB (cache misses and expiries).
#define COUNTER_FIB_LOOKUPS 20
// switch::Counter::RetriesDropped:  Retried writes dropped because their route may have been overwritten.
#define COUNTER_RETRIES_DROPPED 21
// switch::Counter::Samples:  Requests sampled into the samples ring buffer.
#define COUNTER_SAMPLES 22
// switch::Counter::SamplesLost:  Samples lost because the ring buffer was full (the controller reads too slowly).
#define COUNTER_SAMPLES_LOST 23
// switch::Counter::VerdictTx:  Packets sent back out of the port they came in on (`XDP_TX`: cache hits).
#define COUNTER_VERDICT_TX 24
// switch::Counter::CacheHits:  GETs answered by the switch from its cache (cache mode).
#define COUNTER_CACHE_HITS 25
// switch::Counter::CacheFills:  Cache entries filled or validated by a reply (cache mode).
#define COUNTER_CACHE_FILLS 26
// switch::Counter::CacheInvalidations:  Cache entries invalidated by a write or a reply (cache mode).
#define COUNTER_CACHE_INVALIDATIONS 27
// switch::Counter::RoleDrops:  Requests and replies that the role of the port they arrived on forbids (an op a client may not send, a reply not from the server it claims): dropped.
#define COUNTER_ROLE_DROPS 28
// switch::Counter::RequestsCleaned:  Requests from a client-facing port whose switch-only fields (version, replica bitmap, STAMPED, HOT, CACHED) were set, and were cleared.
#define COUNTER_REQUESTS_CLEANED 29
// switch::Counter::Unparseable:  Packets to or from the store port that the program cannot parse (IP options, VLAN tags, first fragments): dropped, never left to the kernel to forward unchecked.
#define COUNTER_UNPARSEABLE 30
// switch::Counter::COUNT.
#define COUNTERS 31

#endif
