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

const bit<8> EFFECT_STALE = 0;
const bit<8> EFFECT_JOINED = 1;
const bit<8> EFFECT_NEWER = 2;
// Retry routes are timed in units of 2^20 ns (about 1 ms).
const bit<32> RETRY_WINDOW_UNITS = (bit<32>)(RETRY_WINDOW_US * 1000 >> 20);

struct meta_t {
    parse_meta_t parse;
    bit<16> epoch;
    server_set_t all_servers;
    bit<8>  replication;
    bit<8>  role;
    bit<1>  to_store;
    bit<1>  from_store;
    bit<1>  is_request;
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
    bit<32> route_written;
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
    bit<8>  effect;
    server_set_t me;
}

parser TnaIngressParser(packet_in pkt, out headers_t hdr, out meta_t meta,
                        out ingress_intrinsic_metadata_t ig_md) {
    PegasusParse() common_parse;
    state start {
        pkt.extract(ig_md);
        pkt.advance(PORT_METADATA_SIZE);
        meta.parse.irregular = 0;
        common_parse.apply(pkt, hdr, meta.parse);
        transition accept;
    }
}

control TnaIngress(inout headers_t hdr, inout meta_t meta,
                   in ingress_intrinsic_metadata_t ig_md,
                   in ingress_intrinsic_metadata_from_parser_t prs_md,
                   inout ingress_intrinsic_metadata_for_deparser_t dprs_md,
                   inout ingress_intrinsic_metadata_for_tm_t tm_md) {
    Counter<bit<64>, bit<8>>(COUNTERS, CounterType_t.PACKETS) pegasus_counters;

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
    RegisterAction<bit<32>, bit<16>, bit<32>>(window_keys) claim_slot = {
        void apply(inout bit<32> key, out bit<32> held) {
            held = key;
            if ((int<32>)(key - meta.window_key) < 0) {
                key = meta.window_key; // older or empty (0): this write is fresh
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
    Register<bit<32>, bit<16>>(RETRY_ROUTES) retry_written;
    RegisterAction<bit<32>, bit<16>, bit<32>>(retry_written) stamp_route_time = {
        void apply(inout bit<32> written) { written = meta.now; }
    };
    RegisterAction<bit<32>, bit<16>, bit<32>>(retry_written) route_time = {
        void apply(inout bit<32> written, out bit<32> value) { value = written; }
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
    // ver_completed: the counter of the newest complete version, in the current epoch.
    Register<bit<32>, bit<16>>(DIRECTORY_CAPACITY_MAX) ver_completed;
    RegisterAction<bit<32>, bit<16>, bit<8>>(ver_completed) apply_reply = {
        void apply(inout bit<32> completed, out bit<8> effect) {
            if (meta.stamped > completed) {
                completed = meta.stamped;
                effect = EFFECT_NEWER;
            } else if (meta.stamped == completed) {
                effect = EFFECT_JOINED;
            } else {
                effect = EFFECT_STALE;
            }
        }
    };
    Register<server_set_t, bit<16>>(DIRECTORY_CAPACITY_MAX) rset;
    RegisterAction<server_set_t, bit<16>, server_set_t>(rset) read_rset = {
        void apply(inout server_set_t set, out server_set_t value) { value = set; }
    };
    RegisterAction<server_set_t, bit<16>, server_set_t>(rset) rset_is_sender = {
        void apply(inout server_set_t set) { set = meta.me; }
    };
    RegisterAction<server_set_t, bit<16>, server_set_t>(rset) sender_joins = {
        void apply(inout server_set_t set) { set = set | meta.me; }
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

    // directory::nth_set_bit(candidates, cursor % popcount(candidates)), precomputed.
    action choose(bit<8> server) { meta.chosen = server; meta.found = 1; }
    action no_candidate() { meta.found = 0; }
    table round_robin {
        key = { meta.candidates : exact @name("candidates"); meta.cursor : exact @name("cursor"); }
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
        // Metadata starts undefined on this target: everything read before it is written.
        meta.to_store = 0;
        meta.from_store = 0;
        meta.is_request = 0;
        meta.stamp = 0;
        meta.steered = 0;
        meta.believed = 0;
        meta.new_dst = 0;
        meta.me = 0;
        count(COUNTER_PACKETS);
        if (!hdr.ipv4.isValid()) {
            drop();
            exit;
        }
        config.apply();
        port_role.apply();
        meta.now = (bit<32>)(prs_md.global_tstamp >> 20);
        if (hdr.udp.isValid()) {
            if (hdr.udp.dst_port == PEGASUS_STORE_PORT) { meta.to_store = 1; }
            if (hdr.udp.src_port == PEGASUS_STORE_PORT) { meta.from_store = 1; }
        }
        if (meta.parse.irregular == 1 && (meta.to_store == 1 || meta.from_store == 1)) {
            count(COUNTER_UNPARSEABLE);
            drop();
            exit;
        }
        if (meta.to_store == 1 || meta.from_store == 1) {
            // switch::classify
            if (!hdr.pegasus.isValid() || hdr.pegasus.magic != PEGASUS_MAGIC
                || hdr.pegasus.proto_version != PEGASUS_PROTOCOL_VERSION
                || hdr.pegasus.op < OP_FIRST || hdr.pegasus.op > OP_LAST) {
                count(COUNTER_PARSE_FAILURES);
                drop();
                exit;
            }
            if (IS_REQUEST_OP(hdr.pegasus.op)) { meta.is_request = 1; }
            if ((meta.is_request == 1 && meta.to_store == 0)
                || (meta.is_request == 0 && meta.from_store == 0)) {
                count(COUNTER_PARSE_FAILURES);
                drop();
                exit;
            }
            directory.apply();
            if (meta.is_request == 1) {
                // roles::admit_request, roles::clean
                if (meta.role == ROLE_SERVER
                    || (meta.role == ROLE_CHAIN && hdr.pegasus.op == OP_CHAIN_PUT)) {
                    if (hdr.pegasus.op == OP_PUT && (hdr.pegasus.flags & FLAG_STAMPED) == 0) {
                        meta.stamp = 1;
                    }
                } else if (hdr.pegasus.client_id == PEGASUS_CONTROLLER_CLIENT_ID
                           || (hdr.pegasus.op != OP_GET && hdr.pegasus.op != OP_PUT)) {
                    count(COUNTER_ROLE_DROPS);
                    drop();
                    exit;
                } else {
                    hdr.pegasus.version = 0;
                    hdr.pegasus.replica_bitmap = 0;
                    hdr.pegasus.flags = hdr.pegasus.flags & CLIENT_FLAGS;
                    if (hdr.pegasus.op == OP_PUT) { meta.stamp = 1; }
                }
                if (meta.stamp == 1) {
                    if (hdr.pegasus.load == 0 || hdr.pegasus.load != meta.epoch) {
                        // once::admits_epoch says no
                        hdr.pegasus.flags = hdr.pegasus.flags | FLAG_STALE_EPOCH;
                        hdr.pegasus.version = meta.epoch ++ 48w0;
                        count(COUNTER_STALE_EPOCHS);
                    } else if (hdr.pegasus.client_id >= TNA_CLIENTS) {
                        // No window for it: refused rather than stamped more than once.
                        count(COUNTER_ROLE_DROPS);
                        drop();
                        exit;
                    } else {
                        meta.counter = next_counter.execute(0);
                        meta.window_key = (hdr.pegasus.request_id & 0x7fffffff) + 1;
                        meta.window_index = hdr.pegasus.client_id[9:0]
                            ++ hdr.pegasus.request_id[5:0];
                        bit<32> held = claim_slot.execute(meta.window_index);
                        bit<32> ahead = held - meta.window_key;
                        if (ahead == 0) {
                            meta.stamped = recall_counter.execute(meta.window_index);
                            count(COUNTER_STAMPS_REUSED);
                        } else if (ahead[31:31] == 0) {
                            // The slot holds a newer write: a copy its client has finished.
                            count(COUNTER_STALE_DUPLICATES);
                            drop();
                            exit;
                        } else {
                            record_counter.execute(meta.window_index);
                            meta.stamped = meta.counter;
                            count(COUNTER_WRITES_STAMPED);
                        }
                        hdr.pegasus.version = meta.epoch ++ 16w0 ++ meta.stamped;
                    }
                }
                // Routing.
                meta.route_slot = route_slot_hash.get({
                    hdr.pegasus.client_id, hdr.pegasus.request_id })[15:0];
                meta.route_tag = route_tag_hash.get({
                    hdr.pegasus.request_id, hdr.pegasus.client_id }) | 1;
                if (hdr.pegasus.op == OP_PUT && (hdr.pegasus.flags & FLAG_RETRY) != 0) {
                    // switch::RetryRoute::decide
                    bit<32> held_tag = recall_tag.execute(meta.route_slot);
                    meta.route_answer = recall_address.execute(meta.route_slot);
                    meta.route_written = route_time.execute(meta.route_slot);
                    // Arithmetic in an action, comparisons in the gateway (Tofino's split).
                    bit<32> age = meta.now - meta.route_written;
                    if (held_tag == meta.route_tag) {
                        meta.new_dst = meta.route_answer;
                        meta.steered = 1;
                        count(COUNTER_RETRIES_PINNED);
                    } else if (held_tag != 0 && age < RETRY_WINDOW_UNITS) {
                        count(COUNTER_RETRIES_DROPPED);
                        drop();
                        exit;
                    }
                } else if (meta.hot == 1
                           && (hdr.pegasus.op == OP_GET || hdr.pegasus.op == OP_PUT)) {
                    meta.installing = read_installing.execute(meta.index);
                    meta.candidates = read_rset.execute(meta.index);
                    bool go_home;
                    if (hdr.pegasus.op == OP_GET) {
                        meta.cursor = next_read.execute(meta.index);
                        // EntryView::reads_home_only
                        server_set_t home_in_set = meta.candidates & meta.home_bit;
                        go_home = meta.evicting == 1 && home_in_set != 0;
                    } else {
                        meta.cursor = next_write.execute(meta.index);
                        meta.candidates = meta.all_servers;
                        // EntryView::writes_go_home
                        go_home = meta.evicting == 1 || meta.installing != 0;
                    }
                    if (!go_home) {
                        meta.cursor = meta.cursor & 7;
                        round_robin.apply();
                        if (meta.found == 1) {
                            server_address.apply();
                            if (hdr.pegasus.op == OP_PUT) {
                                write_copies.apply();
                                hdr.pegasus.replica_bitmap = (bit<64>)meta.copies;
                                remember_tag.execute(meta.route_slot);
                                remember_address.execute(meta.route_slot);
                                stamp_route_time.execute(meta.route_slot);
                                count(COUNTER_HOT_WRITES);
                            } else {
                                count(COUNTER_HOT_READS);
                            }
                            meta.steered = 1;
                        }
                    }
                }
                if (meta.steered == 1 && meta.new_dst != 0) {
                    hdr.pegasus.flags = hdr.pegasus.flags | FLAG_HOT;
                    hdr.ipv4.dst = meta.new_dst;
                }
                if (hdr.pegasus.op == OP_PUT || meta.steered == 1) {
                    hdr.udp.checksum = 0; // rewritten: "no checksum" (see the header)
                }
            } else {
                // roles::admit_reply
                if (meta.role == ROLE_SERVER) {
                    reply_sender.apply();
                } else if (meta.role == ROLE_CHAIN && hdr.pegasus.op == OP_CHAIN_ACK) {
                    meta.believed = 1;
                }
                if (meta.believed == 0) {
                    count(COUNTER_ROLE_DROPS);
                    drop();
                    exit;
                }
                bool steered_reply = (hdr.pegasus.flags & FLAG_HOT) != 0;
                if (REPORTS_VERSION_OP(hdr.pegasus.op) && hdr.pegasus.status == 0
                    && hdr.pegasus.version != 0) {
                    if (meta.hot == 0) {
                        if (steered_reply) {
                            count(COUNTER_REPLIES_DROPPED);
                            drop();
                            exit;
                        }
                    } else {
                        // directory::admit_reply: while installing (or evicting), only home
                        // speaks for the key.
                        bool from_home = hdr.pegasus.server_id == meta.home;
                        if (from_home) {
                            meta.installing = home_replied.execute(meta.index);
                        } else {
                            meta.installing = read_installing.execute(meta.index);
                        }
                        if ((meta.installing != 0 || meta.evicting == 1) && !from_home) {
                            if (steered_reply) {
                                count(COUNTER_REPLIES_DROPPED);
                                drop();
                                exit;
                            }
                        } else if (hdr.pegasus.version[63:48] == meta.epoch) {
                            // directory::apply_reply within the epoch
                            meta.stamped = hdr.pegasus.version[31:0];
                            meta.effect = apply_reply.execute(meta.index);
                            if (meta.effect == EFFECT_NEWER) {
                                rset_is_sender.execute(meta.index);
                                count(COUNTER_DIRECTORY_UPDATES);
                            } else if (meta.effect == EFFECT_JOINED) {
                                sender_joins.execute(meta.index);
                                count(COUNTER_DIRECTORY_UPDATES);
                            }
                        }
                    }
                }
                if (hdr.pegasus.op == OP_REPLICATE_ACK) {
                    count(COUNTER_REPLICATE_ACKS);
                    drop();
                    exit;
                }
            }
        }
        if (hdr.ipv4.ttl <= 1) {
            drop();
            exit;
        }
        ipv4_forward.apply();
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
