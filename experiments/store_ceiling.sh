#!/usr/bin/env bash
# The store's ceiling on one core: a lab rack with one store (one worker thread, pinned to
# CPU 1) and two client namespaces (pinned to CPU 0) running `kv verify` closed loops with
# 128 requests outstanding each. Prints the requests per second served and the store's CPU
# utilisation over the run; ceiling ~= throughput / utilisation when the clients are the limit.
# Usage (root): experiments/store_ceiling.sh [xdp|kernel] [keys per client]
set -euo pipefail
cd "$(dirname "$0")/.."
dataplane=${1:-xdp}
keys=${2:-100000}
cargo build --release --locked -q
P=$PWD/target/release/pegasus
name=ceil-$$
trap '"$P" lab down --name "$name" >/dev/null 2>&1 || true' EXIT
"$P" lab up --name "$name" --servers 1 --clients 2 --dataplane "$dataplane" --store-threads 1 --hot-keys 0 >/dev/null
store_pid=$(ip netns pids "pg-$name-s0")
taskset -apc 1 "$store_pid" >/dev/null
cpu_ticks() { awk '{print $14 + $15}' "/proc/$store_pid/stat"; }
t0=$(cpu_ticks); s0=$(date +%s.%N)
out=$(mktemp -d)
for c in 0 1; do
  taskset -c 0 "$P" lab run --name "$name" --client "$c" -- \
    "$P" kv verify --keys "$keys" --concurrency 128 --json > "$out/$c.json" &
done
wait
t1=$(cpu_ticks); s1=$(date +%s.%N)
python3 - "$out" "$t0" "$t1" "$s0" "$s1" "$(getconf CLK_TCK)" "$dataplane" <<'PY'
import json, sys
out, t0, t1, s0, s1, hz, dp = sys.argv[1], *map(float, sys.argv[2:7]), sys.argv[7]
runs = [json.load(open(f"{out}/{c}.json")) for c in (0, 1)]
ops = sum(r["ops_per_second"] for r in runs)
errors = sum(r["errors"] + r["mismatches"] for r in runs)
util = (t1 - t0) / hz / (s1 - s0)
print(json.dumps({"dataplane": dp, "requests_per_second": round(ops), "store_cpu_utilisation": round(util, 3),
                  "ceiling_estimate_per_core": round(ops / util) if util > 0 else None, "errors": errors}))
PY
