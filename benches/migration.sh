#!/usr/bin/env bash
# Benchmark of live migration between two real nasvisord hosts (each in its
# own network namespace on a test switch, TCG guests of the bundled image):
# an idle guest with 512 MiB and with 2 GiB of memory, moved back and forth
# with disk copy (a host pool: NBD mirror to the target, then the memory)
# and without (a pool both hosts reach). For each case: the total time of
# the move and the downtime QEMU reports, every sample, the median and the
# range.
# Usage (as root): benches/migration.sh [runs]   (default 5). Needs
# scripts/build.sh and the guest image (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
NASVISOR_BENCH_RUNS=$runs cargo test --release -q --workspace --test migration_bench \
  -- --ignored --nocapture --test-threads 1 2>&1 | tee "$out" | grep '^SAMPLE' || true
grep -q '^SAMPLE' "$out" || { cat "$out"; exit 1; }
echo
echo "medians (min-max) over $runs moves:"
grep '^SAMPLE' "$out" | python3 -c '
import sys, statistics, collections
d = collections.OrderedDict()
for line in sys.stdin:
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    d.setdefault((kv["memory"], kv["mode"]), []).append((float(kv["total_s"]), float(kv["downtime_ms"])))
print("%8s  %-18s %20s %20s" % ("memory", "mode", "total s", "downtime ms"))
for (mem, mode), xs in d.items():
    t = [t for t, _ in xs]
    dt = [dt for _, dt in xs]
    print("%8s  %-18s %20s %20s" % (mem, mode,
        "%.2f (%.2f-%.2f)" % (statistics.median(t), min(t), max(t)),
        "%.0f (%.0f-%.0f)" % (statistics.median(dt), min(dt), max(dt))))
'
