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
# the passive host): the move's time, the pause QEMU reports, the pause the
# source's daemon timed (QEMU's STOP to the target's answer that it runs)
# and the guest-visible gap: the longest interval between the guest's
# 10 ms console ticks, stamped as they reach QEMU's console logs. Before
# them, the same gap without nasvisord (the floor): the guest paused 20 ms
# in place, and moved from QEMU to a fresh QEMU on loopback.
# NASVISOR_BENCH_POOL=default puts the VM on its host's own pool: its disks
# then fail over through their synchronous replica on the passive host.
# Usage (as root): benches/failover.sh [runs]   (default 10). Needs
# scripts/build.sh and the guest image (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
out=$(mktemp)
trap 'rm -f "$out" "$out.floor"' EXIT
set +e
if [ "${NASVISOR_BENCH_SWITCHOVERS:-$runs}" != 0 ]; then
  # The floor of a move's guest-visible gap: QEMU to a fresh QEMU on
  # loopback, no nasvisord (host/vm/tests/migration.rs).
  NASVISOR_BENCH_SWITCHOVERS=${NASVISOR_BENCH_SWITCHOVERS:-$runs} cargo test --release -q \
    -p nasvisor-vm --test migration -- --ignored --nocapture bench_switch_gap_floor 2>&1 \
    | tee "$out.floor" | grep -E '^FLOOR'
  [ "${PIPESTATUS[0]}" = 0 ] || { tail -40 "$out.floor"; exit 1; }
fi
NASVISOR_BENCH_RUNS=$runs cargo test --release -q --workspace --test ha_bench \
  -- --ignored --nocapture --test-threads 1 2>&1 | tee "$out" | grep -E '^(SAMPLE|SWITCHOVER)'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
  # The figures printed so far stay above; the failure is shown whole.
  grep -v -E '^(SAMPLE|SWITCHOVER)' "$out" | tail -60
  echo "the benchmark failed (exit $rc)" >&2
  exit "$rc"
fi
echo
echo "medians (min-max) over $runs failovers, seconds from the kill:"
{ grep '^SAMPLE' "$out" || true; } | python3 -c '
import sys, statistics
q, r, bad = [], [], 0
for line in sys.stdin:
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    q.append(float(kv["qemu_s"])); r.append(float(kv["ready_s"]))
    bad += kv["records_ok"] != "true"
if not q:
    sys.exit(0)
print("QEMU runs elsewhere: %.2f (%.2f-%.2f)" % (statistics.median(q), min(q), max(q)))
print("guest ready there:   %.2f (%.2f-%.2f)" % (statistics.median(r), min(r), max(r)))
print("failovers that lost acknowledged records: %d of %d" % (bad, len(q)))
'
echo
echo "switchovers (host degrade), medians (min-max):"
{ grep '^SWITCHOVER' "$out" || true; } | python3 -c '
import sys, statistics
t, d, g, b, p = [], [], [], [], []
for line in sys.stdin:
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    t.append(float(kv["total_s"])); d.append(float(kv["downtime_ms"]))
    g.append(float(kv["guest_gap_ms"])); b.append(float(kv["baseline_gap_ms"]))
    if kv["daemon_pause_ms"] != "?":
        p.append(float(kv["daemon_pause_ms"]))
def m(x):
    return "%.0f ms (%.0f-%.0f)" % (statistics.median(x), min(x), max(x))
if t:
    print("move: %.2f s (%.2f-%.2f), pause: %s (QEMU), %s (STOP to the target resumed) over %d" % (statistics.median(t), min(t), max(t), m(d), m(p) if p else "?", len(t)))
    print("guest-visible: longest interval between its 10 ms ticks %s; before the move %s" % (m(g), m(b)))
'
{ grep -h '^FLOOR' "$out.floor" 2>/dev/null || true; } | python3 -c '
import sys, statistics
f = {"FLOOR-INPLACE": [], "FLOOR-MOVE": []}
after, down, pause = [], [], []
for line in sys.stdin:
    w = line.split()
    kv = dict(p.split("=", 1) for p in w[1:])
    f[w[0]].append(float(kv["guest_gap_ms"]))
    if "first_tick_after_resume_ms" in kv:
        after.append(float(kv["first_tick_after_resume_ms"]))
        down.append(float(kv["downtime_ms"])); pause.append(float(kv["pause_ms"]))
def m(x):
    return "%.0f ms (%.0f-%.0f)" % (statistics.median(x), min(x), max(x))
if after:
    print("floor, same guest and ticker, no nasvisord: paused 20 ms in place %s; moved QEMU to a fresh QEMU %s (pause %s QEMU, %s STOP to resumed), first tick %s after the resume" % (m(f["FLOOR-INPLACE"]), m(f["FLOOR-MOVE"]), m(down), m(pause), m(after)))
'
