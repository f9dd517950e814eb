#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian bookworm machine of this
# kind (run as root). Idempotent: every step checks first and skips what is already there.
#
# Pinned versions (see docs/building.md for why each one):
#   - nightly Rust 1.97 with LLVM 22 (already on the machine; never updated: a newer nightly
#     uses an LLVM that Debian does not package), plus its rust-src component;
#   - llvm-22-dev from Debian (its major must match the nightly's LLVM);
#   - bpf-linker 0.13.0 built against that LLVM;
#   - cargo-fuzz 0.13.1 (for scripts/fuzz.sh).
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
CARGO_FUZZ_VERSION=0.13.1
LLVM_MAJOR=22

log() { printf '[setup] %s\n' "$*"; }

# Nightly toolchain check: its LLVM must be the one we link bpf-linker against.
nightly_llvm=$(rustc +nightly -vV 2>/dev/null | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [ "$nightly_llvm" != "$LLVM_MAJOR" ]; then
  echo "setup: the nightly toolchain must use LLVM $LLVM_MAJOR (found '${nightly_llvm:-none}')." >&2
  echo "setup: the eBPF crate is built with the machine's nightly 1.97; do not update it." >&2
  exit 1
fi

if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

for comp in clippy rustfmt; do
  if ! rustup component list --installed | grep -q "^$comp"; then
    log "adding $comp to the stable toolchain"
    rustup component add "$comp"
  fi
done

need_apt=()
dpkg -s "llvm-$LLVM_MAJOR-dev" >/dev/null 2>&1 || need_apt+=("llvm-$LLVM_MAJOR-dev")
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v ethtool >/dev/null 2>&1 || need_apt+=(ethtool)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
# A chain of racks keeps its membership in etcd (3.4); the etcd-client crate's build runs protoc.
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# The experiments' plots are labelled in DejaVu Sans.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

export PATH="/usr/lib/llvm-$LLVM_MAJOR/bin:$HOME/.cargo/bin:$PATH"
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "installing bpf-linker $BPF_LINKER_VERSION (LLVM $LLVM_MAJOR)"
  cargo +stable install bpf-linker --version "$BPF_LINKER_VERSION" --locked \
    --no-default-features --features "llvm-$LLVM_MAJOR" --force
fi

# cargo fuzz drives the nightly toolchain but is itself built with stable (0.12's pinned
# dependencies no longer build with this nightly).
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo +stable install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force
fi

log "ready: $(bpf-linker --version), $(cargo fuzz --version), $(rustc +nightly --version)"
