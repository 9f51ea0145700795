#!/usr/bin/env bash
# Boot test of the appliance image (docs/appliance.md): real QEMU, OVMF, TCG.
#
# 1. Builds the image (scripts/build-firmware.sh; the Debian root comes from
#    its cache after the first build), unless NASVISOR_APPLIANCE_IMAGE names
#    a disk image already built.
# 2. Checks the factory ESP: systemd-boot, slot A's kernel and initramfs, and
#    slot A's entry pending with 3 tries (nasvisor-1-a+3.conf).
# 3. Boots a copy of the disk (q35, OVMF with a writable copy of its
#    variables, virtio disk, user network with 127.0.0.1:PORT -> guest 8443)
#    and waits for nasvisord's /healthz through the forwarded port.
# 4. Checks the console: the health unit reports slot a and the version,
#    and the boot report (after systemd-bless-boot) shows the entry blessed.
# 5. Powers the guest off (ACPI power button; QEMU is stopped by its own
#    pid if it does not), then reads the ESP back out of the disk copy with
#    mtools: the entry has lost its counter (nasvisor-1-a.conf).
# 6. Fallback: adds what an install into slot b leaves on the ESP (b's
#    kernel and initramfs, a newer entry nasvisor-2-b+1.conf with one try)
#    while slot b's partition stays empty. Boots again: systemd-boot tries
#    b first, its initramfs cannot mount the root and reboots (panic=10),
#    the entry is then nasvisor-2-b+0-1.conf (bad, sorted last) and slot
#    a's good entry boots by itself; /healthz answers again.
# 7. Health failure: a newest pending entry nasvisor-3-a+1.conf whose
#    health check gives up after 1 s (nasvisor.healthy-timeout=1): the unit
#    fails, FailureAction=reboot, the entry is +0-1, the good entry boots.
#
# Temporary files are removed on exit; nothing is killed by name.
# Environment: BOOT_TIMEOUT (seconds to /healthz, default 300),
# APPLIANCE_VERSION (default 1.0.0), NASVISOR_FW_* (scripts/build-firmware.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TIMEOUT=${BOOT_TIMEOUT:-300}
VERSION=${APPLIANCE_VERSION:-1.0.0}
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
for tool in qemu-system-x86_64 curl mdir mtype python3; do
  command -v "$tool" >/dev/null || { echo "appliance-test: $tool missing (run scripts/setup.sh)" >&2; exit 1; }
done
for f in "$OVMF_CODE" "$OVMF_VARS"; do [ -f "$f" ] || { echo "appliance-test: $f missing (apt-get install ovmf)" >&2; exit 1; }; done

now_ms() { echo $(($(date +%s%N) / 1000000)); }
T_TEST=$(now_ms)

# ---- 1. the image ------------------------------------------------------------------
if [ -n "${NASVISOR_APPLIANCE_IMAGE:-}" ]; then
  IMG=$NASVISOR_APPLIANCE_IMAGE
  echo "appliance-test: using $IMG"
else
  t0=$(now_ms)
  scripts/build-firmware.sh --version "$VERSION" --out "$ROOT/target/firmware"
  IMG=$ROOT/target/firmware/nasvisor-appliance.img
  echo "appliance-test: image built in $(( ($(now_ms) - t0) / 1000 )) s"
fi
[ -f "$IMG" ] || { echo "appliance-test: no image $IMG" >&2; exit 1; }

mkdir -p "$ROOT/target/tmp"
T=$(mktemp -d "$ROOT/target/tmp/appliance-boot.XXXXXX")
QPID=""
stop_qemu() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$QPID" 2>/dev/null || true
  fi
  if [ -n "$QPID" ]; then wait "$QPID" 2>/dev/null || true; fi
  QPID=""
}
cleanup() {
  stop_qemu
  exec 5>&- 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "appliance-test: FAIL: $*" >&2
  if [ -f "$T/serial.log" ]; then
    echo "---- serial output (last 80 lines) ----" >&2
    tr -d '\r' <"$T/serial.log" | tail -n 80 >&2
    echo "---------------------------------------" >&2
    cp "$T/serial.log" "$ROOT/target/appliance-boot-serial.log"
    echo "appliance-test: the whole console: target/appliance-boot-serial.log" >&2
  fi
  exit 1
}
# (grep reads the whole log, without -q or -m: an early exit would kill tr
# with SIGPIPE, which pipefail turns into a failure)
has() { tr -d '\r' <"$T/serial.log" | grep -a -x -e "$1" >/dev/null; }
# wait_for REGEX SECONDS: until a console line matches (whole line).
wait_for() {
  local deadline=$(($(now_ms) + $2 * 1000))
  while ! has "$1"; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "no console line matching '$1' within $2 s"
    kill -0 "$QPID" 2>/dev/null || { has "$1" && break; fail "QEMU exited before '$1'"; }
    sleep 0.2
  done
}
monitor() { printf '\001c%s\n\001c' "$1" >&5; }

# ---- 2. the factory ESP ------------------------------------------------------------
ESP_OFFSET=$((1024 * 1024))   # the ESP starts at 1 MiB (docs/appliance.md)
export MTOOLS_SKIP_CHECK=1
cp --sparse=always "$IMG" "$T/disk.img"
esp() { echo "$T/disk.img@@$ESP_OFFSET"; }
entries() { mdir -b -i "$(esp)" ::/loader/entries | sed 's|.*/||' | sort; }
for f in /EFI/BOOT/BOOTX64.EFI /EFI/systemd/systemd-bootx64.efi /loader/loader.conf \
  /nasvisor/a/vmlinuz /nasvisor/a/initrd.img; do
  mdir -i "$(esp)" "::$f" >/dev/null 2>&1 || fail "the ESP has no $f"
done
[ "$(entries)" = "nasvisor-1-a+3.conf" ] || fail "factory entries: $(entries | tr '\n' ' '), expected nasvisor-1-a+3.conf"
mtype -i "$(esp)" "::/loader/entries/nasvisor-1-a+3.conf" >"$T/entry-before"
grep -qx "version *$VERSION" "$T/entry-before" || fail "the entry's version is not $VERSION"
echo "appliance-test: factory ESP ok: nasvisor-1-a+3.conf, version $VERSION"

# ---- 3. boot ------------------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cp "$OVMF_VARS" "$T/vars.fd"
mkfifo "$T/in"
exec 5<>"$T/in"
# boot: QEMU in the background (serial console and monitor on stdio: input
# from the fifo on fd 5, output to $T/serial.log), then waits for /healthz.
boot() {
  : >"$T/serial.log"
  qemu-system-x86_64 -machine q35 -accel tcg -m 2048 -smp 2 -nodefaults -nographic \
    -serial mon:stdio \
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE" \
    -drive "if=pflash,format=raw,unit=1,file=$T/vars.fd" \
    -drive "file=$T/disk.img,if=none,id=disk0,format=raw" -device virtio-blk-pci,drive=disk0 \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:8443" -device virtio-net-pci,netdev=n0 \
    <"$T/in" >"$T/serial.log" 2>&1 &
  QPID=$!
  T0=$(now_ms)
  local answer="" deadline=$((T0 + TIMEOUT * 1000))
  while :; do
    answer=$(curl -ksS --max-time 3 "https://127.0.0.1:$PORT/healthz" 2>/dev/null || true)
    case "$answer" in *'"status"'*) break ;; esac
    [ "$(now_ms)" -lt "$deadline" ] || fail "no answer from /healthz within $TIMEOUT s"
    kill -0 "$QPID" 2>/dev/null || fail "QEMU exited before /healthz answered"
    sleep 1
  done
  T_HEALTHZ=$(($(now_ms) - T0))
  [ "$answer" = '{"status":"ok"}' ] || fail "/healthz answered $answer"
  echo "appliance-test: /healthz answered $answer after $((T_HEALTHZ / 1000)) s (QEMU start to answer, TCG)"
}
# power_off: the ACPI power button, then QEMU's own pid if the guest does not stop.
power_off() {
  local t1
  t1=$(now_ms)
  monitor system_powerdown
  local deadline=$(($(now_ms) + 90000))
  while kill -0 "$QPID" 2>/dev/null; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "appliance-test: no power-off within 90 s, stopping QEMU" >&2; break; }
    sleep 0.2
  done
  stop_qemu
  has '.*reboot: Power down.*' || fail "the guest did not power off cleanly (no 'reboot: Power down')"
  echo "appliance-test: powered off in $(( ($(now_ms) - t1) / 1000 )) s"
}
report() { tr -d '\r' <"$T/serial.log" | grep -a -o "$1.*" | sed -n 1p; }

echo "appliance-test: boot 1: the factory image (TCG, 2 vCPUs, 2 GiB), /healthz forwarded to 127.0.0.1:$PORT"
boot
T_HEALTHZ_1=$T_HEALTHZ

# ---- 4. the console -------------------------------------------------------------------------
# (a console line may begin with a getty's prompt: the markers are matched anywhere)
wait_for ".*NASVISOR-HEALTHY slot=a version=$VERSION .*" 120
echo "appliance-test: health unit: $(report NASVISOR-HEALTHY)"
has '.*Linux version .*' || fail "no kernel banner on the console"
has '.*Command line: .*root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a.*' || fail "not booted from slot a"
# nasvisor-boot-report.service runs after systemd-bless-boot: the guest's
# own view of the ESP once the entry was blessed.
wait_for ".*NASVISOR-BOOT slot=a version=$VERSION healthy=active bless=active entries=nasvisor-1-a.conf" 120
echo "appliance-test: $(report 'NASVISOR-BOOT ') after $(( ($(now_ms) - T0) / 1000 )) s"

# ---- 5. power off, read the ESP back ---------------------------------------------------------
power_off
[ "$(entries)" = "nasvisor-1-a.conf" ] || fail "entries after a good boot: $(entries | tr '\n' ' '), expected nasvisor-1-a.conf"
mtype -i "$(esp)" "::/loader/entries/nasvisor-1-a.conf" | cmp -s - "$T/entry-before" \
  || fail "the blessed entry's content changed"
echo "appliance-test: boot 1 ok: the entry was blessed: nasvisor-1-a+3.conf -> nasvisor-1-a.conf"

# ---- 6. fallback: a newer entry for slot b that cannot boot -----------------------------------
# What an install into slot b leaves (docs/appliance.md): b's kernel and
# initramfs on the ESP and a newer generation's entry with its tries, here
# one. Slot b's partition is still empty, so its initramfs cannot mount the
# root and reboots (panic=10). systemd-boot must then count the entry down
# to +0-1, sort it last and boot slot a's good entry, with no help.
mcopy -n -i "$(esp)" ::/nasvisor/a/vmlinuz ::/nasvisor/a/initrd.img "$T/"
mcopy -i "$(esp)" "$T/vmlinuz" "$T/initrd.img" ::/nasvisor/b/
sed -e 's/(slot a)/(slot b)/' -e 's|/nasvisor/a/|/nasvisor/b/|g' \
  -e 's/nasvisor-a /nasvisor-b /' -e 's/nasvisor\.slot=a/nasvisor.slot=b/' \
  "$T/entry-before" >"$T/nasvisor-2-b+1.conf"
mcopy -i "$(esp)" "$T/nasvisor-2-b+1.conf" "::/loader/entries/nasvisor-2-b+1.conf"
echo "appliance-test: boot 2: slot b's entry nasvisor-2-b+1.conf (newest, 1 try) over an empty slot b"
boot
T_HEALTHZ_2=$T_HEALTHZ
has '.*Command line: .*root=PARTLABEL=nasvisor-b .*nasvisor.slot=b.*' || fail "slot b's entry was not tried first"
has '.*Command line: .*root=PARTLABEL=nasvisor-a .*nasvisor.slot=a.*' || fail "slot a did not boot after slot b failed"
wait_for ".*NASVISOR-BOOT slot=a version=$VERSION healthy=inactive bless=inactive entries=nasvisor-1-a.conf,nasvisor-2-b+0-1.conf" 120
echo "appliance-test: $(report 'NASVISOR-BOOT ')"
power_off
[ "$(entries | tr '\n' ' ')" = "nasvisor-1-a.conf nasvisor-2-b+0-1.conf " ] \
  || fail "entries after the fallback: $(entries | tr '\n' ' '), expected nasvisor-1-a.conf nasvisor-2-b+0-1.conf"
echo "appliance-test: boot 2 ok: slot b tried once (nasvisor-2-b+0-1.conf, bad), slot a booted by itself"

# ---- 7. a pending entry whose health check fails --------------------------------------------
# The newest entry, nasvisor-3-a+1.conf (slot a again, one try), boots a
# working slot, but its health check gives up after 1 s
# (nasvisor.healthy-timeout=1), before nasvisord answers: the unit fails,
# FailureAction=reboot reboots, the entry is +0-1 and sorted last, and the
# good nasvisor-1-a.conf boots. Nothing but the loader's counter and the
# unit decided.
sed 's|^options .*|& nasvisor.healthy-timeout=1|' "$T/entry-before" >"$T/nasvisor-3-a+1.conf"
mcopy -i "$(esp)" "$T/nasvisor-3-a+1.conf" "::/loader/entries/nasvisor-3-a+1.conf"
echo "appliance-test: boot 3: a pending entry nasvisor-3-a+1.conf whose health check gives up after 1 s"
boot
T_HEALTHZ_3=$T_HEALTHZ
has '.*NASVISOR-UNHEALTHY.* slot=a .*entry=nasvisor-3-a+1.conf.*' || fail "the health check of nasvisor-3-a+1.conf did not fail"
echo "appliance-test: $(report NASVISOR-UNHEALTHY)"
wait_for ".*NASVISOR-BOOT slot=a version=$VERSION healthy=inactive bless=inactive entries=nasvisor-1-a.conf,nasvisor-2-b+0-1.conf,nasvisor-3-a+0-1.conf" 120
echo "appliance-test: $(report 'NASVISOR-BOOT ')"
power_off
[ "$(entries | tr '\n' ' ')" = "nasvisor-1-a.conf nasvisor-2-b+0-1.conf nasvisor-3-a+0-1.conf " ] \
  || fail "entries after the failed health check: $(entries | tr '\n' ' ')"
echo "appliance-test: boot 3 ok: the unhealthy boot rebooted by itself (nasvisor-3-a+0-1.conf, bad), the good entry booted"
echo "appliance-test: PASS (image $(du -m "$IMG" | cut -f1) MiB allocated; /healthz after $((T_HEALTHZ_1 / 1000)) s (boot 1), $((T_HEALTHZ_2 / 1000)) s (boot 2, with the failed try), $((T_HEALTHZ_3 / 1000)) s (boot 3, with the unhealthy try); test $(( ($(now_ms) - T_TEST) / 1000 )) s)"
