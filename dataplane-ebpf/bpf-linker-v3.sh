#!/usr/bin/env bash
# bpf-linker with the BPF CPU raised from `generic` (v1) to v3; see .cargo/config.toml.
args=()
for a in "$@"; do
  if [ "${prev:-}" = "--cpu" ] && [ "$a" = "generic" ]; then a=v3; fi
  args+=("$a"); prev=$a
done
exec bpf-linker --cpu-features=+allows-misaligned-mem-access "${args[@]}"
