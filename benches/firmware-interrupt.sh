#!/usr/bin/env bash
# Benchmark (robustness): a firmware install killed at random points
# (issue 13, "Interruption"). A release nasvisord with [firmware] on over
# file slots (benches/lib.sh firmware_layout) installs a signed `reboot`
# bundle of the appliance's slot image; at a random moment of the install
# (uniform over 0..T, T the length of an uninterrupted install measured
# first) the daemon is killed with SIGKILL. Then, for each point:
#   - what the boot loader would boot is good: slot a's entry and its
#     kernel files are byte for byte as before, and an entry for slot b
#     exists only with its kernel and initrd on the ESP and the slot's
#     first payload bytes having the signed SHA-256 (else it is unbootable);
#   - the restarted daemon cleans up (no upload left, no slot left mounted)
#     and `firmware status` answers, booted from a.
# After the last point, an install left alone must succeed (b pending).
# Prints each point's outcome (none: b has no entry; complete: b has a good
# entry) and the count of unbootable ones (target 0). N points (default 200).
# Needs target/firmware/rootfs-1.0.0.erofs (scripts/build-firmware.sh) and
# runs as root (the install mounts the written slot read-only).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
points=${1:-200}
img=${NASVISOR_FW_IMAGE:-target/firmware/rootfs-1.0.0.erofs}
[ -f "$img" ] || { echo "no slot image $img (scripts/build-firmware.sh --version 1.0.0)" >&2; exit 1; }
bin=${NASVISOR_BIN_DIR:-target/release}
cli=$bin/nasvisor
port=${NASVISOR_BENCH_PORT:-18472}
work=$(mktemp -d)
cleanup() {
  if [ -n "${daemon_pid:-}" ]; then kill -9 "$daemon_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Stopped by a signal (scripts/test-boots.sh), the clean-up still runs.
trap 'exit 143' TERM INT
firmware_layout "$work" "$img"
start_daemon "$work" "$port" "$fw_toml"
size=$(stat -c %s "$img")
want=$(sha256sum "$img" | cut -d' ' -f1)
a_before=$(cat "$work/esp/loader/entries/nasvisor-1-a.conf" "$work/esp/nasvisor/a/vmlinuz" "$work/esp/nasvisor/a/initrd.img" | sha256sum)

# Restart the daemon on its data and wait for its endpoint's banner.
restart() {
  local n
  n=$(grep -c "admin endpoint" "$work/out" || true)
  "$bin/nasvisord" --config "$work/cfg.toml" --log warn >> "$work/out" 2>> "$work/err" &
  daemon_pid=$!
  for _ in $(seq 1 300); do
    [ "$(grep -c "admin endpoint" "$work/out" || true)" -gt "$n" ] && return 0
    sleep 0.05
  done
  echo "nasvisord did not come back" >&2; tail -5 "$work/err" >&2; return 1
}

# One uninterrupted install gives T.
t0=$(date +%s%N)
"$cli" firmware install "$work/bundle.nvfw" --wait >/dev/null 2>&1
T=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "an uninterrupted install: $T ms; killing at random points in 0..$T ms"

unbootable=0 none=0 complete=0
for i in $(seq 1 "$points"); do
  at=$(( RANDOM * 32768 + RANDOM ))
  at=$(( at % (T + 1) ))
  "$cli" firmware install "$work/bundle.nvfw" --wait >/dev/null 2>&1 &
  cli_pid=$!
  sleep "$(awk -v m="$at" 'BEGIN { printf "%.3f", m / 1000 }')"
  kill -9 "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  wait "$cli_pid" 2>/dev/null || true
  # What the boot loader sees now.
  bad=""
  a_now=$(cat "$work/esp/loader/entries/nasvisor-1-a.conf" "$work/esp/nasvisor/a/vmlinuz" "$work/esp/nasvisor/a/initrd.img" | sha256sum)
  [ "$a_now" = "$a_before" ] || bad="slot a's entry or kernel files changed"
  b_entries=$(find "$work/esp/loader/entries" -name 'nasvisor-*-b*.conf' | wc -l)
  if [ "$b_entries" -gt 0 ]; then
    [ -s "$work/esp/nasvisor/b/vmlinuz" ] && [ -s "$work/esp/nasvisor/b/initrd.img" ] \
      || bad="${bad:+$bad; }an entry for b without its kernel files"
    got=$(head -c "$size" "$work/slot-b.img" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || bad="${bad:+$bad; }an entry for b over a slot that is not the payload"
    outcome=complete
  else
    outcome=none
  fi
  restart
  "$cli" --json firmware status > "$work/status.json" 2>/dev/null \
    && python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["booted"] == "a"' "$work/status.json" \
    || bad="${bad:+$bad; }firmware status failed after the restart"
  [ -z "$(ls -A "$work/data/firmware/uploads" 2>/dev/null)" ] || bad="${bad:+$bad; }an upload left after the restart"
  if findmnt -rn -o TARGET | grep -q "^$work/"; then bad="${bad:+$bad; }a slot left mounted"; fi
  if [ -n "$bad" ]; then
    unbootable=$((unbootable + 1))
    echo "point $i (kill at $at ms): BAD: $bad"
  else
    [ "$outcome" = none ] && none=$((none + 1)) || complete=$((complete + 1))
    echo "point $i (kill at $at ms): $outcome"
  fi
done
echo "points $points: b without an entry $none, b complete $complete, unbootable or unclean $unbootable"
# After all those kills, an install left alone succeeds: nothing a killed
# one left behind stands in its way.
if "$cli" firmware install "$work/bundle.nvfw" --wait >"$work/last.out" 2>&1 \
    && "$cli" --json firmware status >"$work/status.json" 2>/dev/null \
    && python3 -c 'import json,sys; s = json.load(open(sys.argv[1])); assert s["pending"]["slot"] == "b"' "$work/status.json"; then
  echo "an install after the last kill: b pending"
else
  echo "an install after the last kill failed:" >&2
  cat "$work/last.out" "$work/status.json" >&2 2>/dev/null || true
  unbootable=$((unbootable + 1))
fi
[ "$unbootable" -eq 0 ]
