#!/usr/bin/env bash
# Benchmark of HA failover between three real nasvisord hosts (each in its
# own network namespace on a test switch, TCG guests of the bundled image),
# with the daemon's default cluster timings: each trial kills the HA VM's
# host (daemon and QEMU SIGKILLed, link cut) and measures, from the kill,
# when the VM's QEMU runs on another host and when its guest prints its
# ready marker there, and checks that the guest's acknowledged writer finds
# every record it acknowledged before the kill. Prints every sample, the
# medians and the ranges.
# Before the failovers, as many switchovers (host degrade: a live move to
# the passive host): the move's time and the pause QEMU reports.
# NASVISOR_BENCH_POOL=default puts the VM on its host's own pool: its disks
# then fail over through their synchronous replica on the passive host.
# Usage (as root): benches/failover.sh [runs]   (default 10). Needs
# scripts/build.sh and the guest image (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
NASVISOR_BENCH_RUNS=$runs cargo test --release -q --workspace --test ha_bench \
  -- --ignored --nocapture --test-threads 1 2>&1 | tee "$out" | grep -E '^(SAMPLE|SWITCHOVER)' || true
grep -q '^SAMPLE' "$out" || { cat "$out"; exit 1; }
echo
echo "medians (min-max) over $runs failovers, seconds from the kill:"
grep '^SAMPLE' "$out" | python3 -c '
import sys, statistics
q, r, bad = [], [], 0
for line in sys.stdin:
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    q.append(float(kv["qemu_s"])); r.append(float(kv["ready_s"]))
    bad += kv["records_ok"] != "true"
print("QEMU runs elsewhere: %.2f (%.2f-%.2f)" % (statistics.median(q), min(q), max(q)))
print("guest ready there:   %.2f (%.2f-%.2f)" % (statistics.median(r), min(r), max(r)))
print("failovers that lost acknowledged records: %d of %d" % (bad, len(q)))
'
echo
echo "switchovers (host degrade), medians (min-max):"
grep '^SWITCHOVER' "$out" | python3 -c '
import sys, statistics
t, d = [], []
for line in sys.stdin:
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    t.append(float(kv["total_s"])); d.append(float(kv["downtime_ms"]))
if t:
    print("move: %.2f s (%.2f-%.2f), pause: %.0f ms (%.0f-%.0f) over %d" % (statistics.median(t), min(t), max(t), statistics.median(d), min(d), max(d), len(t)))
'
