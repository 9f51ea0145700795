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
NAME=appliance-test
# shellcheck source=tests/appliance/lib.sh
. tests/appliance/lib.sh
VERSION=${APPLIANCE_VERSION:-1.0.0}
T_TEST=$(now_ms)

# ---- 1. the image ------------------------------------------------------------------
build_image "$VERSION"

# ---- 2. the factory ESP ------------------------------------------------------------
cp --sparse=always "$IMG" "$T/disk.img"
for f in /EFI/BOOT/BOOTX64.EFI /EFI/systemd/systemd-bootx64.efi /loader/loader.conf \
  /nasvisor/a/vmlinuz /nasvisor/a/initrd.img; do
  mdir -i "$(esp)" "::$f" >/dev/null 2>&1 || fail "the ESP has no $f"
done
[ "$(entries)" = "nasvisor-1-a+3.conf" ] || fail "factory entries: $(entries | tr '\n' ' '), expected nasvisor-1-a+3.conf"
mtype -i "$(esp)" "::/loader/entries/nasvisor-1-a+3.conf" >"$T/entry-before"
grep -qx "version *$VERSION" "$T/entry-before" || fail "the entry's version is not $VERSION"
echo "appliance-test: factory ESP ok: nasvisor-1-a+3.conf, version $VERSION"

# ---- 3. boot ------------------------------------------------------------------------------
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
