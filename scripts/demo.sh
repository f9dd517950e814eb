#!/usr/bin/env bash
# The main job, for a first look: a short skew demonstration. Builds pegasus, then measures a
# lab rack of 8 stores (each with an emulated capacity of 2,000 requests/s) under a uniform and
# a Zipf 0.99 read-only workload, with the XDP switch but no directory, with Pegasus's
# directory and with the in-switch cache baseline, and prints the table of throughput under a
# 20 ms p99 bound (each point the median of 3 trials, with their range, and a note where two
# systems' ranges overlap), with the plots' paths. About five minutes on an idle machine.
# Installs what is missing first. Results go to DIR (default results/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/demo}
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --locked
target/release/pegasus experiment skew --quick --out "$out" \
  --systems xdp,pegasus,cache --skews uniform,0.99 --write-ratios 0 \
  --trials 3 --seconds 1 --warmup 0.5
