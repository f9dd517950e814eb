#!/usr/bin/env bash
# How fast the controller follows an abrupt change of the hot set (issue 4's target: balanced
# again, busiest server at most 1.2x the mean, within 100 ms). A lab rack of 8 stores with
# emulated capacity, 100,000 keys, read-only Zipf; halfway through the run the 16 most popular
# keys trade popularity with 16 cold ones. The client records replies per server every 10 ms;
# busiest/mean is computed over sliding windows, and the reaction time is when it falls to
# 1.2x and stays there (for 1 s). Prints one JSON line.
# Usage (root): experiments/reaction.sh [zipf] [capacity ops/s per store] [replication]
#               [epoch ms] [sample rate]
set -euo pipefail
cd "$(dirname "$0")/.."
zipf=${1:-1.2}
capacity=${2:-2000}
replication=${3:-4}
epoch_ms=${4:-10}
sample_rate=${5:-8}
keys=100000
seconds=10
swap_at=5
window_ms=50
cargo build --release --locked -q
P=$PWD/target/release/pegasus
name=react-$$
out=$(mktemp)
trap '"$P" lab down --name "$name" >/dev/null 2>&1 || true; rm -f "$out"' EXIT
"$P" lab up --name "$name" --servers 8 --clients 1 --capacity-ops "$capacity" \
  --replication "$replication" --hot-keys 16 --epoch-ms "$epoch_ms" \
  --sample-rate "$sample_rate" >/dev/null
"$P" lab run --name "$name" -- "$P" bench --keys "$keys" --json - load --concurrency 64 >/dev/null
"$P" lab run --name "$name" -- "$P" bench --keys "$keys" --json - run --concurrency 64 \
  --theta "$zipf" --seconds "$seconds" --swap-at "$swap_at" --timeline-ms 10 > "$out" || true
python3 - "$out" "$window_ms" "$zipf" "$capacity" "$replication" "$epoch_ms" "$sample_rate" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
window_ms, zipf, capacity, replication, epoch_ms, rate = (int(sys.argv[2]), float(sys.argv[3]),
    int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
t = s["timeline"]
step, swap = t["interval_ms"], t["swap_at_ms"]
iv = t["intervals"][:-1]  # the last interval is cut short by the end of the run
w = window_ms // step
def ratio(end):  # busiest over mean of the window of intervals ending before `end`
    totals = [sum(col) for col in zip(*iv[end - w:end])]
    mean = sum(totals) / len(totals)
    return max(totals) / mean if mean else float("inf")
first = swap // step
ratios = {i: ratio(i) for i in range(w, len(iv) + 1)}
before = sorted(ratios[i] for i in ratios if 2000 // step <= i <= first)
hold = 1000 // step
reaction = None
for i in range(first + 1, len(iv) + 1 - hold):
    if all(ratios[j] <= 1.2 for j in range(i, i + hold)):
        reaction = (i * step) - swap
        break
peak = max(ratios[i] for i in ratios if first < i <= first + 2000 // step)
print(json.dumps({"zipf": zipf, "capacity_ops": capacity, "replication": replication,
                  "epoch_ms": epoch_ms, "sample_rate": rate, "window_ms": window_ms,
                  "before_median": round(before[len(before) // 2], 3),
                  "peak_after_swap": round(peak, 3),
                  "reaction_ms": reaction,
                  "ops_per_second": round(s["ops_per_second"]), "errors": s["errors"]}))
PY
