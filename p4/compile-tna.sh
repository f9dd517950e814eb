#!/usr/bin/env bash
# Compiles and assembles the TNA program (p4/tna/pegasus.p4) with p4c's open-source Tofino
# backend, which `../shared/tools/p4-toolchain.sh tofino` builds (hours on 2 cores) into
# P4C_TOFINO (default /opt/src/build/p4c-tofino). Writes the artefacts (bfrt.json, the
# assembled pipe with tofino.bin and context.json) to OUT (default a temporary directory).
# Nothing here runs them: that needs a Tofino switch or Intel's model.
#
#   p4/compile-tna.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
tofino=${P4C_TOFINO:-/opt/src/build/p4c-tofino}
if [[ ! -x $tofino/p4c-barefoot || ! -x $tofino/bfas ]]; then
  echo "SKIPPED: no Tofino backend at $tofino (p4c-barefoot, bfas); see docs/p4.md"
  exit 0
fi
out=${1:-$(mktemp -d /tmp/pegasus-tna.XXXXXX)}
mkdir -p "$out"
echo "== p4c-barefoot --target tofino --arch tna p4/tna/pegasus.p4"
(cd "$tofino" && ./p4c-barefoot --target tofino --arch tna -o "$out" \
  --bf-rt-schema "$out/bfrt.json" "$OLDPWD/p4/tna/pegasus.p4")
echo "== bfas"
(cd "$tofino" && ./bfas -o "$out/pipe" "$out/pipe/pegasus.bfa")
ls -l "$out/bfrt.json" "$out/pipe/tofino.bin" "$out/pipe/context.json"
echo "== compiled and assembled: $out"
