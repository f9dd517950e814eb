// The Pegasus switch for the Tofino Native Architecture (TNA, Tofino 1): the rules of
// pegasus_common as the XDP and v1model programs apply them, shaped for a pipeline in which
// every register is one stateful-ALU access per packet and nothing loops. Where the target
// forces a difference, docs/p4.md says which and why; the main ones:
// - choices among servers are table lookups whose entries the control plane computes with
//   the rules themselves (`pegasus p4 entries` from directory::nth_set_bit and successors);
// - the version counter is 32 bits per epoch, the write windows are for client ids below
//   TNA_CLIENTS (others are refused), and the directory compares versions of the current
//   epoch (a reply from another epoch teaches it nothing);
// - a rewritten message leaves with a zero UDP checksum ("none", valid over IPv4).
#include <core.p4>
#include <tna.p4>

#include "../include/parser.p4"

#define P4_SERVERS 8
typedef bit<8> server_set_t;
// Client ids with a write window (a power of two; WINDOW slots each).
#define TNA_CLIENTS 1024
#define TNA_WINDOW_SLOTS (TNA_CLIENTS * WRITE_WINDOW)

const bit<8> NO_EVENT = 255;
const bit<8> WINDOW_FRESH = 0;
const bit<8> WINDOW_REUSE = 1;
const bit<8> WINDOW_STALE = 2;
const bit<2> ROUTE_NONE = 0;
const bit<2> ROUTE_RECALL = 1; // a retried write reads its route
const bit<2> ROUTE_REMEMBER = 2; // a routed hot write records its route
// Retry routes are timed in units of 2^20 ns (about 1 ms).
const bit<32> RETRY_WINDOW_UNITS = (bit<32>)(RETRY_WINDOW_US * 1000 >> 20);

// A directory entry's register pair (see `completed` below).
struct completed_t {
    bit<32> counter;
    bit<32> rset; // server_set_t, widened to the pair's width
}

// What a packet is, from `classify`.
const bit<3> PATH_PLAIN = 0;       // not the store's traffic: forwarded as it is
const bit<3> PATH_UNPARSEABLE = 1; // the store's port, but the frame did not parse
const bit<3> PATH_MALFORMED = 2;   // the store's port, but not a Pegasus message we know
const bit<3> PATH_REQUEST = 3;
const bit<3> PATH_REPLY = 4;

struct meta_t {
    parse_meta_t parse;
    bit<16> epoch;
    server_set_t all_servers;
    bit<8>  replication;
    bit<8>  role;
    bit<3>  path; // PATH_*
    bit<1>  reports_version;
    bit<2>  admission;
    bit<1>  dropped;
    bit<1>  stamp;
    bit<1>  hot;
    bit<16> index;
    bit<8>  home;
    server_set_t home_bit;
    bit<1>  evicting;
    bit<8>  replica_target;
    bit<32> counter;
    bit<32> window_key; // (request id's sequence) + 1; 0 marks an empty slot
    bit<16> window_index;
    bit<32> stamped;
    bit<16> route_slot;
    bit<32> route_tag;
    bit<32> route_answer;
    bit<32> route_held_tag;
    bit<2>  route_access; // ROUTE_*: how this packet uses the retry routes
    bit<1>  retried;      // FLAG_RETRY, as the client sent it
    bit<1>  stale_epoch;  // a write's epoch is not the switch's (once::admits_epoch)
    bit<1>  reply_refused; // roles::admit_reply said no
    bit<1>  reports;      // a reply that reports a version
    bit<1>  from_home;    // a reply from the key's home
    bit<8>  admission_event;
    bit<8>  stamp_event;
    bit<8>  route_event;
    bit<8>  reply_event;
    bit<8>  acks_event;
    bit<8>  route_recent;
    bit<8>  window_verdict;
    server_set_t home_in_set;
    bit<32> now;
    bit<8>  installing;
    server_set_t candidates;
    bit<8>  cursor;
    bit<8>  chosen;
    bit<1>  found;
    server_set_t copies;
    bit<32> new_dst;
    bit<1>  steered;
    bit<1>  believed;
    bit<32> reply_counter; // a reply's version within its epoch (a field of its own: the
                           // request path's `stamped` would hold `completed` back a stage)
    bit<32> newest;  // the entry's newest counter once a reply is applied
    bit<1>  applied; // the reply rule ran
    server_set_t me;
}

parser TnaIngressParser(packet_in pkt, out headers_t hdr, out meta_t meta,
                        out ingress_intrinsic_metadata_t ig_md) {
    PegasusParse() common_parse;
    state start {
        pkt.extract(ig_md);
        pkt.advance(PORT_METADATA_SIZE);
        // Metadata starts undefined on this target: what is read before a table writes it
        // starts here (the parser sets constants for free, no stage).
        meta.parse.irregular = 0;
        meta.path = PATH_PLAIN;
        meta.reports_version = 0;
        meta.hot = 0;
        meta.dropped = 0;
        meta.stamp = 0;
        meta.stale_epoch = 0;
        meta.steered = 0;
        meta.found = 0;
        meta.candidates = 0;
        meta.applied = 0;
        meta.believed = 0;
        meta.reply_refused = 0;
        meta.reports = 0;
        meta.from_home = 0;
        meta.new_dst = 0;
        meta.me = 0;
        meta.route_access = ROUTE_NONE;
        meta.admission_event = NO_EVENT;
        meta.stamp_event = NO_EVENT;
        meta.route_event = NO_EVENT;
        meta.reply_event = NO_EVENT;
        meta.acks_event = NO_EVENT;
        common_parse.apply(pkt, hdr, meta.parse);
        transition accept;
    }
}

control TnaIngress(inout headers_t hdr, inout meta_t meta,
                   in ingress_intrinsic_metadata_t ig_md,
                   in ingress_intrinsic_metadata_from_parser_t prs_md,
                   inout ingress_intrinsic_metadata_for_deparser_t dprs_md,
                   inout ingress_intrinsic_metadata_for_tm_t tm_md) {
    // The counters of `switch::Counter`, by index (COUNTER_*). Tofino counts a Counter once per
    // packet, so every packet is counted in `pegasus_counters` (COUNTER_PACKETS) and each group
    // of events that exclude one another has a counter of its own, counted once at the end
    // from the index its step left in metadata (NO_EVENT: none). A counter's total is the sum
    // of its index over the six.
    Counter<bit<64>, bit<8>>(COUNTERS, CounterType_t.PACKETS) pegasus_counters;
    Counter<bit<64>, bit<8>>(COUNTERS, CounterType_t.PACKETS) admission_counters;
    Counter<bit<64>, bit<8>>(COUNTERS, CounterType_t.PACKETS) stamp_counters;
    Counter<bit<64>, bit<8>>(COUNTERS, CounterType_t.PACKETS) route_counters;
    Counter<bit<64>, bit<8>>(COUNTERS, CounterType_t.PACKETS) reply_counters;
    Counter<bit<64>, bit<8>>(COUNTERS, CounterType_t.PACKETS) ack_counters;

    // VERSION_COUNTER, 32 bits per epoch.
    Register<bit<32>, bit<1>>(1, 0) version_counter;
    RegisterAction<bit<32>, bit<1>, bit<32>>(version_counter) next_counter = {
        void apply(inout bit<32> value, out bit<32> next) {
            value = value + 1;
            next = value;
        }
    };

    // WRITE_WINDOWS (once::decide, once::record), in two registers a stage apart (a stateful
    // ALU returns one value): the slot's key first, claimed by a fresh write; then its
    // counter, recorded by a fresh write or recalled by a copy.
    Register<bit<32>, bit<16>>(TNA_WINDOW_SLOTS) window_keys;
    // once::decide in the stateful ALU: the verdict comes out (a gateway cannot compare a
    // value computed in its own step).
    RegisterAction<bit<32>, bit<16>, bit<8>>(window_keys) claim_slot = {
        void apply(inout bit<32> key, out bit<8> verdict) {
            if (key == meta.window_key) {
                verdict = WINDOW_REUSE; // a copy of this write: its version again
            } else if ((int<32>)(key - meta.window_key) < 0) {
                key = meta.window_key; // older or empty (0): this write is fresh
                verdict = WINDOW_FRESH;
            } else {
                verdict = WINDOW_STALE; // a newer write: a copy its client has finished
            }
        }
    };
    Register<bit<32>, bit<16>>(TNA_WINDOW_SLOTS) window_counters;
    RegisterAction<bit<32>, bit<16>, bit<32>>(window_counters) record_counter = {
        void apply(inout bit<32> counter) { counter = meta.counter; }
    };
    RegisterAction<bit<32>, bit<16>, bit<32>>(window_counters) recall_counter = {
        void apply(inout bit<32> counter, out bit<32> recorded) { recorded = counter; }
    };

    // RETRY_ROUTES: the route's tag, its address, and when it was written; one register
    // each (a stateful ALU returns one value).
    Register<bit<32>, bit<16>>(RETRY_ROUTES) retry_tags;
    RegisterAction<bit<32>, bit<16>, bit<32>>(retry_tags) remember_tag = {
        void apply(inout bit<32> tag) { tag = meta.route_tag; }
    };
    RegisterAction<bit<32>, bit<16>, bit<32>>(retry_tags) recall_tag = {
        void apply(inout bit<32> tag, out bit<32> value) { value = tag; }
    };
    Register<bit<32>, bit<16>>(RETRY_ROUTES) retry_addresses;
    RegisterAction<bit<32>, bit<16>, bit<32>>(retry_addresses) remember_address = {
        void apply(inout bit<32> address) { address = meta.new_dst; }
    };
    RegisterAction<bit<32>, bit<16>, bit<32>>(retry_addresses) recall_address = {
        void apply(inout bit<32> address, out bit<32> value) { value = address; }
    };
    // When the route stops being recent: written + the retry window, so that the check
    // below is one comparison with `now` (no stage spent on now - window).
    Register<bit<32>, bit<16>>(RETRY_ROUTES) retry_expiry;
    RegisterAction<bit<32>, bit<16>, bit<32>>(retry_expiry) stamp_route_time = {
        void apply(inout bit<32> expiry) { expiry = meta.now + RETRY_WINDOW_UNITS; }
    };
    // Whether the route was written within the retry window, in the stateful ALU: a
    // condition compares at most 4 bytes + 12 bits, against constants.
    RegisterAction<bit<32>, bit<16>, bit<8>>(retry_expiry) route_is_recent = {
        void apply(inout bit<32> expiry, out bit<8> recent) {
            if ((int<32>)(expiry - meta.now) > 0) {
                recent = 1;
            } else {
                recent = 0;
            }
        }
    };
    Hash<bit<32>>(HashAlgorithm_t.CRC32) route_slot_hash;
    Hash<bit<32>>(HashAlgorithm_t.CRC32) route_tag_hash;

    // DIRECTORY entries, by the index the `directory` table gives.
    Register<bit<8>, bit<16>>(DIRECTORY_CAPACITY_MAX) installing;
    RegisterAction<bit<8>, bit<16>, bit<8>>(installing) read_installing = {
        void apply(inout bit<8> value, out bit<8> was) { was = value; }
    };
    RegisterAction<bit<8>, bit<16>, bit<8>>(installing) home_replied = {
        void apply(inout bit<8> value, out bit<8> was) { was = value; value = 0; }
    };
    // An entry's newest complete version (its counter, in the current epoch) and its replica
    // set, as one register pair: the reply rule changes both in one stateful access (two
    // registers would be two dependent stages on the reply path).
    Register<completed_t, bit<16>>(DIRECTORY_CAPACITY_MAX) completed;
    // directory::apply_reply: newer, the set becomes the sender; equal, the sender joins.
    // Out comes the newest counter: the reply's own unless it was older (stale). (A constant
    // per branch cannot come out of a register whose other action outputs a value.)
    RegisterAction<completed_t, bit<16>, bit<32>>(completed) apply_reply = {
        void apply(inout completed_t entry, out bit<32> newest) {
            if (meta.reply_counter > entry.counter) {
                entry.counter = meta.reply_counter;
                entry.rset = (bit<32>)meta.me;
            } else if (meta.reply_counter == entry.counter) {
                entry.rset = entry.rset | (bit<32>)meta.me;
            }
            newest = entry.counter;
        }
    };
    RegisterAction<completed_t, bit<16>, bit<32>>(completed) read_rset = {
        void apply(inout completed_t entry, out bit<32> rset) { rset = entry.rset; }
    };
    Register<bit<8>, bit<16>>(DIRECTORY_CAPACITY_MAX) read_cursor;
    RegisterAction<bit<8>, bit<16>, bit<8>>(read_cursor) next_read = {
        void apply(inout bit<8> value, out bit<8> was) { was = value; value = value + 1; }
    };
    Register<bit<8>, bit<16>>(DIRECTORY_CAPACITY_MAX) write_cursor;
    RegisterAction<bit<8>, bit<16>, bit<8>>(write_cursor) next_write = {
        void apply(inout bit<8> value, out bit<8> was) { was = value; value = value + 1; }
    };

    action count(bit<8> which) { pegasus_counters.count(which); }
    action drop() { dprs_md.drop_ctl = 1; }

    action set_config(bit<16> epoch, server_set_t all_servers, bit<8> replication) {
        meta.epoch = epoch;
        meta.all_servers = all_servers;
        meta.replication = replication;
    }
    table config {
        actions = { set_config; }
        default_action = set_config(0, 0, 1);
        size = 1;
    }

    action set_role(bit<8> role) { meta.role = role; }
    table port_role {
        key = { ig_md.ingress_port : exact @name("port"); }
        actions = { set_role; }
        default_action = set_role(ROLE_CLIENT);
        size = 512;
    }

    // `home_bit` is directory::bit(home): the target shifts by constants only.
    action hot_key(bit<16> index, bit<8> home, server_set_t home_bit, bit<1> evicting,
                   bit<8> replica_target) {
        meta.hot = 1;
        meta.index = index;
        meta.home = home;
        meta.home_bit = home_bit;
        meta.evicting = evicting;
        meta.replica_target = replica_target;
    }
    action cold_key() { meta.hot = 0; }
    table directory {
        key = { hdr.pegasus.keyhash : exact @name("keyhash"); }
        actions = { hot_key; cold_key; }
        default_action = cold_key();
        size = DIRECTORY_CAPACITY_MAX;
    }

    // Whether home is in the replica set, written to a field by a table's action: inline, the
    // compiler folds the `&` into the gateway's condition, which compares with constants only.
    action find_home() { meta.home_in_set = meta.candidates & meta.home_bit; }
    table home_membership {
        actions = { find_home; }
        default_action = find_home();
        size = 1;
    }

    // directory::nth_set_bit(candidates, cursor % popcount(candidates)), precomputed.
    action choose(bit<8> server) { meta.chosen = server; meta.found = 1; }
    action no_candidate() { meta.found = 0; }
    table round_robin {
        // The cursor's low 3 bits (nth_set_bit of 8 servers at most): a slice, no stage to mask it.
        key = { meta.candidates : exact @name("candidates"); meta.cursor[2:0] : exact @name("cursor"); }
        actions = { choose; no_candidate; }
        default_action = no_candidate();
        size = 2048;
    }

    // directory::successors(all_servers, primary, replication - 1), precomputed; the
    // replica target 0 means the configured replication.
    action set_copies(server_set_t copies) { meta.copies = copies; }
    table write_copies {
        key = {
            meta.chosen : exact @name("primary");
            meta.replica_target : exact @name("replica_target");
        }
        actions = { set_copies; }
        default_action = set_copies(0);
        size = 512;
    }

    action address(bit<32> ipv4) { meta.new_dst = ipv4; }
    table server_address {
        key = { meta.chosen : exact @name("server"); }
        actions = { address; }
        default_action = address(0);
        size = P4_SERVERS;
    }

    // roles::admit_reply for a server port: the sender's own address; `me` is its bit.
    action believe(server_set_t me) { meta.believed = 1; meta.me = me; }
    table reply_sender {
        key = { hdr.pegasus.server_id : exact @name("server"); hdr.ipv4.src : exact @name("source"); }
        actions = { believe; NoAction; }
        default_action = NoAction();
        size = P4_SERVERS;
    }

    // switch::classify, as one table for the stage it saves: what a packet is, from the
    // parser's verdict, the ports (a request goes to the store port, a reply comes from it;
    // server-to-server messages do both and the op decides) and the Pegasus header's magic,
    // protocol version and op. The store's traffic that matches no message we know is
    // malformed. A table rather than conditions: long `||` chains of the ops overflowed the
    // Tofino backend's stack (docs/p4.md).
    action set_path(bit<3> path, bit<1> reports_version) {
        meta.path = path;
        meta.reports_version = reports_version;
    }
    table classify {
        key = {
            hdr.udp.isValid() : exact @name("udp_valid");
            hdr.pegasus.isValid() : ternary @name("pegasus_valid");
            meta.parse.irregular : ternary @name("irregular");
            hdr.udp.dst_port : ternary @name("dst_port");
            hdr.udp.src_port : ternary @name("src_port");
            hdr.pegasus.magic : ternary @name("magic");
            hdr.pegasus.proto_version : ternary @name("proto_version");
            hdr.pegasus.op : ternary @name("op");
        }
        actions = { set_path; }
        default_action = set_path(PATH_PLAIN, 0);
        size = 32;
        const entries = {
            // In priority order: the first entry that matches.
            (true, _, 1, PEGASUS_STORE_PORT, _, _, _, _) : set_path(PATH_UNPARSEABLE, 0);
            (true, _, 1, _, PEGASUS_STORE_PORT, _, _, _) : set_path(PATH_UNPARSEABLE, 0);
            (true, true, 0, PEGASUS_STORE_PORT, _, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_GET) : set_path(PATH_REQUEST, 0);
            (true, true, 0, PEGASUS_STORE_PORT, _, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_PUT) : set_path(PATH_REQUEST, 0);
            (true, true, 0, PEGASUS_STORE_PORT, _, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_REPLICATE) : set_path(PATH_REQUEST, 0);
            (true, true, 0, PEGASUS_STORE_PORT, _, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_CHAIN_PUT) : set_path(PATH_REQUEST, 0);
            (true, true, 0, PEGASUS_STORE_PORT, _, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_PUSH) : set_path(PATH_REQUEST, 0);
            (true, true, 0, _, PEGASUS_STORE_PORT, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_GET_REPLY) : set_path(PATH_REPLY, 1);
            (true, true, 0, _, PEGASUS_STORE_PORT, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_PUT_REPLY) : set_path(PATH_REPLY, 1);
            (true, true, 0, _, PEGASUS_STORE_PORT, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_REPLICATE_ACK) : set_path(PATH_REPLY, 1);
            (true, true, 0, _, PEGASUS_STORE_PORT, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_PUSH_REPLY) : set_path(PATH_REPLY, 1);
            (true, true, 0, _, PEGASUS_STORE_PORT, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_CHAIN_ACK) : set_path(PATH_REPLY, 0);
            (true, true, 0, _, PEGASUS_STORE_PORT, PEGASUS_MAGIC, PEGASUS_PROTOCOL_VERSION, OP_ERROR) : set_path(PATH_REPLY, 0);
            (true, _, _, PEGASUS_STORE_PORT, _, _, _, _) : set_path(PATH_MALFORMED, 0);
            (true, _, _, _, PEGASUS_STORE_PORT, _, _, _) : set_path(PATH_MALFORMED, 0);
        }
    }

    // roles::admit_reply: a server port believes the server its reply names at the address
    // it has (`reply_sender`); a chain port's CHAIN_ACK is admitted; nothing else is.
    action refuse_reply() { meta.reply_refused = 1; }
    table reply_admission {
        key = {
            meta.role : exact @name("role");
            meta.believed : ternary @name("believed");
            hdr.pegasus.op : ternary @name("op");
        }
        actions = { refuse_reply; NoAction; }
        default_action = refuse_reply();
        size = 4;
        const entries = {
            (ROLE_SERVER, 1, _) : NoAction();
            (ROLE_CHAIN, _, OP_CHAIN_ACK) : NoAction();
        }
    }

    // roles::admit_request by (port role, op): servers are trusted; the previous rack of a
    // chain may send CHAIN_PUTs; a client's (or another rack's) GET or PUT is cleaned; every
    // other op is dropped. The controller's client id is refused apart (in `apply`).
    const bit<2> ADMIT_ACCEPT = 0;
    const bit<2> ADMIT_CLEAN = 1;
    const bit<2> ADMIT_DROP = 2;
    action admit(bit<2> admission) { meta.admission = admission; }
    table request_admission {
        key = { meta.role : exact @name("role"); hdr.pegasus.op : exact @name("op"); }
        actions = { admit; }
        default_action = admit(ADMIT_DROP);
        size = 16;
        const entries = {
            (ROLE_SERVER, OP_GET) : admit(ADMIT_ACCEPT);
            (ROLE_SERVER, OP_PUT) : admit(ADMIT_ACCEPT);
            (ROLE_SERVER, OP_REPLICATE) : admit(ADMIT_ACCEPT);
            (ROLE_SERVER, OP_CHAIN_PUT) : admit(ADMIT_ACCEPT);
            (ROLE_SERVER, OP_PUSH) : admit(ADMIT_ACCEPT);
            (ROLE_CHAIN, OP_CHAIN_PUT) : admit(ADMIT_ACCEPT);
            (ROLE_CHAIN, OP_GET) : admit(ADMIT_CLEAN);
            (ROLE_CHAIN, OP_PUT) : admit(ADMIT_CLEAN);
            (ROLE_CLIENT, OP_GET) : admit(ADMIT_CLEAN);
            (ROLE_CLIENT, OP_PUT) : admit(ADMIT_CLEAN);
        }
    }

    action forward(PortId_t port, bit<48> src_mac, bit<48> dst_mac) {
        tm_md.ucast_egress_port = port;
        hdr.ethernet.src = src_mac;
        hdr.ethernet.dst = dst_mac;
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
    }
    action no_route() { drop(); }
    table ipv4_forward {
        key = { hdr.ipv4.dst : exact @name("destination"); }
        actions = { forward; no_route; }
        default_action = no_route();
        size = 1024;
    }

    apply {
        // Laid out for Tofino's 12 stages: a table waits a stage for every table whose result
        // its key, its condition or its action reads, so the lookups that read headers alone
        // run first and side by side, the request and reply paths are the branches of one
        // `if` (they share stages), conditions test headers and metadata directly (a local
        // `bool` is one more table and stage), and harmless register reads (the replica set,
        // the cursors) are not held back for the drop decisions. A dropped packet sets
        // `dropped` (no `exit`: the backend's mid end predicated every later statement on it).

        // Stage 0: lookups on headers alone.
        meta.now = (bit<32>)(prs_md.global_tstamp >> 20);
        config.apply();
        port_role.apply();
        if (hdr.ipv4.isValid()) {
            classify.apply();
        } else {
            meta.dropped = 1;
        }
        if (hdr.pegasus.isValid()) {
            directory.apply();
            reply_sender.apply();
            meta.window_key = (bit<32>)hdr.pegasus.request_id[30:0];
            meta.window_index = hdr.pegasus.client_id[9:0] ++ hdr.pegasus.request_id[5:0];
            // FLAG_RETRY before the flags are rewritten (cleaning keeps it, stamping does
            // not touch it), so that the retry's test need not wait for the rewrites.
            meta.retried = hdr.pegasus.flags[2:2];
            meta.route_slot = route_slot_hash.get({
                hdr.pegasus.client_id, hdr.pegasus.request_id })[15:0];
            meta.route_tag = route_tag_hash.get({
                hdr.pegasus.request_id, hdr.pegasus.client_id }) | 1;
        }

        if (meta.path == PATH_UNPARSEABLE) {
            meta.admission_event = COUNTER_UNPARSEABLE;
            meta.dropped = 1;
        } else if (meta.path == PATH_MALFORMED) {
            meta.admission_event = COUNTER_PARSE_FAILURES;
            meta.dropped = 1;
        } else if (meta.path == PATH_REQUEST) {
            // ---------------------------------------------------------------- requests
            // roles::admit_request (by role and op), once::admits_epoch, the hot key's cursors
            // and, for a write, whether it may leave home (read ahead: a request dropped
            // later has only moved a cursor).
            request_admission.apply();
            meta.window_key = meta.window_key + 1; // (sequence) + 1: 0 marks an empty slot
            if (hdr.pegasus.load == 0) {
                meta.stale_epoch = 1;
            } else if (hdr.pegasus.load != meta.epoch) {
                meta.stale_epoch = 1;
            }
            if (hdr.pegasus.op == OP_PUT) {
                hdr.udp.checksum = 0; // stamped or cleaned: "no checksum" (see the header)
            }
            if (meta.hot == 1) {
                if (hdr.pegasus.op == OP_GET) {
                    meta.cursor = next_read.execute(meta.index);
                } else if (hdr.pegasus.op == OP_PUT) {
                    meta.cursor = next_write.execute(meta.index);
                    meta.installing = read_installing.execute(meta.index);
                }
            }

            // roles::clean; the controller's client id is refused from any port but a
            // server's.
            if (meta.admission == ADMIT_DROP) {
                meta.admission_event = COUNTER_ROLE_DROPS;
                meta.dropped = 1;
            } else if (meta.admission == ADMIT_CLEAN
                       && hdr.pegasus.client_id == PEGASUS_CONTROLLER_CLIENT_ID) {
                meta.admission_event = COUNTER_ROLE_DROPS;
                meta.dropped = 1;
            } else if (meta.admission == ADMIT_CLEAN) {
                hdr.pegasus.version = 0;
                hdr.pegasus.replica_bitmap = 0;
                hdr.pegasus.flags = hdr.pegasus.flags & CLIENT_FLAGS;
                if (hdr.pegasus.op == OP_PUT) { meta.stamp = 1; }
            } else if (hdr.pegasus.op == OP_PUT && (hdr.pegasus.flags & FLAG_STAMPED) == 0) {
                meta.stamp = 1;
            }

            // Stamping (switch::stamp, once::decide, once::record).
            if (meta.stamp == 1) {
                if (meta.stale_epoch == 1) {
                    hdr.pegasus.flags = hdr.pegasus.flags | FLAG_STALE_EPOCH;
                    hdr.pegasus.version = meta.epoch ++ 48w0;
                    meta.stamp_event = COUNTER_STALE_EPOCHS;
                } else if (hdr.pegasus.client_id >= TNA_CLIENTS) {
                    // No window for it: refused rather than stamped more than once.
                    meta.stamp_event = COUNTER_ROLE_DROPS;
                    meta.dropped = 1;
                } else {
                    meta.counter = next_counter.execute(0);
                    meta.window_verdict = claim_slot.execute(meta.window_index);
                    if (meta.window_verdict == WINDOW_REUSE) {
                        meta.stamped = recall_counter.execute(meta.window_index);
                        meta.stamp_event = COUNTER_STAMPS_REUSED;
                    } else if (meta.window_verdict == WINDOW_STALE) {
                        // The slot holds a newer write: a copy its client has finished.
                        meta.stamp_event = COUNTER_STALE_DUPLICATES;
                        meta.dropped = 1;
                    } else {
                        record_counter.execute(meta.window_index);
                        meta.stamped = meta.counter;
                        meta.stamp_event = COUNTER_WRITES_STAMPED;
                    }
                    hdr.pegasus.version = meta.epoch ++ 16w0 ++ meta.stamped;
                }
            }

            // Routing: a retried write goes where its first copy went (switch::RetryRoute);
            // a hot key's read to a member of its replica set, its write to any server unless
            // EntryView::writes_go_home (directory::route_hot_read, route_hot_write).
            if (hdr.pegasus.op == OP_PUT && meta.retried == 1) {
                meta.route_access = ROUTE_RECALL;
            } else if (meta.hot == 1) {
                if (hdr.pegasus.op == OP_GET) {
                    meta.candidates = (server_set_t)read_rset.execute(meta.index);
                } else if (hdr.pegasus.op == OP_PUT
                           && meta.evicting == 0 && meta.installing == 0) {
                    meta.candidates = meta.all_servers;
                }
                round_robin.apply(); // no candidates: not found
                home_membership.apply();
                if (meta.found == 1) {
                    server_address.apply();
                    if (hdr.pegasus.op == OP_PUT) {
                        write_copies.apply();
                        meta.steered = 1;
                        if (meta.dropped == 0) { meta.route_access = ROUTE_REMEMBER; }
                    } else if (meta.evicting == 0) {
                        meta.steered = 1;
                    } else if (meta.home_in_set == 0) {
                        // EntryView::reads_home_only: not until home holds the version
                        meta.steered = 1;
                    }
                }
                if (meta.steered == 1 && meta.dropped == 0) {
                    if (meta.new_dst != 0) {
                        hdr.pegasus.flags = hdr.pegasus.flags | FLAG_HOT;
                        hdr.ipv4.dst = meta.new_dst;
                        hdr.udp.checksum = 0;
                    }
                    if (hdr.pegasus.op == OP_PUT) {
                        hdr.pegasus.replica_bitmap = (bit<64>)meta.copies;
                        meta.route_event = COUNTER_HOT_WRITES;
                    } else {
                        meta.route_event = COUNTER_HOT_READS;
                    }
                }
            }
            // The retry routes, read by a retried write and written by a routed hot write at
            // this one point (on Tofino a register's accesses share a stage, and the hot
            // write's address is known only here).
            if (meta.route_access == ROUTE_RECALL) {
                meta.route_held_tag = recall_tag.execute(meta.route_slot);
                meta.route_answer = recall_address.execute(meta.route_slot);
                meta.route_recent = route_is_recent.execute(meta.route_slot);
            } else if (meta.route_access == ROUTE_REMEMBER) {
                remember_tag.execute(meta.route_slot);
                remember_address.execute(meta.route_slot);
                stamp_route_time.execute(meta.route_slot);
            }
            if (meta.route_access == ROUTE_RECALL && meta.dropped == 0) {
                // switch::RetryRoute::decide
                if (meta.route_held_tag == meta.route_tag) {
                    hdr.pegasus.flags = hdr.pegasus.flags | FLAG_HOT;
                    hdr.ipv4.dst = meta.route_answer;
                    meta.route_event = COUNTER_RETRIES_PINNED;
                } else if (meta.route_held_tag != 0 && meta.route_recent == 1) {
                    meta.route_event = COUNTER_RETRIES_DROPPED;
                    meta.dropped = 1;
                }
            }
        } else if (meta.path == PATH_REPLY) {
            // ---------------------------------------------------------------- replies
            reply_admission.apply();
            meta.reply_counter = hdr.pegasus.version[31:0];
            // Whether it reports a version (half by half: a condition compares at most 4
            // bytes + 12 bits).
            if (meta.reports_version == 1 && hdr.pegasus.status == 0) {
                if (hdr.pegasus.version[31:0] != 0) {
                    meta.reports = 1;
                } else if (hdr.pegasus.version[63:32] != 0) {
                    meta.reports = 1;
                }
            }
            if (hdr.pegasus.server_id == meta.home) { meta.from_home = 1; }

            if (meta.reply_refused == 1) {
                meta.reply_event = COUNTER_ROLE_DROPS;
                meta.dropped = 1;
            } else if (meta.reports == 1 && meta.hot == 0) {
                if ((hdr.pegasus.flags & FLAG_HOT) != 0) {
                    meta.reply_event = COUNTER_REPLIES_DROPPED;
                    meta.dropped = 1;
                }
            } else if (meta.reports == 1) {
                // directory::admit_reply: while installing (or evicting), only home speaks
                // for the key.
                if (meta.from_home == 1) {
                    meta.installing = home_replied.execute(meta.index);
                } else {
                    meta.installing = read_installing.execute(meta.index);
                }
                if (meta.from_home == 0 && (meta.installing != 0 || meta.evicting == 1)) {
                    if ((hdr.pegasus.flags & FLAG_HOT) != 0) {
                        meta.reply_event = COUNTER_REPLIES_DROPPED;
                        meta.dropped = 1;
                    }
                } else if (hdr.pegasus.version[63:48] == meta.epoch) {
                    // directory::apply_reply within the epoch
                    meta.newest = apply_reply.execute(meta.index);
                    meta.applied = 1;
                }
                if (meta.applied == 1 && meta.newest == meta.reply_counter) {
                    meta.reply_event = COUNTER_DIRECTORY_UPDATES; // newer or joined
                }
            }
            if (hdr.pegasus.op == OP_REPLICATE_ACK && meta.dropped == 0) {
                meta.acks_event = COUNTER_REPLICATE_ACKS;
                meta.dropped = 1;
            }
        }

        if (meta.dropped == 0 && hdr.ipv4.ttl > 1) {
            ipv4_forward.apply();
        } else {
            drop();
        }
        count(COUNTER_PACKETS);
        if (meta.admission_event != NO_EVENT) { admission_counters.count(meta.admission_event); }
        if (meta.stamp_event != NO_EVENT) { stamp_counters.count(meta.stamp_event); }
        if (meta.route_event != NO_EVENT) { route_counters.count(meta.route_event); }
        if (meta.reply_event != NO_EVENT) { reply_counters.count(meta.reply_event); }
        if (meta.acks_event != NO_EVENT) { ack_counters.count(meta.acks_event); }
    }
}

control TnaIngressDeparser(packet_out pkt, inout headers_t hdr, in meta_t meta,
                           in ingress_intrinsic_metadata_for_deparser_t dprs_md) {
    Checksum() ipv4_checksum;
    apply {
        if (hdr.ipv4.isValid()) {
            hdr.ipv4.checksum = ipv4_checksum.update({
                hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.tos, hdr.ipv4.total_len,
                hdr.ipv4.identification, hdr.ipv4.reserved, hdr.ipv4.dont_fragment,
                hdr.ipv4.more_fragments, hdr.ipv4.frag_offset, hdr.ipv4.ttl,
                hdr.ipv4.protocol, hdr.ipv4.src, hdr.ipv4.dst,
                hdr.ipv4_options[0].word, hdr.ipv4_options[1].word, hdr.ipv4_options[2].word,
                hdr.ipv4_options[3].word, hdr.ipv4_options[4].word, hdr.ipv4_options[5].word,
                hdr.ipv4_options[6].word, hdr.ipv4_options[7].word, hdr.ipv4_options[8].word,
                hdr.ipv4_options[9].word });
        }
        pkt.emit(hdr);
    }
}

struct egress_headers_t { }
struct egress_meta_t { }

parser TnaEgressParser(packet_in pkt, out egress_headers_t hdr, out egress_meta_t meta,
                       out egress_intrinsic_metadata_t eg_md) {
    state start {
        pkt.extract(eg_md);
        transition accept;
    }
}

control TnaEgress(inout egress_headers_t hdr, inout egress_meta_t meta,
                  in egress_intrinsic_metadata_t eg_md,
                  in egress_intrinsic_metadata_from_parser_t prs_md,
                  inout egress_intrinsic_metadata_for_deparser_t dprs_md,
                  inout egress_intrinsic_metadata_for_output_port_t oport_md) {
    apply { }
}

control TnaEgressDeparser(packet_out pkt, inout egress_headers_t hdr, in egress_meta_t meta,
                          in egress_intrinsic_metadata_for_deparser_t dprs_md) {
    apply { pkt.emit(hdr); }
}

Pipeline(TnaIngressParser(), TnaIngress(), TnaIngressDeparser(),
         TnaEgressParser(), TnaEgress(), TnaEgressDeparser()) pipe;

Switch(pipe) main;
