#!/usr/bin/env bash
# Fuzzes every parser of outside input with cargo fuzz (libFuzzer, nightly, AddressSanitizer):
# the wire decoder, the store's handler, the cluster file, the switch's admin requests, its
# state file and a chain's configuration in etcd (targets in fuzz/fuzz_targets/, dictionaries in fuzz/dict/).
#
#   scripts/fuzz.sh [RUNS]   RUNS executions of each target (default 100000, the CI smoke
#                            run); prints each target's executions, speed and result.
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUNS=${1:-100000}
cargo +nightly fuzz build --fuzz-dir fuzz
for target in wire_decode store_handler cluster_file admin_request state_file chain_config; do
  case $target in
    wire_decode | store_handler) dict=wire ;;
    cluster_file) dict=cluster ;;
    admin_request) dict=admin ;;
    state_file) dict=state ;;
    chain_config) dict=chain ;;
  esac
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  log=$(mktemp)
  if ! "fuzz/target/x86_64-unknown-linux-gnu/release/$target" -runs="$RUNS" \
      -dict="fuzz/dict/$dict.dict" -artifact_prefix="fuzz/artifacts/$target/" \
      "fuzz/corpus/$target" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  echo "fuzz: $target: $(grep -E '^Done' "$log")"
  rm -f "$log"
done
