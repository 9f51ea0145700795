# shellcheck shell=bash
# Shared by the appliance tests (boot-test.sh, install-test.sh): the image,
# QEMU (q35, OVMF, TCG) with its serial console in a file and its monitor on
# a fifo, the console checks, the ACPI power-off, and the ESP read back with
# mtools. Sourced after `set -euo pipefail` and `cd` to the repository root,
# with NAME set (the prefix of messages, e.g. appliance-test).
#
# Provides: ROOT, T (a temporary directory removed on exit, QEMU stopped by
# its own pid first), fail, now_ms, build_image, has, wait_for, mark_log,
# report, boot (QEMU started, /healthz waited for), start_qemu, wait_healthz,
# power_off, stop_qemu, monitor, esp, entries.
# Environment: BOOT_TIMEOUT (seconds to /healthz, default 300).
# With UEFI_KEYS set (before sourcing) to a directory of scripts/uefi-keys.sh,
# QEMU boots the Secure Boot build of OVMF (SMM, secure flash) with those
# PK, KEK and db enrolled and Secure Boot on, and build_image signs the boot
# chain with them (into target/firmware-secboot).

ROOT=$PWD
TIMEOUT=${BOOT_TIMEOUT:-300}
UEFI_KEYS=${UEFI_KEYS:-}
if [ -n "$UEFI_KEYS" ]; then
  OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
  MACHINE=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on)
  FW_OUT=$ROOT/target/firmware-secboot
  command -v virt-fw-vars >/dev/null || { echo "$NAME: virt-fw-vars missing (run scripts/setup.sh)" >&2; exit 1; }
else
  OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
  MACHINE=(-machine q35)
  FW_OUT=$ROOT/target/firmware
fi
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
for tool in qemu-system-x86_64 curl mdir mtype mcopy python3; do
  command -v "$tool" >/dev/null || { echo "$NAME: $tool missing (run scripts/setup.sh)" >&2; exit 1; }
done
for f in "$OVMF_CODE" "$OVMF_VARS"; do [ -f "$f" ] || { echo "$NAME: $f missing (apt-get install ovmf)" >&2; exit 1; }; done

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# shellcheck source=tests/lib/qemu-scratch.sh
source "$ROOT/tests/lib/qemu-scratch.sh"

fail() {
  echo "$NAME: FAIL: $*" >&2
  if [ -f "$T/serial.log" ]; then
    echo "---- serial output (last 80 lines) ----" >&2
    tr -d '\r' <"$T/serial.log" | tail -n 80 >&2
    echo "---------------------------------------" >&2
    cp "$T/serial.log" "$ROOT/target/$NAME-serial.log"
    echo "$NAME: the whole console: target/$NAME-serial.log" >&2
  fi
  exit 1
}

# build_image VERSION [build-firmware.sh options]: the disk image in
# target/firmware, or NASVISOR_APPLIANCE_IMAGE when it names one; sets IMG.
build_image() {
  local version=$1 t0
  shift
  if [ -n "${NASVISOR_APPLIANCE_IMAGE:-}" ]; then
    IMG=$NASVISOR_APPLIANCE_IMAGE
    echo "$NAME: using $IMG"
  else
    t0=$(now_ms)
    scripts/build-firmware.sh --version "$version" --out "$FW_OUT" ${UEFI_KEYS:+--uefi-keys "$UEFI_KEYS"} "$@"
    IMG=$FW_OUT/nasvisor-appliance.img
    echo "$NAME: image built in $(( ($(now_ms) - t0) / 1000 )) s"
  fi
  [ -f "$IMG" ] || fail "no image $IMG"
}

# The console since the last mark_log (the whole of it before the first).
LOG_FROM=0
mark_log() { LOG_FROM=$(( $(stat -c %s "$T/serial.log" 2>/dev/null || echo 0) + 1 )); }
console() { tail -c +"$LOG_FROM" "$T/serial.log" | tr -d '\r'; }
# (grep reads the whole log, without -q or -m: an early exit would kill tr
# with SIGPIPE, which pipefail turns into a failure)
has() { console | grep -a -x -e "$1" >/dev/null; }
# wait_for REGEX SECONDS: until a console line matches (whole line).
wait_for() {
  local deadline=$(($(now_ms) + $2 * 1000))
  while ! has "$1"; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "no console line matching '$1' within $2 s"
    kill -0 "$QPID" 2>/dev/null || { has "$1" && break; fail "QEMU exited before '$1'"; }
    sleep 0.2
  done
}
# report PREFIX: the first console line (since the mark) with PREFIX, from it on.
report() { console | grep -a -o "$1.*" | sed -n 1p; }
monitor() { printf '\001c%s\n\001c' "$1" >&5; }

# The disk copy the guest writes to, and its ESP (at 1 MiB: docs/appliance.md).
ESP_OFFSET=$((1024 * 1024))
export MTOOLS_SKIP_CHECK=1
esp() { echo "$T/disk.img@@$ESP_OFFSET"; }
entries() { mdir -b -i "$(esp)" ::/loader/entries | sed 's|.*/||' | sort; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ -n "$UEFI_KEYS" ]; then
  # OVMF's variables with the keys enrolled (no Microsoft keys) and Secure
  # Boot on, as a vendor's board leaves the factory.
  owner=$(cat "$UEFI_KEYS/owner")
  virt-fw-vars --input "$OVMF_VARS" --output "$T/vars.fd" --set-pk "$owner" "$UEFI_KEYS/PK.crt" \
    --add-kek "$owner" "$UEFI_KEYS/KEK.crt" --add-db "$owner" "$UEFI_KEYS/db.crt" --no-microsoft \
    --secure-boot >"$T/virt-fw-vars.log" 2>&1 || { cat "$T/virt-fw-vars.log" >&2; fail "cannot enroll the keys in OVMF's variables"; }
else
  cp "$OVMF_VARS" "$T/vars.fd"
fi
mkfifo "$T/in"
exec 5<>"$T/in"
# start_qemu: QEMU in the background on $T/disk.img (serial console and
# monitor on stdio: input from the fifo on fd 5, output to $T/serial.log;
# 127.0.0.1:$PORT forwarded to the guest's 8443; the q35 board's own
# watchdog, the ICH9 TCO timer (iTCO_wdt, as on an Intel NAS board), resets
# the machine when it runs out). T0 is its start.
start_qemu() {
  : >"$T/serial.log"
  LOG_FROM=0
  qemu-system-x86_64 "${MACHINE[@]}" -accel tcg -m 2048 -smp 2 -nodefaults -nographic \
    -serial mon:stdio \
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE" \
    -drive "if=pflash,format=raw,unit=1,file=$T/vars.fd" \
    -drive "file=$T/disk.img,if=none,id=disk0,format=raw" -device virtio-blk-pci,drive=disk0 \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:8443" -device virtio-net-pci,netdev=n0 \
    -action watchdog=reset \
    <"$T/in" >"$T/serial.log" 2>&1 &
  QPID=$!
  T0=$(now_ms)
}
# wait_healthz: until /healthz answers through the forwarded port (from
# T0); T_HEALTHZ is how long that took.
wait_healthz() {
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
  echo "$NAME: /healthz answered $answer after $((T_HEALTHZ / 1000)) s (TCG)"
}
boot() {
  start_qemu
  wait_healthz
}
# power_off: the ACPI power button, then QEMU's own pid if the guest does not stop.
power_off() {
  local t1
  t1=$(now_ms)
  monitor system_powerdown
  local deadline=$(($(now_ms) + 90000))
  while kill -0 "$QPID" 2>/dev/null; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "$NAME: no power-off within 90 s, stopping QEMU" >&2; break; }
    sleep 0.2
  done
  stop_qemu
  has '.*reboot: Power down.*' || fail "the guest did not power off cleanly (no 'reboot: Power down')"
  echo "$NAME: powered off in $(( ($(now_ms) - t1) / 1000 )) s"
}
