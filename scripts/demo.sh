#!/usr/bin/env bash
# The main job, for a first look: builds pegasus, brings up a lab rack (4 stores, 1 client,
# the XDP switch on the ToR), writes and reads back a few thousand keys through the switch,
# shows the switch's counters, and tears the rack down. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --locked
pegasus=$PWD/target/release/pegasus
name=demo-$$
trap '"$pegasus" lab down --name "$name" >/dev/null 2>&1 || true' EXIT

"$pegasus" lab up --name "$name" --servers 4 --clients 1
"$pegasus" lab run --name "$name" -- "$pegasus" kv verify --keys 5000
echo
"$pegasus" switch status --lab "$name"
echo
"$pegasus" lab down --name "$name"
