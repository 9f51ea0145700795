#!/usr/bin/env bash
# Benchmark: create + install + first boot of the bundled guest image until its
# ready marker, through the real pieces (signed os-installer component, image
# library, linked clone, NoCloud seed volume, QEMU under TCG): the e2e test
# tests/e2e/tests/install.rs, run N times (default 5). Prints each run and the
# median. Needs scripts/build.sh and the guest image (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo test --release -p nasvisor-e2e --no-run >/dev/null 2>&1
times=()
for i in $(seq 1 "$runs"); do
  line=$(cargo test --release -q -p nasvisor-e2e --test install -- --nocapture 2>&1 \
    | grep 'install + first boot to the ready marker' || true)
  [ -n "$line" ] || { echo "run $i failed" >&2; exit 1; }
  t=$(echo "$line" | sed -E 's/.*: ([0-9.]+)(ms|s)$/\1 \2/' | awk '{ if ($2 == "ms") print $1/1000; else print $1 }')
  echo "run $i: ${t} s"
  times+=("$t")
done
printf '%s\n' "${times[@]}" | sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "median: %.2f s over %d runs\n", m, NR }'
