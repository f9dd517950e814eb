#!/usr/bin/env bash
# Compiles the v1model program, starts BMv2's simple_switch on veth pairs in a namespace of
# its own, loads the rack of p4/tests/rack.toml (`pegasus p4 entries`) and runs the PTF suite
# (p4/tests/pegasus_tests.py) against it. Then checks the TNA program with p4c's front end
# (p4test, with the Tofino backend's tna.p4) and, where the toolchain's `tofino` step built
# the backend, compiles and assembles it (p4/compile-tna.sh). Needs root, p4c and
# simple_switch (on PATH or under /opt/p4: ../shared/tools/p4-toolchain.sh builds them) and
# ptf and scapy (the toolchain's venv). Without them it prints SKIPPED and exits 0: CI machines have no P4 toolchain.
#
#   p4/run-tests.sh [PTF test names...]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f /opt/p4/env.sh ]] && source /opt/p4/env.sh
export PATH="$HOME/.cargo/bin:$PATH"
for tool in p4c simple_switch simple_switch_CLI ptf; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIPPED: p4c/simple_switch not installed ($tool missing; see docs/p4.md)"
    exit 0
  fi
done

out=$(mktemp -d /tmp/pegasus-p4.XXXXXX)
ns="pgp4-$$"
switch_pid=""
cleanup() {
  [[ -n $switch_pid ]] && kill "$switch_pid" 2>/dev/null && wait "$switch_pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

echo "== compiling p4/v1model/pegasus.p4"
p4c --target bmv2 --arch v1model -o "$out" p4/v1model/pegasus.p4
cargo build --quiet --bin pegasus
pegasus=target/debug/pegasus
"$pegasus" p4 entries --rack p4/tests/rack.toml > "$out/entries.txt"

echo "== simple_switch in namespace $ns"
ip netns add "$ns"
ip -n "$ns" link set lo up
interfaces=()
ptf_ports=()
for port in 0 1 2 3 4; do
  ip -n "$ns" link add "sw$port" type veth peer name "host$port"
  for end in "sw$port" "host$port"; do
    ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$end.disable_ipv6=1"
    ip -n "$ns" link set "$end" up
  done
  interfaces+=(-i "$port@sw$port")
  ptf_ports+=(-i "$port@host$port")
done
ip netns exec "$ns" simple_switch --log-file "$out/switch" --log-flush \
  "${interfaces[@]}" --thrift-port 9090 "$out/pegasus.json" > "$out/switch.stdout" 2>&1 &
switch_pid=$!
for _ in $(seq 1 60); do
  ip netns exec "$ns" bash -c 'echo > /dev/tcp/127.0.0.1/9090' 2>/dev/null && break
  sleep 0.5
done
ip netns exec "$ns" simple_switch_CLI --thrift-port 9090 < "$out/entries.txt" > "$out/entries.log"
if grep -qi "error\|invalid" "$out/entries.log"; then
  cat "$out/entries.log"
  echo "FAILED: the entries did not load" >&2
  exit 1
fi

echo "== PTF"
ip netns exec "$ns" env PEGASUS_RACK="$PWD/p4/tests/rack.toml" \
  ptf --test-dir p4/tests "${ptf_ports[@]}" --log-file "$out/ptf.log" \
  --test-params="thrift_port=9090" "$@"
echo "== PTF suite passed (logs in $out)"

tna=/opt/src/p4c/backends/tofino/bf-p4c/p4include
if [[ -f $tna/tna.p4 ]]; then
  echo "== p4/tna/pegasus.p4 through p4c's front end (the Tofino backend: p4/compile-tna.sh)"
  p4test -D__TARGET_TOFINO__=1 -I "$tna" p4/tna/pegasus.p4
  bash p4/compile-tna.sh "$out/tna"
else
  echo "SKIPPED: the TNA program's front-end check (no tna.p4 at $tna)"
fi
"$pegasus" p4 entries --rack p4/tests/rack.toml --target tofino > "$out/tofino-entries.py"
echo "== bfrt_python script for the rack: $out/tofino-entries.py ($(wc -l < "$out/tofino-entries.py") lines)"
