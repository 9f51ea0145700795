#!/usr/bin/env bash
# Benchmark of the daemon path, through the real nasvisord (release, TCG) and
# the real CLI over HTTPS:
#   1. API call -> running QEMU: `nasvisor vm start` of a defined VM returns
#      once QEMU runs the vCPUs; each run then force-offs the VM.
#      Baseline in the same run: `nasvisor host` (CLI start + TLS + one API
#      round trip), the fixed cost inside every CLI call.
#   2. create + install + first boot of the bundled image until its ready
#      marker: `nasvisor vm create --image nasvisor-mini`, then the install
#      job's own timestamps (created -> succeeded, so no polling error) and
#      the client's wall time until `job wait` returns.
#      Baseline in the same run: a plain boot of the installed VM until the
#      guest prints NASVISOR-BOOT-DONE (no planning, no disk, no seed).
# Usage: benches/daemon-vm.sh [runs]   (default 9). Needs scripts/build.sh and
# the guest image (scripts/setup.sh). Prints every sample and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-9}
root=$PWD
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  # QEMUs outlive the daemon by design: stop them by their own pids.
  for f in "$work"/data/run/*.pid; do
    [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/lib.sh
. benches/lib.sh
start_daemon "$work" "$port" "[[images.bundled]]
name = \"nasvisor-mini\"
path = \"$root/target/guest/nasvisor-mini.qcow2\"
metadata = \"$root/target/guest/guest-image.json\""
nv() { target/release/nasvisor "$@"; }
now() { date +%s%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
rfc_ns() { date -d "$1" +%s%N; }

nv vm create bm --vcpus 1 --memory 128 --disk default:64 > /dev/null
base=() start=()
for i in $(seq 1 "$runs"); do
  t0=$(now); nv host > /dev/null; t1=$(now); base+=("$(ms "$t0" "$t1")")
  t0=$(now); nv vm start bm > /dev/null; t1=$(now); start+=("$(ms "$t0" "$t1")")
  nv --json vm show bm | grep -q '"state": "running"' || { echo "run $i: VM not running" >&2; exit 1; }
  nv vm force-off bm > /dev/null
  echo "run $i: host ${base[-1]} ms, vm start -> running QEMU ${start[-1]} ms"
done
mb=$(printf '%s\n' "${base[@]}" | median); ms_=$(printf '%s\n' "${start[@]}" | median)
echo "median: CLI+API round trip $mb ms; API call -> running QEMU $ms_ ms ($(awk -v a="$ms_" -v b="$mb" 'BEGIN{printf "%.1f", a/b}')x the round trip)"

job=() wall=() boot=()
for i in $(seq 1 "$runs"); do
  t0=$(now)
  id=$(nv --json vm create "in$i" --vcpus 1 --memory 256 --image nasvisor-mini | sed -n 's/.*"install_job": "\([^"]*\)".*/\1/p')
  nv job wait "$id" > /dev/null 2>&1 || { echo "install $i failed: $(nv --json job show "$id")" >&2; exit 1; }
  t1=$(now); wall+=("$(ms "$t0" "$t1")")
  j=$(nv --json job show "$id")
  c=$(echo "$j" | sed -n 's/.*"created_at": "\([^"]*\)".*/\1/p'); f=$(echo "$j" | sed -n 's/.*"finished_at": "\([^"]*\)".*/\1/p')
  job+=("$(ms "$(rfc_ns "$c")" "$(rfc_ns "$f")")")
  # Baseline: a plain second boot of the same VM until BOOT-DONE.
  nv vm force-off "in$i" > /dev/null
  before=$(nv vm console "in$i" --tail 1048576 | grep -c "NASVISOR-BOOT-DONE" || true)
  t0=$(now); nv vm start "in$i" > /dev/null
  for _ in $(seq 1 1200); do
    n=$(nv vm console "in$i" --tail 1048576 | grep -c "NASVISOR-BOOT-DONE" || true)
    [ "$n" -gt "$before" ] && break; sleep 0.05
  done
  t1=$(now); boot+=("$(ms "$t0" "$t1")")
  nv vm force-off "in$i" > /dev/null; nv vm delete "in$i" --delete-disks > /dev/null
  echo "run $i: install job ${job[-1]} ms (client ${wall[-1]} ms), plain boot ${boot[-1]} ms"
done
mj=$(printf '%s\n' "${job[@]}" | median); mw=$(printf '%s\n' "${wall[@]}" | median); mbt=$(printf '%s\n' "${boot[@]}" | median)
echo "median: create+install+first boot $mj ms (job timestamps), $mw ms (client, job polled every 250 ms); plain boot $mbt ms; install/boot $(awk -v a="$mj" -v b="$mbt" 'BEGIN{printf "%.2f", a/b}')x"
