#!/usr/bin/env bash
# Load balance with and without the directory (issue 3's target): a lab rack of 8 stores with
# emulated capacity, 100,000 keys, a read-only Zipf workload; first with no hot keys, then
# with the 16 most popular keys in the directory. Prints, for each, the replies per server,
# the busiest server over the mean, throughput and latency, as JSON lines.
# Usage (root): experiments/balance.sh [zipf exponent] [capacity ops/s per store] [seconds]
#               [replication: servers each hot key is pushed to]
set -euo pipefail
cd "$(dirname "$0")/.."
zipf=${1:-1.2}
capacity=${2:-2000}
seconds=${3:-10}
replication=${4:-4}
keys=100000
hot=16
cargo build --release --locked -q
P=$PWD/target/release/pegasus
name=bal-$$
trap '"$P" lab down --name "$name" >/dev/null 2>&1 || true' EXIT
# --hot-keys 0: the directory is set by hand below (no detection).
"$P" lab up --name "$name" --hot-keys 0 --servers 8 --clients 1 --capacity-ops "$capacity" \
  --replication "$replication" >/dev/null
run() { "$P" lab run --name "$name" -- "$P" bench --keys "$keys" --json - "$@"; }
run load --concurrency 64 > /dev/null
summarize() {
  python3 -c '
import json, sys
s = json.load(sys.stdin)
print(json.dumps({"directory": sys.argv[1], "zipf": float(sys.argv[2]), "capacity_ops": int(sys.argv[3]),
                  "replication": int(sys.argv[4]),
                  "max_over_mean": round(s["max_over_mean"], 3), "ops_per_second": round(s["ops_per_second"]),
                  "p50_us": s["latency_us"]["p50"], "p99_us": s["latency_us"]["p99"], "errors": s["errors"],
                  "per_server": s["per_server"]}))' "$1" "$zipf" "$capacity" "$replication"
}
run run --concurrency 64 --theta "$zipf" --workload c --seconds "$seconds" | summarize none
keys_to_add=()
for ((i = 0; i < hot; i++)); do keys_to_add+=("user$i"); done
"$P" switch hot add --lab "$name" "${keys_to_add[@]}" > /dev/null
run run --concurrency 64 --theta "$zipf" --workload c --seconds "$seconds" | summarize "top-$hot"
