// The Pegasus switch for the v1model architecture (BMv2 simple_switch): the rules of
// pegasus_common (common/src/{switch,roles,once,directory,version}.rs) as the XDP program
// applies them, in P4. docs/p4.md maps every table, register and action to its rule and
// lists where this target differs from the XDP program, with the reason.
//
// Control plane (`pegasus p4 entries` writes it for a rack): the `config` table's default
// action (epoch, policy, replication, the rack's servers), `port_role`, `ipv4_forward`,
// `directory` (one entry per hot key), and the registers `server_ip`.
#include <core.p4>
#include <v1model.p4>

#include "../include/parser.p4"

// Servers this program chooses among: its choices are unrolled (P4 has no loops), one step
// per server. The wire's replica bitmap is 64 bits; only its low P4_SERVERS bits are set.
#define P4_SERVERS 8
typedef bit<8> server_set_t;

const bit<32> WINDOW_MASK = WRITE_WINDOW - 1;
const bit<32> SEQUENCE_MASK = 0x7fffffff;
const bit<32> HALF_SEQUENCE = 0x40000000;
const bit<64> COUNTER_MAX = (64w1 << VERSION_COUNTER_BITS) - 1;

struct meta_t {
    parse_meta_t parse;
    // config
    bit<16> epoch;
    bit<8>  policy;
    bit<8>  replication;
    server_set_t all_servers;
    // the packet
    bit<8>  role;
    bit<1>  to_store;
    bit<1>  from_store;
    bit<1>  stamp;
    // its directory entry
    bit<1>  hot;
    bit<32> index;
    bit<8>  home;
    bit<1>  evicting;
    bit<8>  replica_target;
    // choices
    bit<32> sequence;
    server_set_t candidates;
    bit<8>  chosen;
    bit<1>  found;
    server_set_t copies;
}

parser PegasusParser(packet_in pkt, out headers_t hdr, inout meta_t meta,
                     inout standard_metadata_t sm) {
    PegasusParse() common_parse;
    state start {
        common_parse.apply(pkt, hdr, meta.parse);
        transition accept;
    }
}

control NoVerify(inout headers_t hdr, inout meta_t meta) { apply { } }

control PegasusIngress(inout headers_t hdr, inout meta_t meta,
                       inout standard_metadata_t sm) {
    // switch::Counter, by index (constants.p4).
    counter(COUNTERS, CounterType.packets) pegasus_counters;
    // VERSION_COUNTER: the last counter value stamped in this epoch.
    register<bit<64>>(1) version_counter;
    // WRITE_WINDOWS: once::ClientWindow slots, client id x WRITE_WINDOW.
    register<bit<64>>(WRITE_CLIENTS * WRITE_WINDOW) write_windows;
    // RETRY_ROUTES: (tag << 32 | server address) and the time it was written, per slot.
    register<bit<64>>(RETRY_ROUTES) retry_words;
    register<bit<48>>(RETRY_ROUTES) retry_written_us;
    // SERVERS: each server's address (0: no such server) and last reported load.
    register<bit<32>>(P4_SERVERS) server_ip;
    register<bit<16>>(P4_SERVERS) server_load;
    // DIRECTORY entries, by the index the `directory` table gives a hot key.
    register<bit<64>>(DIRECTORY_CAPACITY_MAX) ver_completed;
    register<bit<8>>(DIRECTORY_CAPACITY_MAX) rset;
    register<bit<1>>(DIRECTORY_CAPACITY_MAX) installing;
    register<bit<32>>(DIRECTORY_CAPACITY_MAX) reads;
    register<bit<32>>(DIRECTORY_CAPACITY_MAX) writes;
    register<bit<16>>(DIRECTORY_CAPACITY_MAX) mix_reads;
    // Each entry's position in its round (see `n` below).
    register<bit<32>>(DIRECTORY_CAPACITY_MAX) read_cursor;
    register<bit<32>>(DIRECTORY_CAPACITY_MAX) write_cursor;
    register<bit<16>>(DIRECTORY_CAPACITY_MAX) mix_writes;

    action count(bit<32> which) { pegasus_counters.count(which); }
    action drop() { mark_to_drop(sm); }

    action set_config(bit<16> epoch, bit<8> policy, bit<8> replication,
                      server_set_t all_servers) {
        meta.epoch = epoch;
        meta.policy = policy;
        meta.replication = replication;
        meta.all_servers = all_servers;
    }
    table config {
        actions = { set_config; }
        default_action = set_config(0, POLICY_LEAST_LOADED, 1, 0);
        size = 1;
    }

    action set_role(bit<8> role) { meta.role = role; }
    table port_role {
        key = { sm.ingress_port : exact; }
        actions = { set_role; }
        default_action = set_role(ROLE_CLIENT); // a port the controller did not name
        size = 512;
    }

    action hot_key(bit<32> index, bit<8> home, bit<1> evicting, bit<8> replica_target) {
        meta.hot = 1;
        meta.index = index;
        meta.home = home;
        meta.evicting = evicting;
        meta.replica_target = replica_target;
    }
    action cold_key() { meta.hot = 0; }
    table directory {
        key = { hdr.pegasus.keyhash : exact; }
        actions = { hot_key; cold_key; }
        default_action = cold_key();
        size = DIRECTORY_CAPACITY_MAX;
    }

    action forward(bit<9> port, bit<48> src_mac, bit<48> dst_mac) {
        sm.egress_spec = port;
        hdr.ethernet.src = src_mac;
        hdr.ethernet.dst = dst_mac;
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
    }
    action no_route() { mark_to_drop(sm); pegasus_counters.count(COUNTER_FIB_MISSES); }
    table ipv4_forward {
        key = { hdr.ipv4.dst : exact; }
        actions = { forward; no_route; }
        default_action = no_route();
        size = 1024;
    }

    // --- choices among servers, unrolled (directory::choose, nth_set_bit, successors) ---

    // meta.chosen = the index of the n-th set bit of meta.candidates (meta.found = 0 if none).
    #define NTH_STEP(i)                                              \
        if (meta.candidates[i:i] == 1) {                              \
            if (seen == n && meta.found == 0) {                       \
                meta.chosen = i; meta.found = 1;                      \
            }                                                         \
            seen = seen + 1;                                          \
        }
    // Least loaded: candidates in turn from the start candidate, the strictly lowest load wins.
    #define SCAN_STEP(k)                                             \
        id = (start + k) & 7;                                         \
        if ((meta.candidates >> id)[0:0] == 1) {                      \
            server_load.read(load, (bit<32>)id);                      \
            if ((bit<32>)load < best) { best = (bit<32>)load; meta.chosen = id; } \
        }
    // successors: the `wanted` candidates after `after`, in cyclic order.
    #define SUCCESSOR_STEP(k)                                        \
        id = (after + k) & 7;                                         \
        if ((meta.all_servers >> id)[0:0] == 1 && taken < wanted) {   \
            meta.copies = meta.copies | ((server_set_t)1 << id);      \
            taken = taken + 1;                                        \
        }

    apply {
        count(COUNTER_PACKETS);
        if (!hdr.ipv4.isValid()) {
            // No L2 switching here (the XDP switch hands these to the kernel).
            drop();
            count(COUNTER_VERDICT_DROP);
            exit;
        }
        config.apply();
        port_role.apply();
        if (hdr.udp.isValid()) {
            meta.to_store = (bit<1>)(hdr.udp.dst_port == PEGASUS_STORE_PORT);
            meta.from_store = (bit<1>)(hdr.udp.src_port == PEGASUS_STORE_PORT);
        }
        if (meta.parse.irregular == 1 && (meta.to_store == 1 || meta.from_store == 1)) {
            count(COUNTER_UNPARSEABLE);
            drop();
            count(COUNTER_VERDICT_DROP);
            exit;
        }
        bit<1> pegasus = (bit<1>)(meta.to_store == 1 || meta.from_store == 1);
        if (pegasus == 1) {
            // switch::classify
            bool valid = hdr.pegasus.isValid()
                && hdr.pegasus.magic == PEGASUS_MAGIC
                && hdr.pegasus.proto_version == PEGASUS_PROTOCOL_VERSION
                && hdr.pegasus.op >= OP_FIRST && hdr.pegasus.op <= OP_LAST;
            bit<8> op = hdr.pegasus.op;
            bool is_request = IS_REQUEST_OP(op);
            if (!valid || (is_request && meta.to_store == 0)
                || (!is_request && meta.from_store == 0)) {
                count(COUNTER_PARSE_FAILURES);
                drop();
                count(COUNTER_VERDICT_DROP);
                exit;
            }
            directory.apply();
            bit<8> flags = hdr.pegasus.flags;
            if (is_request) {
                count(COUNTER_REQUESTS);
                // roles::admit_request
                if (meta.role == ROLE_SERVER || (meta.role == ROLE_CHAIN && op == OP_CHAIN_PUT)) {
                    meta.stamp = (bit<1>)(op == OP_PUT && (flags & FLAG_STAMPED) == 0);
                } else if (hdr.pegasus.client_id == PEGASUS_CONTROLLER_CLIENT_ID
                           || (op != OP_GET && op != OP_PUT)) {
                    count(COUNTER_ROLE_DROPS);
                    drop();
                    count(COUNTER_VERDICT_DROP);
                    exit;
                } else {
                    // roles::clean
                    if (hdr.pegasus.version != 0 || hdr.pegasus.replica_bitmap != 0
                        || (flags & ~CLIENT_FLAGS) != 0) {
                        hdr.pegasus.version = 0;
                        hdr.pegasus.replica_bitmap = 0;
                        hdr.pegasus.flags = flags & CLIENT_FLAGS;
                        count(COUNTER_REQUESTS_CLEANED);
                    }
                    meta.stamp = (bit<1>)(op == OP_PUT);
                }
                flags = hdr.pegasus.flags;
                if (meta.stamp == 1) {
                    bit<16> client_epoch = hdr.pegasus.load;
                    if (client_epoch == 0 || client_epoch != meta.epoch) {
                        // once::admits_epoch says no: marked for the store to refuse.
                        hdr.pegasus.flags = flags | FLAG_STALE_EPOCH;
                        hdr.pegasus.version = (bit<64>)meta.epoch << VERSION_COUNTER_BITS;
                        count(COUNTER_STALE_EPOCHS);
                    } else {
                        // once::decide on the write's slot in its client's window.
                        bit<32> rid = hdr.pegasus.request_id;
                        bit<32> slot = ((bit<32>)hdr.pegasus.client_id << 6)
                            | ((rid & SEQUENCE_MASK) & WINDOW_MASK);
                        bit<64> word;
                        write_windows.read(word, slot);
                        bit<64> counter_now;
                        version_counter.read(counter_now, 0);
                        bit<32> held = word[63:32];
                        bit<32> ahead = ((held & SEQUENCE_MASK) - (rid & SEQUENCE_MASK)) & SEQUENCE_MASK;
                        bit<64> stamped_counter = 0;
                        if (word == 0 || ahead > HALF_SEQUENCE) {
                            // Fresh: the next version, recorded (once::record).
                            stamped_counter = counter_now + 1;
                            version_counter.write(0, stamped_counter);
                            write_windows.write(slot, ((bit<64>)(rid | WRITE_ID_BIT) << 32)
                                | (bit<64>)stamped_counter[31:0]);
                            count(COUNTER_WRITES_STAMPED);
                        } else if (ahead == 0) {
                            // Reuse: the recorded version (once::counter_from).
                            bit<64> candidate = (counter_now & 0xffffffff00000000)
                                | (bit<64>)word[31:0];
                            if (candidate > counter_now) {
                                candidate = candidate |-| 64w0x100000000;
                            }
                            stamped_counter = candidate;
                            count(COUNTER_STAMPS_REUSED);
                        } else {
                            count(COUNTER_STALE_DUPLICATES);
                            drop();
                            count(COUNTER_VERDICT_DROP);
                            exit;
                        }
                        if (stamped_counter > COUNTER_MAX) {
                            count(COUNTER_VERSION_EXHAUSTED);
                            drop();
                            count(COUNTER_VERDICT_DROP);
                            exit;
                        }
                        hdr.pegasus.version = ((bit<64>)meta.epoch << VERSION_COUNTER_BITS)
                            | stamped_counter;
                    }
                }
                flags = hdr.pegasus.flags;
                // Routing (directory::route_hot_write / route_hot_read, switch::RetryRoute).
                bit<32> new_dst = 0;
                bit<1> steered = 0;
                bit<48> now = sm.ingress_global_timestamp;
                bit<64> k = ((bit<64>)hdr.pegasus.client_id << 32) | (bit<64>)hdr.pegasus.request_id;
                k = k ^ (k >> 33);
                k = k * FMIX64_C1;
                k = k ^ (k >> 33);
                k = k * FMIX64_C2;
                k = k ^ (k >> 33);
                bit<32> route_slot = k[31:0] & (RETRY_ROUTES - 1);
                bit<32> route_tag = k[63:32] == 0 ? 32w1 : k[63:32];
                if (op == OP_PUT && (flags & FLAG_RETRY) != 0) {
                    bit<64> route_word;
                    bit<48> written;
                    retry_words.read(route_word, route_slot);
                    retry_written_us.read(written, route_slot);
                    if (route_word[63:32] == route_tag) {
                        new_dst = route_word[31:0];
                        steered = 1;
                        count(COUNTER_RETRIES_PINNED);
                    } else if (route_word != 0 && now - written < RETRY_WINDOW_US) {
                        count(COUNTER_RETRIES_DROPPED);
                        drop();
                        count(COUNTER_VERDICT_DROP);
                        exit;
                    }
                } else if ((op == OP_GET || op == OP_PUT) && meta.hot == 1) {
                    bit<1> is_read = (bit<1>)(op == OP_GET);
                    bit<8> set;
                    bit<1> entry_installing;
                    rset.read(set, meta.index);
                    installing.read(entry_installing, meta.index);
                    // RecentMix::count
                    bit<16> mr; bit<16> mw;
                    mix_reads.read(mr, meta.index);
                    mix_writes.read(mw, meta.index);
                    mr = (mr & (MIX_WINDOW - 1)) + (bit<16>)is_read;
                    mw = (mw & (MIX_WINDOW - 1)) + (bit<16>)(is_read ^ 1);
                    if (mr + mw >= MIX_WINDOW) { mr = mr >> 1; mw = mw >> 1; }
                    mix_reads.write(meta.index, mr);
                    mix_writes.write(meta.index, mw);
                    bool go_home = false;
                    if (is_read == 1) {
                        reads.read(meta.sequence, meta.index);
                        reads.write(meta.index, meta.sequence + 1);
                        meta.candidates = set;
                        // EntryView::reads_home_only
                        go_home = meta.evicting == 1 && (set >> meta.home)[0:0] == 1;
                    } else {
                        writes.read(meta.sequence, meta.index);
                        writes.write(meta.index, meta.sequence + 1);
                        meta.candidates = meta.all_servers;
                        // EntryView::writes_go_home
                        go_home = meta.evicting == 1 || entry_installing == 1;
                    }
                    if (!go_home && meta.candidates != 0) {
                        // directory::choose: the start candidate is the sequence's.
                        bit<32> total = 0;
                        total = total + (bit<32>)meta.candidates[0:0] + (bit<32>)meta.candidates[1:1]
                            + (bit<32>)meta.candidates[2:2] + (bit<32>)meta.candidates[3:3]
                            + (bit<32>)meta.candidates[4:4] + (bit<32>)meta.candidates[5:5]
                            + (bit<32>)meta.candidates[6:6] + (bit<32>)meta.candidates[7:7];
                        // sequence % total, kept as a cursor per entry and op (the target
                        // has no run-time modulo): the same position while the set is fixed.
                        bit<32> n;
                        if (is_read == 1) { read_cursor.read(n, meta.index); }
                        else { write_cursor.read(n, meta.index); }
                        if (n >= total) { n = 0; }
                        bit<32> next = n + 1 >= total ? 32w0 : n + 1;
                        if (is_read == 1) { read_cursor.write(meta.index, next); }
                        else { write_cursor.write(meta.index, next); }
                        bit<32> seen = 0;
                        meta.found = 0;
                        NTH_STEP(0) NTH_STEP(1) NTH_STEP(2) NTH_STEP(3)
                        NTH_STEP(4) NTH_STEP(5) NTH_STEP(6) NTH_STEP(7)
                        if (meta.policy == POLICY_LEAST_LOADED) {
                            bit<8> start = meta.chosen;
                            bit<8> id;
                            bit<16> load;
                            bit<32> best = 0xffffffff;
                            SCAN_STEP(0) SCAN_STEP(1) SCAN_STEP(2) SCAN_STEP(3)
                            SCAN_STEP(4) SCAN_STEP(5) SCAN_STEP(6) SCAN_STEP(7)
                        }
                        if (is_read == 0) {
                            // directory::successors, then RecentMix::copies_pay
                            bit<32> wanted = meta.replica_target == 0
                                ? (bit<32>)meta.replication : (bit<32>)meta.replica_target;
                            wanted = wanted |-| 1;
                            bit<8> after = meta.chosen;
                            bit<8> id;
                            bit<32> taken = 0;
                            meta.copies = 0;
                            SUCCESSOR_STEP(1) SUCCESSOR_STEP(2) SUCCESSOR_STEP(3)
                            SUCCESSOR_STEP(4) SUCCESSOR_STEP(5) SUCCESSOR_STEP(6)
                            SUCCESSOR_STEP(7)
                            if ((bit<32>)mr < COPY_READS_PER_WRITE * (bit<32>)mw) {
                                meta.copies = 0;
                            }
                        }
                        server_ip.read(new_dst, (bit<32>)meta.chosen);
                        if (new_dst != 0) {
                            steered = 1;
                            if (is_read == 1) {
                                count(COUNTER_HOT_READS);
                            } else {
                                count(COUNTER_HOT_WRITES);
                                hdr.pegasus.replica_bitmap = (bit<64>)meta.copies;
                                retry_words.write(route_slot, ((bit<64>)route_tag << 32)
                                    | (bit<64>)new_dst);
                                retry_written_us.write(route_slot, now);
                            }
                        }
                    }
                }
                if (steered == 1) {
                    hdr.pegasus.flags = hdr.pegasus.flags | FLAG_HOT;
                    hdr.ipv4.dst = new_dst;
                }
            } else {
                count(COUNTER_REPLIES);
                bit<8> sender = hdr.pegasus.server_id;
                // roles::admit_reply
                bit<32> sender_ip = 0;
                if (sender < P4_SERVERS) {
                    server_ip.read(sender_ip, (bit<32>)sender);
                }
                bool believed = (meta.role == ROLE_SERVER && sender < P4_SERVERS
                                 && sender_ip != 0 && sender_ip == hdr.ipv4.src)
                    || (meta.role == ROLE_CHAIN && op == OP_CHAIN_ACK);
                if (!believed) {
                    count(COUNTER_ROLE_DROPS);
                    drop();
                    count(COUNTER_VERDICT_DROP);
                    exit;
                }
                if (sender < P4_SERVERS) {
                    server_load.write((bit<32>)sender, hdr.pegasus.load);
                }
                if (REPORTS_VERSION_OP(op) && hdr.pegasus.status == 0 && hdr.pegasus.version != 0) {
                    bool from_steered = (flags & FLAG_HOT) != 0;
                    // directory::admit_reply
                    if (meta.hot == 0) {
                        if (from_steered) {
                            count(COUNTER_REPLIES_DROPPED);
                            drop();
                            count(COUNTER_VERDICT_DROP);
                            exit;
                        }
                    } else {
                        bit<8> set;
                        bit<1> entry_installing;
                        bit<64> completed;
                        rset.read(set, meta.index);
                        installing.read(entry_installing, meta.index);
                        ver_completed.read(completed, meta.index);
                        bool home_only = entry_installing == 1
                            || (meta.evicting == 1 && (set >> meta.home)[0:0] == 1);
                        if (home_only && sender != meta.home) {
                            if (from_steered) {
                                count(COUNTER_REPLIES_DROPPED);
                                drop();
                                count(COUNTER_VERDICT_DROP);
                                exit;
                            }
                        } else {
                            // directory::apply_reply and still_installing
                            server_set_t me = (server_set_t)1 << sender;
                            if (hdr.pegasus.version > completed) {
                                ver_completed.write(meta.index, hdr.pegasus.version);
                                rset.write(meta.index, me);
                                count(COUNTER_DIRECTORY_UPDATES);
                            } else if (hdr.pegasus.version == completed) {
                                rset.write(meta.index, set | me);
                                count(COUNTER_DIRECTORY_UPDATES);
                            }
                            if (sender == meta.home) {
                                installing.write(meta.index, 0);
                            }
                        }
                    }
                }
                if (op == OP_REPLICATE_ACK) {
                    count(COUNTER_REPLICATE_ACKS);
                    drop();
                    count(COUNTER_VERDICT_DROP);
                    exit;
                }
            }
        }
        // Forwarding: TTL, then the L3 table (the XDP program's FIB lookup).
        if (hdr.ipv4.ttl <= 1) {
            drop(); // the XDP switch hands these to the kernel for ICMP time exceeded
            count(COUNTER_VERDICT_DROP);
            exit;
        }
        switch (ipv4_forward.apply().action_run) {
            forward: { count(COUNTER_VERDICT_REDIRECT); }
            no_route: { count(COUNTER_VERDICT_DROP); }
        }
    }
}

control PegasusEgress(inout headers_t hdr, inout meta_t meta,
                      inout standard_metadata_t sm) { apply { } }

// Checksums recomputed for what the ingress rewrote: IPv4 always (TTL), UDP only over a
// Pegasus message that carried a checksum (0, "none", stays 0).
control PegasusChecksums(inout headers_t hdr, inout meta_t meta) {
    apply {
        // Options count in the IPv4 checksum; an option word not present is zero, which
        // adds nothing to a ones' complement sum.
        update_checksum(hdr.ipv4.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.tos, hdr.ipv4.total_len,
              hdr.ipv4.identification, hdr.ipv4.reserved, hdr.ipv4.dont_fragment,
              hdr.ipv4.more_fragments, hdr.ipv4.frag_offset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.src, hdr.ipv4.dst,
              hdr.ipv4_options[0].word, hdr.ipv4_options[1].word, hdr.ipv4_options[2].word,
              hdr.ipv4_options[3].word, hdr.ipv4_options[4].word, hdr.ipv4_options[5].word,
              hdr.ipv4_options[6].word, hdr.ipv4_options[7].word, hdr.ipv4_options[8].word,
              hdr.ipv4_options[9].word },
            hdr.ipv4.checksum, HashAlgorithm.csum16);
        update_checksum_with_payload(hdr.pegasus.isValid() && hdr.udp.checksum != 0,
            { hdr.ipv4.src, hdr.ipv4.dst, 8w0, hdr.ipv4.protocol, hdr.udp.length,
              hdr.udp.src_port, hdr.udp.dst_port, hdr.udp.length,
              hdr.pegasus.magic, hdr.pegasus.proto_version, hdr.pegasus.op,
              hdr.pegasus.keyhash, hdr.pegasus.version, hdr.pegasus.request_id,
              hdr.pegasus.client_id, hdr.pegasus.server_id, hdr.pegasus.flags,
              hdr.pegasus.replica_bitmap, hdr.pegasus.load, hdr.pegasus.status },
            hdr.udp.checksum, HashAlgorithm.csum16);
    }
}

control PegasusDeparser(packet_out pkt, in headers_t hdr) {
    apply {
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.vlan);
        pkt.emit(hdr.ipv4);
        pkt.emit(hdr.ipv4_options);
        pkt.emit(hdr.udp);
        pkt.emit(hdr.pegasus);
    }
}

V1Switch(PegasusParser(), NoVerify(), PegasusIngress(), PegasusEgress(), PegasusChecksums(),
         PegasusDeparser()) main;
