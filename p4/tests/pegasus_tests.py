"""PTF tests of the v1model Pegasus switch (p4/v1model/pegasus.p4) on BMv2, one per rule of
pegasus_common that the program implements: cold forwarding, PUT stamping at most once,
stale epochs, hot reads spread over the replica set, hot writes with their replica bitmap,
each case of the reply rule, parse failures and the client port's trust boundary.

Run by p4/run-tests.sh, which loads p4/tests/rack.toml (PEGASUS_RACK) into the switch.
Registers and counters are read and set through simple_switch_CLI."""

import os
import re
import struct
import subprocess
import tomllib

import ptf
import ptf.testutils as tu
from ptf.base_tests import BaseTest
from scapy.all import IP, UDP, Dot1Q, Ether, IPOption_NOP, Raw

CONSTANTS = os.path.join(os.path.dirname(__file__), "..", "include", "constants.p4")


def _constants():
    """The #defines of constants.p4 (generated from pegasus_common) as integers."""
    values = {}
    with open(CONSTANTS) as f:
        for line in f:
            m = re.match(r"#define (\w+) (?:\d+w)?(0x[0-9a-f]+|\d+)$", line.strip())
            if m:
                values[m.group(1)] = int(m.group(2), 0)
    return values


C = _constants()
STORE_PORT = C["PEGASUS_STORE_PORT"]
FMIX_MASK = (1 << 64) - 1


def key_hash(key: bytes) -> int:
    """common::hash::key_hash (FNV-1a, then fmix64), restated for the tests' packets."""
    h = 0xCBF29CE484222325
    for b in key:
        h ^= b
        h = (h * 0x100000001B3) & FMIX_MASK
    h ^= h >> 33
    h = (h * C["FMIX64_C1"]) & FMIX_MASK
    h ^= h >> 33
    h = (h * C["FMIX64_C2"]) & FMIX_MASK
    return h ^ (h >> 33)


assert key_hash(b"a") == 0x82A2A958A9BECE5B, "the restated hash agrees with common's test vector"


def header(op, keyhash, version=0, request_id=1, client_id=7, server_id=0, flags=0,
           bitmap=0, load=0, status=0):
    return struct.pack(
        ">HBBQQIHBBQHH", C["PEGASUS_MAGIC"], C["PEGASUS_PROTOCOL_VERSION"], op, keyhash,
        version, request_id, client_id, server_id, flags, bitmap, load, status)


def message(op, key=b"", value=b"", **fields):
    keyhash = fields.pop("keyhash", key_hash(key))
    return (header(op, keyhash, **fields) + struct.pack(">H", len(key)) + key
            + struct.pack(">H", len(value)) + value)


class Rack:
    """p4/tests/rack.toml: ports, hosts and hot keys."""

    def __init__(self):
        with open(os.environ["PEGASUS_RACK"], "rb") as f:
            self.toml = tomllib.load(f)
        self.epoch = self.toml["epoch"]
        self.ports = {p["port"]: p for p in self.toml["ports"]}
        self.server_port = {p["server"]: p["port"] for p in self.toml["ports"] if "server" in p}
        self.client_port = next(p["port"] for p in self.toml["ports"] if p["role"] == "client")
        self.hot = {h["key"]: i for i, h in enumerate(self.toml["hot"])}

    def ip(self, port):
        return self.ports[port]["ipv4"]

    def server_ip(self, server):
        return self.ip(self.server_port[server])


def cli(*commands):
    """Runs simple_switch_CLI commands; returns their output."""
    done = subprocess.run(["simple_switch_CLI", "--thrift-port", "9090"],
                          input="\n".join(commands) + "\n", capture_output=True, text=True,
                          check=True)
    return done.stdout


def register(name, index):
    out = cli(f"register_read {name} {index}")
    return int(re.search(rf"{name}\[{index}\]\s*=\s*(\d+)", out).group(1))


def counter(name):
    out = cli(f"counter_read PegasusIngress.pegasus_counters {C['COUNTER_' + name]}")
    found = re.search(r"(\d+) packets", out)
    assert found, f"unexpected counter_read output: {out}"
    return int(found.group(1))


class PegasusTest(BaseTest):
    def setUp(self):
        BaseTest.setUp(self)
        self.dataplane = ptf.dataplane_instance
        self.dataplane.flush()
        self.rack = Rack()

    def frame(self, in_port, to_ip, payload, src_port=40000, dst_port=STORE_PORT, ttl=64):
        """A frame arriving from the host behind `in_port`."""
        p = self.rack.ports[in_port]
        return (Ether(src=p["mac"], dst=p["switch_mac"])
                / IP(src=p["ipv4"], dst=to_ip, ttl=ttl, id=0x1234, flags="DF")
                / UDP(sport=src_port, dport=dst_port) / Raw(payload))

    def forwarded(self, frame, out_port, payload=None, to_ip=None):
        """`frame` as the switch sends it out of `out_port`: MACs, TTL, rewritten fields and
        both checksums recomputed."""
        p = self.rack.ports[out_port]
        e = frame.copy()
        e[Ether].src, e[Ether].dst = p["switch_mac"], p["mac"]
        e[IP].ttl -= 1
        if to_ip is not None:
            e[IP].dst = to_ip
        if payload is not None:
            e[Raw].load = payload
        del e[IP].chksum
        del e[UDP].chksum
        return Ether(bytes(e))

    def client_request(self, op, key, server, **fields):
        fields.setdefault("load", self.rack.epoch)  # the client's epoch
        payload = message(op, key, b"v" if op == C["OP_PUT"] else b"", **fields)
        return self.frame(self.rack.client_port, self.rack.server_ip(server), payload)

    def send_expect(self, frame, expected, out_port):
        tu.send_packet(self, self.in_port_of(frame), frame)
        tu.verify_packet(self, expected, out_port)
        tu.verify_no_other_packets(self)

    def in_port_of(self, frame):
        return next(port for port, p in self.rack.ports.items() if p["ipv4"] == frame[IP].src)

    def send_dropped(self, frame):
        tu.send_packet(self, self.in_port_of(frame), frame)
        tu.verify_no_other_packets(self)

    def stamp(self, counter_value):
        return (self.rack.epoch << C["VERSION_COUNTER_BITS"]) | counter_value


class ColdForward(PegasusTest):
    """A GET of a cold key goes to the server it was sent to, untouched but for L2 and TTL."""

    def runTest(self):
        f = self.client_request(C["OP_GET"], b"cold", 3)
        self.send_expect(f, self.forwarded(f, self.rack.server_port[3]), self.rack.server_port[3])


class PutStamping(PegasusTest):
    """PUTs get consecutive versions; a copy of one gets its version again (once::decide);
    a copy of a write a window older is dropped; epoch 0 and an old epoch are marked."""

    def runTest(self):
        port = self.rack.server_port[0]
        base = register("PegasusIngress.version_counter", 0)
        rid = 0x80000100
        first = self.client_request(C["OP_PUT"], b"cold-w", 0, request_id=rid)
        exp = message(C["OP_PUT"], b"cold-w", b"v", request_id=rid, load=self.rack.epoch,
                      version=self.stamp(base + 1))
        self.send_expect(first, self.forwarded(first, port, exp), port)
        second = self.client_request(C["OP_PUT"], b"cold-w", 0, request_id=rid + 1)
        exp2 = message(C["OP_PUT"], b"cold-w", b"v", request_id=rid + 1, load=self.rack.epoch,
                       version=self.stamp(base + 2))
        self.send_expect(second, self.forwarded(second, port, exp2), port)
        self.send_expect(first, self.forwarded(first, port, exp), port)  # a late copy
        # A write a window later takes the first one's slot in the client's window.
        later_id = rid + C["WRITE_WINDOW"]
        later = self.client_request(C["OP_PUT"], b"cold-w", 0, request_id=later_id)
        exp3 = message(C["OP_PUT"], b"cold-w", b"v", request_id=later_id, load=self.rack.epoch,
                       version=self.stamp(base + 3))
        self.send_expect(later, self.forwarded(later, port, exp3), port)
        stale = counter("STALE_DUPLICATES")
        self.send_dropped(first)  # its slot now holds a write a window newer
        self.assertEqual(counter("STALE_DUPLICATES"), stale + 1)
        for epoch in (0, self.rack.epoch - 1):
            f = self.client_request(C["OP_PUT"], b"cold-w", 0, request_id=rid + 2, load=epoch)
            marked = message(C["OP_PUT"], b"cold-w", b"v", request_id=rid + 2, load=epoch,
                             flags=C["FLAG_STALE_EPOCH"],
                             version=self.rack.epoch << C["VERSION_COUNTER_BITS"])
            self.send_expect(f, self.forwarded(f, port, marked), port)


class HotReadSpread(PegasusTest):
    """Reads of a hot key go to the members of its replica set in turn, marked HOT."""

    def runTest(self):
        index = self.rack.hot["hot-read"]
        cli(f"register_write PegasusIngress.rset {index} {0b0110}",
            f"register_write PegasusIngress.installing {index} 0")
        seen = set()
        for i in range(4):
            f = self.client_request(C["OP_GET"], b"hot-read", 1, request_id=10 + i)
            tu.send_packet(self, self.rack.client_port, f)
            result = self.dataplane.poll(timeout=2)
            self.assertIsNotNone(result.packet, "a hot read was forwarded")
            server = next(s for s, p in self.rack.server_port.items() if p == result.port)
            self.assertIn(server, (1, 2), "a member of the replica set")
            seen.add(server)
            payload = message(C["OP_GET"], b"hot-read", request_id=10 + i,
                              load=self.rack.epoch, flags=C["FLAG_HOT"])
            expected = self.forwarded(f, result.port, payload, self.rack.server_ip(server))
            self.assertEqual(bytes(result.packet), bytes(expected))
        self.assertEqual(seen, {1, 2}, "round robin over both members")


class HotWriteBitmap(PegasusTest):
    """A write of an installed hot key goes to a server of the rack, with its copies (the
    next server, replication 2) in the replica bitmap; while installing it goes home."""

    def runTest(self):
        index = self.rack.hot["hot-write"]
        cli(f"register_write PegasusIngress.installing {index} 1")
        f = self.client_request(C["OP_PUT"], b"hot-write", 2, request_id=0x80000900)
        tu.send_packet(self, self.rack.client_port, f)
        home = self.dataplane.poll(timeout=2)
        self.assertEqual(home.port, self.rack.server_port[2], "installing: home")
        # Reads outnumber writes (RecentMix::copies_pay): copies go with the writes.
        cli(f"register_write PegasusIngress.installing {index} 0",
            f"register_write PegasusIngress.mix_reads {index} 60",
            f"register_write PegasusIngress.mix_writes {index} 0")
        for i in range(4):
            f = self.client_request(C["OP_PUT"], b"hot-write", 2, request_id=0x80000901 + i)
            tu.send_packet(self, self.rack.client_port, f)
            result = self.dataplane.poll(timeout=2)
            self.assertIsNotNone(result.packet)
            server = next(s for s, p in self.rack.server_port.items() if p == result.port)
            got = Ether(result.packet)
            fields = struct.unpack(">HBBQQIHBBQHH", bytes(got[Raw].load)[:40])
            flags, bitmap = fields[8], fields[9]
            self.assertEqual(got[IP].dst, self.rack.server_ip(server))
            self.assertTrue(flags & C["FLAG_HOT"])
            self.assertEqual(bitmap, 1 << ((server + 1) % 4), "the next server copies it")
        # Writes outnumber reads: copies no longer pay.
        cli(f"register_write PegasusIngress.mix_reads {index} 0")
        f = self.client_request(C["OP_PUT"], b"hot-write", 2, request_id=0x80000910)
        tu.send_packet(self, self.rack.client_port, f)
        got = Ether(self.dataplane.poll(timeout=2).packet)
        bitmap = struct.unpack(">Q", bytes(got[Raw].load)[28:36])[0]
        self.assertEqual(bitmap, 0, "a write-mostly key's writes are not copied")


class ReplyRules(PegasusTest):
    """directory::apply_reply: a newer version makes the sender the set; an equal one adds
    the sender; an older one changes nothing. Installing: only home's replies count."""

    def reply(self, server, version, flags=0):
        payload = message(C["OP_GET_REPLY"], keyhash=key_hash(b"hot-reply"), value=b"v",
                          version=version, server_id=server, flags=flags, load=0)
        port = self.rack.server_port[server]
        f = self.frame(port, self.rack.ip(self.rack.client_port), payload,
                       src_port=STORE_PORT, dst_port=40000)
        tu.send_packet(self, port, f)
        tu.verify_packet(self, self.forwarded(f, self.rack.client_port), self.rack.client_port)
        tu.verify_no_other_packets(self)

    def runTest(self):
        index = self.rack.hot["hot-reply"]  # home 0, installing
        rset = lambda: register("PegasusIngress.rset", index)
        v = self.stamp(1000)
        self.reply(1, v, flags=0)  # not home, not steered: forwarded, not learned
        self.assertEqual(rset(), 0b0001)
        self.reply(0, v)  # home: newer, the set becomes {0}; installing ends
        self.assertEqual(register("PegasusIngress.installing", index), 0)
        self.assertEqual(rset(), 0b0001)
        self.reply(2, v, flags=C["FLAG_HOT"])  # equal: joins
        self.assertEqual(rset(), 0b0101)
        self.reply(3, v - 1, flags=C["FLAG_HOT"])  # older: nothing
        self.assertEqual(rset(), 0b0101)
        self.reply(3, v + 1, flags=C["FLAG_HOT"])  # newer: the set is the sender
        self.assertEqual(rset(), 0b1000)
        self.assertEqual(register("PegasusIngress.ver_completed", index), v + 1)


class ParseFailures(PegasusTest):
    """Store traffic the switch cannot read is dropped and counted, never half-rewritten."""

    def runTest(self):
        before = counter("PARSE_FAILURES")
        bad_magic = b"\x00" + message(C["OP_GET"], b"k")[1:]
        bad_version = message(C["OP_GET"], b"k")[:2] + b"\x09" + message(C["OP_GET"], b"k")[3:]
        unknown_op = message(C["OP_GET"], b"k")[:3] + b"\xc8" + message(C["OP_GET"], b"k")[4:]
        short = message(C["OP_GET"], b"k")[:C["PEGASUS_HEADER_BYTES"] - 1]
        for payload in (bad_magic, bad_version, unknown_op, short):
            self.send_dropped(self.frame(self.rack.client_port, self.rack.server_ip(0), payload))
        self.assertEqual(counter("PARSE_FAILURES"), before + 4)
        other = self.frame(self.rack.client_port, self.rack.server_ip(0), b"dns", dst_port=53)
        self.send_expect(other, self.forwarded(other, self.rack.server_port[0]),
                         self.rack.server_port[0])


class IrregularStoreTraffic(PegasusTest):
    """Store traffic behind IP options, a VLAN tag or in a first fragment is dropped (the
    switch would not find its header where it looks: boundary::touches_store_port); other
    traffic with options goes on with its options as they came."""

    def runTest(self):
        before = counter("UNPARSEABLE")
        put = self.client_request(C["OP_PUT"], b"k", 0)
        with_options = put.copy()
        with_options[IP].options = [IPOption_NOP()] * 4
        del with_options[IP].ihl
        tagged = Ether(src=put[Ether].src, dst=put[Ether].dst) / Dot1Q(vlan=7) / put[IP]
        first_fragment = put.copy()
        first_fragment[IP].flags = "MF"
        for f in (Ether(bytes(with_options)), tagged, first_fragment):
            tu.send_packet(self, self.rack.client_port, f)
        tu.verify_no_other_packets(self)
        self.assertEqual(counter("UNPARSEABLE"), before + 3)
        dns = self.frame(self.rack.client_port, self.rack.server_ip(1), b"dns", dst_port=53)
        dns[IP].options = [IPOption_NOP()] * 8
        del dns[IP].ihl
        dns = Ether(bytes(dns))
        self.send_expect(dns, self.forwarded(dns, self.rack.server_port[1]),
                         self.rack.server_port[1])


class ClientPortBoundary(PegasusTest):
    """roles: a client's forged switch-only fields are cleared (then the PUT is stamped);
    server-to-server ops, the controller's id and replies from a client port are dropped."""

    def runTest(self):
        port = self.rack.server_port[0]
        base = register("PegasusIngress.version_counter", 0)
        forged = self.client_request(
            C["OP_PUT"], b"cold-f", 0, request_id=0x80000a00, version=(1 << 64) - 1,
            bitmap=(1 << 64) - 1,
            flags=C["FLAG_STAMPED"] | C["FLAG_HOT"] | C["FLAG_CACHED"] | C["FLAG_RETRY"])
        clean = message(C["OP_PUT"], b"cold-f", b"v", request_id=0x80000a00,
                        load=self.rack.epoch, flags=C["FLAG_RETRY"],
                        version=self.stamp(base + 1))
        self.send_expect(forged, self.forwarded(forged, port, clean), port)
        drops = counter("ROLE_DROPS")
        for op in ("OP_REPLICATE", "OP_PUSH", "OP_CHAIN_PUT"):
            self.send_dropped(self.client_request(C[op], b"k", 0))
        self.send_dropped(self.client_request(C["OP_GET"], b"k", 0,
                                              client_id=C["PEGASUS_CONTROLLER_CLIENT_ID"]))
        reply = self.frame(self.rack.client_port, self.rack.server_ip(0),
                           message(C["OP_GET_REPLY"], b"k", server_id=0),
                           src_port=STORE_PORT, dst_port=STORE_PORT + 1)
        self.send_dropped(reply)
        self.assertEqual(counter("ROLE_DROPS"), drops + 5)
