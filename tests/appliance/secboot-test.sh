#!/usr/bin/env bash
# Secure Boot test of the appliance image (docs/firmware.md, "Secure
# Boot"; in progress, not yet in the suite): the image built with
# `scripts/build-firmware.sh --uefi-keys` (systemd-boot and a unified kernel
# image per slot, signed with the development db key of target/keys/uefi,
# which scripts/build.sh makes) booted by OVMF's Secure Boot build with the
# development PK, KEK and db enrolled and Secure Boot on. Real QEMU (q35,
# SMM, TCG).
#
# 1. Boot 1: the factory slot a boots through the signed chain: the kernel
#    reports Secure Boot enabled and locks itself down, the health unit
#    blesses the entry, /healthz answers.
# 2. Boot 2: a newer entry of slot b whose unified image another key signed
#    (as a bundle signed by a key the board does not trust would bring):
#    the firmware refuses to load it ("Access Denied"), and the try is
#    counted (nasvisor-2-b+0-1.conf). systemd-boot then gives the board back
#    to the firmware, which does not boot on by itself: that is why the
#    installer is to check a slot's image against the board's db before it
#    marks it (docs/firmware.md), the next step of this work.
# 3. Boot 3 (the power cycled): slot a boots by itself, b's entry is bad.
#
# Temporary files are removed and QEMU is stopped by its pid on exit, also
# on failure; nothing is killed by name. Environment: BOOT_TIMEOUT (seconds
# to /healthz, default 300), UEFI_KEYS (default target/keys/uefi).
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=secboot-test
UEFI_KEYS=${UEFI_KEYS:-$PWD/target/keys/uefi}
[ -f "$UEFI_KEYS/db.key" ] || bash scripts/uefi-keys.sh "$UEFI_KEYS"
# shellcheck source=tests/appliance/lib.sh
. tests/appliance/lib.sh
T_TEST=$(now_ms)

build_image 1.0.0
cp --sparse=always "$IMG" "$T/disk.img"
[ "$(entries)" = "nasvisor-1-a+3.conf" ] || fail "factory entries: $(entries | tr '\n' ' ')"
mtype -i "$(esp)" ::/loader/entries/nasvisor-1-a+3.conf >"$T/entry-a"
grep -qx 'efi *\/nasvisor\/a\/linux.efi' "$T/entry-a" || fail "the factory entry does not boot a unified image: $(cat "$T/entry-a")"
mcopy -n -i "$(esp)" ::/nasvisor/a/linux.efi ::/EFI/BOOT/BOOTX64.EFI "$T/"
for f in linux.efi BOOTX64.EFI; do
  sbverify --cert "$UEFI_KEYS/db.crt" "$T/$f" >/dev/null 2>&1 || fail "$f on the ESP is not signed by the db key"
done
echo "$NAME: factory ESP: systemd-boot and slot a's unified image signed by the db key"

# ---- 1. the signed chain boots ----------------------------------------------------------------
echo "$NAME: boot 1: Secure Boot on (PK, KEK, db enrolled), /healthz forwarded to 127.0.0.1:$PORT"
boot
T_BOOT=$T_HEALTHZ
has '.*secureboot: Secure boot enabled.*' || fail "the kernel does not report Secure Boot enabled"
has '.*Kernel is locked down from EFI Secure Boot.*' || fail "the kernel did not lock itself down"
has '.*Command line: root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a .*' || fail "not slot a's signed command line"
wait_for ".*NASVISOR-BOOT slot=a version=1.0.0 healthy=active bless=active entries=nasvisor-1-a.conf" 120
echo "$NAME: $(report 'NASVISOR-BOOT ')"
power_off
echo "$NAME: boot 1 ok: Secure Boot enabled, kernel locked down, slot a blessed, /healthz after $((T_BOOT / 1000)) s"

# ---- 2. an image signed by another key is refused ---------------------------------------------
mkdir -p "$T/other"
bash scripts/uefi-keys.sh "$T/other" >/dev/null
# slot a's image, re-signed by the other key (its db signature stripped
# first: sbsign appends, and the firmware takes any signature it trusts)
sbattach --remove "$T/linux.efi" >/dev/null 2>&1 || true
sbsign --key "$T/other/db.key" --cert "$T/other/db.crt" --output "$T/linux-other.efi" "$T/linux.efi" >/dev/null 2>&1 \
  || fail "cannot sign with the other key"
sbverify --cert "$UEFI_KEYS/db.crt" "$T/linux-other.efi" >/dev/null 2>&1 && fail "the re-signed image still verifies against the board's db"
mcopy -o -i "$(esp)" "$T/linux-other.efi" ::/nasvisor/b/linux.efi
printf 'title      nasvisor 1.1.0 (slot b)\nversion    1.1.0\nefi        /nasvisor/b/linux.efi\n' >"$T/nasvisor-2-b+1.conf"
mcopy -i "$(esp)" "$T/nasvisor-2-b+1.conf" ::/loader/entries/nasvisor-2-b+1.conf
echo "$NAME: boot 2: a newer entry nasvisor-2-b+1.conf whose image another key signed"
start_qemu
wait_for '.*Error loading .*nasvisor.b.linux\.efi: Access Denied.*' 180
echo "$NAME: the firmware refused it: $(console | grep -a -o 'Error loading .*Access Denied' | head -1)"
if has '.*Linux version .*'; then fail "a kernel started after the refusal"; fi
stop_qemu
[ "$(entries | tr '\n' ' ')" = "nasvisor-1-a.conf nasvisor-2-b+0-1.conf " ] \
  || fail "entries after the refused try: $(entries | tr '\n' ' '), expected nasvisor-1-a.conf nasvisor-2-b+0-1.conf"
echo "$NAME: boot 2 ok: refused, the try counted (nasvisor-2-b+0-1.conf)"

# ---- 3. the next power-on boots the good slot ------------------------------------------------
echo "$NAME: boot 3: the power cycled"
boot
wait_for ".*NASVISOR-BOOT slot=a version=1.0.0 healthy=.* entries=nasvisor-1-a.conf,nasvisor-2-b+0-1.conf" 120
has '.*secureboot: Secure boot enabled.*' || fail "Secure Boot is not enabled on boot 3"
echo "$NAME: $(report 'NASVISOR-BOOT ')"
power_off
echo "$NAME: PASS: signed boot to /healthz $((T_BOOT / 1000)) s; test $(( ($(now_ms) - T_TEST) / 1000 )) s"
