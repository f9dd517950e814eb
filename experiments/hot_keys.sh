#!/usr/bin/env bash
# How many hot keys the directory needs (issue 4's second target): a lab rack of 8 stores with
# emulated capacity, 100,000 keys, read-only Zipf 0.99 and 1.2, with the controller keeping
# 0 (no directory), 4, 8, 16, 32 and 64 hot keys, found by itself. Each run warms up for 3 s
# (the controller finds the keys), then measures for the given seconds. One JSON line per run.
# Usage (root): experiments/hot_keys.sh [seconds] [capacity ops/s per store] [replication]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
capacity=${2:-2000}
replication=${3:-4}
keys=100000
cargo build --release --locked -q
P=$PWD/target/release/pegasus
name=hk-$$
trap '"$P" lab down --name "$name" >/dev/null 2>&1 || true' EXIT
for zipf in 0.99 1.2; do
  for hot in 0 4 8 16 32 64; do
    "$P" lab up --name "$name" --servers 8 --clients 1 --capacity-ops "$capacity" \
      --replication "$replication" --hot-keys "$hot" >/dev/null
    run() { "$P" lab run --name "$name" -- "$P" bench --keys "$keys" --json - "$@"; }
    run load --concurrency 64 >/dev/null
    run run --concurrency 64 --theta "$zipf" --warmup 3 --seconds "$seconds" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(json.dumps({"zipf": float(sys.argv[1]), "hot_keys": int(sys.argv[2]),
                  "replication": int(sys.argv[3]), "capacity_ops": int(sys.argv[4]),
                  "max_over_mean": round(s["max_over_mean"], 3),
                  "ops_per_second": round(s["ops_per_second"]),
                  "p50_us": s["latency_us"]["p50"], "p99_us": s["latency_us"]["p99"],
                  "errors": s["errors"]}))' "$zipf" "$hot" "$replication" "$capacity"
    "$P" lab down --name "$name" >/dev/null
  done
done
