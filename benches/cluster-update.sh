#!/usr/bin/env bash
# Benchmark of the rolling cluster update (issue 13; docs/firmware.md,
# "Rolling cluster update"): three real nasvisord hosts, each in its own
# network namespace, each over file slots with [firmware] on, with counting
# TCG guests. Runs the suite's two rolling-update tests N times (default 3)
# and collects what they print:
# - `service` class: a service release to every host; the time from
#   `cluster update` to done, and the longest gap between two `COUNT`s of a
#   guest (the guest prints one every 100 ms; read from the console log
#   files QEMU keeps, every 10 ms);
# - `reboot` class (a daemon restart into the new slot stands for the
#   reboot): every host evacuated, rebooted, its guests moved back; the time
#   to done and the downtime of each live migration (what QEMU reports).
# Prints every sample and the medians. Usage (as root):
# benches/cluster-update.sh [runs]. Needs scripts/build.sh and the guest
# image (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
export NASVISOR_PLUGIN_DIR=${NASVISOR_PLUGIN_DIR:-$PWD/target/plugins}
export NASVISOR_BUILD_PUBKEY=${NASVISOR_BUILD_PUBKEY:-$PWD/target/keys/build.pub}
for i in $(seq 1 "$runs"); do
  cargo test --release -q -p nasvisord --test firmware -- a_rolling --nocapture --test-threads 1 \
    2>&1 | tee -a "$out" | grep -o 'ROLLOUT-FIGURES.*' || true
done
grep -q 'ROLLOUT-FIGURES' "$out" || { cat "$out"; exit 1; }
echo
echo "medians (min-max) over $runs runs:"
grep -o 'ROLLOUT-FIGURES.*' "$out" | python3 -c '
import sys, statistics, collections
d = collections.OrderedDict()
for line in sys.stdin:
    kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p and not p.startswith(("per_vm", "pauses")))
    pause = float(kv.get("longest_count_gap_ms", kv.get("longest_pause_ms")))
    d.setdefault(kv["class"], []).append((float(kv["total_s"]), pause))
for cls, xs in d.items():
    t = [a for a, _ in xs]
    p = [b for _, b in xs]
    what = "longest COUNT gap ms" if cls == "service" else "longest migration downtime ms"
    print("%-8s  3 hosts, to done: %.1f s (%.1f-%.1f)   %s: %.0f (%.0f-%.0f)" % (
        cls, statistics.median(t), min(t), max(t), what, statistics.median(p), min(p), max(p)))
'
