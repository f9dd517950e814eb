// The headers both Pegasus P4 programs parse: Ethernet (with an optional 802.1Q/802.1ad tag),
// IPv4, UDP, and the Pegasus header (docs/protocol.md; offsets and widths from
// constants.p4, which is generated from pegasus_common).
#ifndef PEGASUS_HEADERS_P4
#define PEGASUS_HEADERS_P4

#include "constants.p4"

header ethernet_t {
    bit<48> dst;
    bit<48> src;
    bit<16> ether_type;
}

header vlan_t {
    bit<16> tci;
    bit<16> ether_type;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  tos;
    bit<16> total_len;
    bit<16> identification;
    bit<1>  reserved;
    bit<1>  dont_fragment;
    bit<1>  more_fragments;
    bit<13> frag_offset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> checksum;
    bit<32> src;
    bit<32> dst;
}

// One 32-bit word of IPv4 options (an IHL of up to 15 leaves room for 10), kept as it came.
header ipv4_option_word_t {
    bit<32> word;
}

header udp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<16> length;
    bit<16> checksum;
}

// The Pegasus header, field by field in wire order (wire::offset::*): 40 bytes.
header pegasus_t {
    bit<16> magic;          // OFFSET_MAGIC
    bit<8>  proto_version;  // OFFSET_PROTO_VERSION
    bit<8>  op;             // OFFSET_OP
    bit<64> keyhash;        // OFFSET_KEYHASH
    bit<64> version;        // OFFSET_VERSION
    bit<32> request_id;     // OFFSET_REQUEST_ID
    bit<16> client_id;      // OFFSET_CLIENT_ID
    bit<8>  server_id;      // OFFSET_SERVER_ID
    bit<8>  flags;          // OFFSET_FLAGS
    bit<64> replica_bitmap; // OFFSET_REPLICA_BITMAP
    bit<16> load;           // OFFSET_LOAD (requests: the client's epoch, OFFSET_CLIENT_EPOCH)
    bit<16> status;         // OFFSET_STATUS
}

struct headers_t {
    ethernet_t ethernet;
    vlan_t     vlan;
    ipv4_t     ipv4;
    ipv4_option_word_t[10] ipv4_options;
    udp_t      udp;
    pegasus_t  pegasus;
}

#endif
