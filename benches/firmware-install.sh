#!/usr/bin/env bash
# Benchmark: the install rate of a `reboot` bundle into a slot, against
# `dd` of the same image in the same run (issue 13; docs/firmware.md,
# "Installing"). A release nasvisord with [firmware] on over file slots
# (two 1 GiB sparse files, an ESP directory, a command line file) installs
# a signed bundle of the appliance's slot image with `nasvisor firmware
# install --wait`: the upload over loopback TLS, the verify pass, the write
# with its second verify, the read-back, the boot files (the slot mounted
# read-only) and the entry. The baseline writes the same image into the
# same slot file with `dd bs=1M conv=fsync`. N runs each (default 3),
# alternating; prints each run and the medians in MB/s (10^6 bytes).
#
# Needs: scripts/build.sh (target/release, target/keys) and
# scripts/build-firmware.sh --version 1.0.0 (target/firmware/rootfs-1.0.0.erofs).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
runs=${1:-3}
img=${NASVISOR_FW_IMAGE:-target/firmware/rootfs-1.0.0.erofs}
[ -f "$img" ] || { echo "no slot image $img (scripts/build-firmware.sh --version 1.0.0)" >&2; exit 1; }
cli=${NASVISOR_BIN_DIR:-target/release}/nasvisor
work=$(mktemp -d)
cleanup() {
  if [ -n "${daemon_pid:-}" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
firmware_layout "$work" "$img"
start_daemon "$work" "${NASVISOR_BENCH_PORT:-18471}" "$fw_toml"
bytes=$(stat -c %s "$img")
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo "$(( t1 - t0 ))" | awk '{ printf "%.3f", $1 / 1e9 }'; }
rate() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }
inst=() dd_=()
for i in $(seq 1 "$runs"); do
  sync
  t=$(secs "$cli" firmware install "$work/bundle.nvfw" --wait)
  inst+=("$(rate "$t")")
  sync
  t=$(secs dd if="$img" of="$work/slot-b.img" bs=1M conv=fsync,notrunc)
  dd_+=("$(rate "$t")")
  echo "run $i: install ${inst[-1]} MB/s, dd ${dd_[-1]} MB/s"
done
"$cli" --json firmware status | python3 -c 'import json,sys; s=json.load(sys.stdin); assert s["slots"][1]["state"]=="pending", s' \
  || { echo "the last install did not leave slot b pending" >&2; exit 1; }
mi=$(printf '%s\n' "${inst[@]}" | median)
md=$(printf '%s\n' "${dd_[@]}" | median)
echo "image $bytes bytes; median over $runs runs: install $mi MB/s, dd $md MB/s, ratio $(awk -v a="$mi" -v b="$md" 'BEGIN { printf "%.2f", a / b }')"
