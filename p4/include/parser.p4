// The parse both programs share, with the XDP program's notion of a plain packet: Ethernet,
// IPv4 (version 4, no options, not a fragment), UDP. A packet that is UDP but not plain
// (behind a VLAN tag, with IP options, a first fragment) is marked `irregular` and its UDP
// header parsed for the ports only: the ingress drops it when it is to or from the store
// port, as the XDP program's `touches_store_port` does. The Pegasus header is extracted only
// from plain UDP to or from the store port; a datagram too short for it ends the parse with
// an error, which the ingress treats as a malformed message.
#ifndef PEGASUS_PARSER_P4
#define PEGASUS_PARSER_P4

#include "headers.p4"

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<16> ETHERTYPE_8021Q = 0x8100;
const bit<16> ETHERTYPE_8021AD = 0x88a8;
const bit<8>  IPPROTO_UDP = 17;

// What the parse found that the ingress needs.
struct parse_meta_t {
    bit<1> irregular;
}

parser PegasusParse(packet_in pkt, out headers_t hdr, inout parse_meta_t pm) {
    state start {
        pm.irregular = 0;
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_IPV4: parse_ipv4;
            ETHERTYPE_8021Q: parse_vlan;
            ETHERTYPE_8021AD: parse_vlan;
            default: accept;
        }
    }
    // A tagged frame takes states of its own rather than a mark that a later state selects
    // on: Tofino's parser selects on packet bytes only.
    state parse_vlan {
        pkt.extract(hdr.vlan);
        pm.irregular = 1;
        transition select(hdr.vlan.ether_type) {
            ETHERTYPE_IPV4: parse_ipv4_tagged;
            default: accept;
        }
    }
    state parse_ipv4_tagged {
        pkt.extract(hdr.ipv4);
        transition select(hdr.ipv4.protocol, hdr.ipv4.frag_offset) {
            (IPPROTO_UDP, 13w0): ip_options; // irregular whatever its header length
            default: accept;
        }
    }
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        transition select(hdr.ipv4.protocol, hdr.ipv4.frag_offset) {
            (IPPROTO_UDP, 13w0): ipv4_udp;
            default: accept; // not UDP, or a later fragment (no UDP header in it)
        }
    }
    state ipv4_udp {
        transition select(hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.more_fragments) {
            (4w4, 4w5, 1w0): parse_udp;
            default: ip_options;
        }
    }
    // Options: IHL - 5 words, each extracted as it came into a fixed element of the stack
    // (word_i into [i], then on while the header holds more): fixed-size steps, which every
    // target parses (no varbit), and a stack element assigned in one state only, as
    // Tofino's parser needs.
    state ip_options {
        transition select(hdr.ipv4.ihl) {
            4w0 .. 4w4: accept; // the UDP header would overlap the IPv4 header's 20 bytes
            4w5: parse_udp_irregular;
            default: word_0;
        }
    }
    state word_0 { pkt.extract(hdr.ipv4_options[0]); transition select(hdr.ipv4.ihl) { 4w6: parse_udp_irregular; default: word_1; } }
    state word_1 { pkt.extract(hdr.ipv4_options[1]); transition select(hdr.ipv4.ihl) { 4w7: parse_udp_irregular; default: word_2; } }
    state word_2 { pkt.extract(hdr.ipv4_options[2]); transition select(hdr.ipv4.ihl) { 4w8: parse_udp_irregular; default: word_3; } }
    state word_3 { pkt.extract(hdr.ipv4_options[3]); transition select(hdr.ipv4.ihl) { 4w9: parse_udp_irregular; default: word_4; } }
    state word_4 { pkt.extract(hdr.ipv4_options[4]); transition select(hdr.ipv4.ihl) { 4w10: parse_udp_irregular; default: word_5; } }
    state word_5 { pkt.extract(hdr.ipv4_options[5]); transition select(hdr.ipv4.ihl) { 4w11: parse_udp_irregular; default: word_6; } }
    state word_6 { pkt.extract(hdr.ipv4_options[6]); transition select(hdr.ipv4.ihl) { 4w12: parse_udp_irregular; default: word_7; } }
    state word_7 { pkt.extract(hdr.ipv4_options[7]); transition select(hdr.ipv4.ihl) { 4w13: parse_udp_irregular; default: word_8; } }
    state word_8 { pkt.extract(hdr.ipv4_options[8]); transition select(hdr.ipv4.ihl) { 4w14: parse_udp_irregular; default: word_9; } }
    state word_9 { pkt.extract(hdr.ipv4_options[9]); transition parse_udp_irregular; }
    state parse_udp_irregular {
        pm.irregular = 1;
        pkt.extract(hdr.udp);
        transition accept;
    }
    state parse_udp {
        pkt.extract(hdr.udp);
        transition select(hdr.udp.dst_port, hdr.udp.src_port) {
            (PEGASUS_STORE_PORT, _): parse_pegasus;
            (_, PEGASUS_STORE_PORT): parse_pegasus;
            default: accept;
        }
    }
    state parse_pegasus {
        pkt.extract(hdr.pegasus);
        transition accept;
    }
}

#endif
