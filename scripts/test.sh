#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (scripts/setup.sh), then
# checks formatting and lints, then runs every test (unit, property, XDP fixtures through
# BPF_PROG_TEST_RUN, end-to-end lab racks, the model check, fuzz smoke runs, the P4 suite).
# Needs root for the XDP and namespace tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (host crates; -D warnings)"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo clippy (the XDP program, for bpfel-unknown-none)"
cargo +nightly clippy --locked -p pegasus-dataplane-ebpf --target bpfel-unknown-none \
  -Z build-std=core --release -- -D warnings
echo "== cargo test (all but the model check)"
cargo test --workspace --exclude pegasus-dataplane-ebpf --exclude pegasus-model --locked
echo "== the model check (release build: it explores every reachable state)"
cargo test --release -p pegasus-model --locked
echo "== fuzz smoke runs (100,000 executions per parser)"
bash scripts/fuzz.sh 100000
echo "== the P4 program's PTF suite on BMv2 (skips where no P4 toolchain is installed)"
bash p4/run-tests.sh
