#!/usr/bin/env bash
# Boot test of the bundled guest image nasvisor-mini (real QEMU, TCG).
#
# 1. Builds the image if needed (scripts/build-guest-image.sh).
# 2. Makes a NoCloud seed: a 2 MiB VFAT image labelled "cidata" holding the
#    seed files in the exact format the default os-installer plugin writes
#    (tests/guest-image/fixtures/plugin-*), with a random host name.
# 3. Boots the disk image from a qcow2 overlay (the image stays pristine)
#    under TCG with the seed as a second virtio disk and two virtio NICs on
#    QEMU hubs that reach nothing (no user-mode networking), and checks the
#    serial report: host name, users, static address, route, ready marker.
# 4. Presses the ACPI power button (monitor "system_powerdown") and checks
#    that the guest powers off.
# 5. Boots the kernel and initramfs directly with nasvisor.counter=1 and a
#    seed written in other YAML styles (fixtures/yaml/) on an IDE disk, and
#    checks users, write_files, routes, runcmd forms and the COUNT lines.
# 6. Boots without a seed: NASVISOR-NO-SEED, and no NASVISOR-READY.
#
# QEMU is always stopped by its own pid; temporary files are removed on exit.
# Environment: BOOT_TIMEOUT (seconds per boot, default 60).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TIMEOUT=${BOOT_TIMEOUT:-60}
FIX=$ROOT/tests/guest-image/fixtures

scripts/build-guest-image.sh
IMG=$ROOT/target/guest/nasvisor-mini.qcow2
META=$ROOT/target/guest/guest-image.json
command -v qemu-system-x86_64 >/dev/null || { echo "boot-test: qemu-system-x86_64 missing (run scripts/setup.sh)" >&2; exit 1; }

NAME=guest-boot
# shellcheck source=tests/lib/qemu-scratch.sh
source "$ROOT/tests/lib/qemu-scratch.sh"

fail() {
  echo "boot-test: FAIL: $*" >&2
  if [ -f "$T/serial.log" ]; then
    echo "---- serial output ----" >&2
    tr -d '\r' <"$T/serial.log" | tail -n 60 >&2
    echo "-----------------------" >&2
  fi
  exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
has() { tr -d '\r' <"$T/serial.log" | grep -q -x -e "$1"; }
# wait_for REGEX: waits until a serial line matches (whole line); fails at
# the timeout or when QEMU exits.
wait_for() {
  local deadline=$(($(now_ms) + TIMEOUT * 1000))
  while ! has "$1"; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "no line matching '$1' within ${TIMEOUT}s"
    kill -0 "$QPID" 2>/dev/null || { has "$1" && break; fail "QEMU exited before '$1'"; }
    sleep 0.05
  done
}
# start_qemu ARGS...: QEMU in the background, serial and monitor multiplexed
# on stdio: input from the fifo on fd 5, output to $T/serial.log.
start_qemu() {
  : >"$T/serial.log"
  rm -f "$T/in"
  mkfifo "$T/in"
  exec 5<>"$T/in"
  qemu-system-x86_64 -accel tcg -m 256 -nodefaults -display none -serial mon:stdio \
    "$@" <"$T/in" >"$T/serial.log" 2>&1 &
  QPID=$!
  T0=$(now_ms)
}
monitor() { printf '\001c%s\n\001c' "$1" >&5; }

# ---- the seed -------------------------------------------------------------------
HOST=nvtest-$(printf '%04x%04x' $RANDOM $RANDOM)
mkdir -p "$T/seed"
sed "s/web01/$HOST/g" "$FIX/plugin-user-data" >"$T/seed/user-data"
sed "s/web01/$HOST/g" "$FIX/plugin-meta-data" >"$T/seed/meta-data"
cp "$FIX/plugin-network-config" "$T/seed/network-config"
mkfs.vfat -C -n cidata "$T/seed.img" 2048 >/dev/null 2>&1
MTOOLS_SKIP_CHECK=1 mcopy -i "$T/seed.img" "$T/seed/user-data" "$T/seed/meta-data" "$T/seed/network-config" ::/
qemu-img create -q -f qcow2 -b "$IMG" -F qcow2 "$T/disk.qcow2"
SHA_BEFORE=$(sha256sum "$IMG" | cut -d' ' -f1)

# ---- boot 1: disk image + seed --------------------------------------------------------
echo "boot-test: booting the disk image (BIOS, syslinux) with a NoCloud seed, host name $HOST"
start_qemu \
  -drive "file=$T/disk.qcow2,if=virtio,format=qcow2" \
  -drive "file=$T/seed.img,if=virtio,format=raw" \
  -netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
  -netdev hubport,id=n1,hubid=1 -device virtio-net-pci,netdev=n1,mac=52:54:00:AB:CD:EF
wait_for 'NASVISOR-READY'
T_READY=$(($(now_ms) - T0))
wait_for 'NASVISOR-BOOT-DONE.*'
for re in \
  'NASVISOR-SEED dev=/dev/vd[a-z] fs=vfat' \
  'NASVISOR-INSTANCE-ID=iid-nasvisor-0123456789abcdef' \
  "NASVISOR-HOSTNAME=$HOST" \
  "NASVISOR-FQDN=$HOST.example.com" \
  'NASVISOR-USER alice uid=1000 sudo=1 keys=1 password=1' \
  'NASVISOR-USER bob uid=1001 sudo=0 keys=1 password=0' \
  'NASVISOR-IF nic0 mac=52:54:00:12:34:56' \
  'NASVISOR-IP nic0 192.0.2.10/24' \
  'NASVISOR-IP nic0 2001:db8::10/64' \
  'NASVISOR-ROUTE 0.0.0.0/0 via 192.0.2.1 dev nic0' \
  'NASVISOR-IF nic1 mac=52:54:00:ab:cd:ef' \
  'NASVISOR-DHCP nic1' \
  'NASVISOR-DNS 192.0.2.53 2001:db8::53' \
  'NASVISOR-IGNORED package_update,packages,ssh_pwauth'; do
  has "$re" || fail "missing serial line '$re'"
done
! has 'NASVISOR-NO-SEED' || fail "seed not found"
! has 'NASVISOR-.*ERROR.*' || fail "error reported"
! has 'NASVISOR-WARN.*' || fail "warning reported"
echo "boot-test: boot 1 ok: NASVISOR-READY after ${T_READY} ms (QEMU start to marker, TCG)"

# The console shell works and the seed was applied inside the guest.
wait_for ".*@$HOST:/# .*"
printf 'echo "CHECK $(hostname) $(grep -c . /home/alice/.ssh/authorized_keys) $(cut -d: -f1 /etc/sudoers.d/90-cloud-init-users 2>/dev/null | cut -d" " -f1) $(ip -4 route show default | cut -d" " -f3)"\n' >&5
wait_for ".*CHECK $HOST 1 alice 192.0.2.1.*"
echo "boot-test: console shell ok"

# ACPI power button.
T1=$(now_ms)
monitor system_powerdown
deadline=$(($(now_ms) + 30000))
while kill -0 "$QPID" 2>/dev/null; do
  [ "$(now_ms)" -lt "$deadline" ] || fail "guest did not power off within 30 s of system_powerdown"
  sleep 0.05
done
wait "$QPID" 2>/dev/null || true
QPID=""
has 'NASVISOR-POWEROFF acpi' || fail "no NASVISOR-POWEROFF line after the power button"
echo "boot-test: ACPI power button ok: powered off in $(($(now_ms) - T1)) ms"
[ "$(sha256sum "$IMG" | cut -d' ' -f1)" = "$SHA_BEFORE" ] || fail "the image changed"
grep -q "\"sha256\": \"$SHA_BEFORE\"" "$META" || fail "guest-image.json sha256 does not match the image"

# ---- boot 2: direct kernel boot, other YAML styles, seed on IDE, counter ------------------
echo "boot-test: direct kernel boot, seed in other YAML styles on an IDE disk, nasvisor.counter=1"
cp "$FIX/yaml/cloud-config.yaml" "$T/seed/user-data"
cp "$FIX/yaml/json.yaml" "$T/seed/meta-data"
cp "$FIX/yaml/netplan.yaml" "$T/seed/network-config"
rm -f "$T/seed.img"
mkfs.vfat -C -n CIDATA "$T/seed.img" 2048 >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -i "$T/seed.img" "$T/seed/user-data" "$T/seed/meta-data" "$T/seed/network-config" ::/
start_qemu \
  -kernel "$ROOT/target/guest/vmlinuz" -initrd "$ROOT/target/guest/initrd.img" \
  -append "console=ttyS0,115200n8 quiet nasvisor.counter=1" \
  -drive "file=$T/seed.img,if=ide,format=raw" \
  -netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc
wait_for 'NASVISOR-BOOT-DONE.*'
T_DONE=$(($(now_ms) - T0))
for re in \
  'NASVISOR-SEED dev=/dev/sd[a-z] fs=vfat' \
  'NASVISOR-INSTANCE-ID=iid-json' \
  'NASVISOR-HOSTNAME=box1' \
  'NASVISOR-USER carol uid=1000 sudo=1 keys=1 password=1' \
  'NASVISOR-USER dave uid=1001 sudo=0 keys=0 password=0' \
  'NASVISOR-WRITE-FILE /etc/motd' \
  'NASVISOR-IF lan0 mac=52:54:00:aa:bb:cc' \
  'NASVISOR-IP lan0 10.0.0.5/24' \
  'NASVISOR-IP lan0 fd00::5/64' \
  'NASVISOR-ROUTE 0.0.0.0/0 via 10.0.0.254 dev lan0' \
  'NASVISOR-ROUTE 192.168.0.0/16 via 10.0.0.2 dev lan0' \
  'NASVISOR-NET-ERROR eth1 no such interface' \
  'NASVISOR-DNS 10.0.0.53' \
  'plain string, no colon' 'a b c' 'nested list' 'quoted' \
  'NASVISOR-READY'; do
  has "$re" || fail "missing serial line '$re'"
done
wait_for '.*COUNT 20'
has '.*COUNT 0' || fail "counter did not start at 0"
stop_qemu
echo "boot-test: boot 2 ok: NASVISOR-BOOT-DONE after ${T_DONE} ms, counter running"

# ---- boot 3: no seed ---------------------------------------------------------------------------
echo "boot-test: direct kernel boot without a seed"
start_qemu \
  -kernel "$ROOT/target/guest/vmlinuz" -initrd "$ROOT/target/guest/initrd.img" \
  -append "console=ttyS0,115200n8 quiet"
wait_for 'NASVISOR-BOOT-DONE.*'
T_DONE=$(($(now_ms) - T0))
has 'NASVISOR-NO-SEED' || fail "no NASVISOR-NO-SEED line"
! has 'NASVISOR-READY' || fail "NASVISOR-READY printed without a seed"
has 'NASVISOR-HOSTNAME=nasvisor-mini' || fail "default host name not reported"
stop_qemu
echo "boot-test: boot 3 ok: NASVISOR-NO-SEED, NASVISOR-BOOT-DONE after ${T_DONE} ms"
echo "boot-test: PASS"
