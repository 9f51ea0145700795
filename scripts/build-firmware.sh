#!/usr/bin/env bash
# Builds the nasvisor appliance image from Debian packages (docs/appliance.md).
#
#   scripts/build-firmware.sh --version X.Y.Z [--out DIR] [--slot-only] [--cache-only] [--dev]
#                             [--product P] [--board B] [--tries N] [--uefi-keys DIR]
#
# Produces, in DIR (default target/firmware):
#   nasvisor-appliance.img    the whole GPT disk: ESP, nasvisor-a, nasvisor-b, nasvisor-data
#   rootfs-X.Y.Z.erofs        the root slot image (what a `reboot` bundle carries)
#   boot-X.Y.Z/vmlinuz, boot-X.Y.Z/initrd.img   the slot's kernel and initramfs
# --slot-only stops after the slot image and boot-X.Y.Z; --cache-only only
# fills the rootfs cache (the mmdebstrap step). --dev logs root in on the
# serial console without a password (a development image; never ship it).
# --product, --board and --tries go into the slot's nasvisord.toml
# [firmware] (the product and board a bundle must name, the tries a newly
# installed slot gets; defaults nasvisor-appliance, qemu-q35, 3).
# --uefi-keys DIR (db.key and db.crt, as scripts/uefi-keys.sh makes them)
# signs the boot chain for UEFI Secure Boot (docs/firmware.md, "Secure
# Boot"): the slot carries two signed unified kernel images,
# /boot/nasvisor-a.efi and /boot/nasvisor-b.efi (systemd-stub, the kernel,
# the initramfs, os-release and the command line of that slot), the ESP
# gets systemd-boot signed and slot A's image, and A's entry boots it
# (`efi`). The installer copies the target slot's image and, under Secure
# Boot, first checks it against the board's db.
#
# No loop device and no mount: each partition is made as a file (mkfs.vfat +
# mcopy, mkfs.erofs, mkfs.ext4 -d), sfdisk lays out the disk image, dd
# places the partitions into it.
#
# Inputs (environment):
#   NASVISOR_FW_BIN_DIR     nasvisord and nasvisor (default target/release, stripped copies are taken)
#   NASVISOR_FW_PLUGIN_DIR  the signed default plugins *.nvplugin (default target/plugins)
#   NASVISOR_FW_KEYS_DIR    the trusted vendor keys *.pub (default target/keys)
#   NASVISOR_FW_GUEST_DIR   the bundled guest image nasvisor-mini.qcow2 and its
#                           guest-image.json (default target/guest, from
#                           scripts/build-guest-image.sh, which setup.sh runs)
#   NASVISOR_FW_CACHE       the rootfs cache (default target/firmware-cache)
#   NASVISOR_FW_TMP         scratch directory (default /dev/shm when it has 4 GiB free, else target/tmp)
#   SOURCE_DATE_EPOCH       timestamps of the images (default: the last commit's time)
# The default binaries come from `cargo build --release --bins` and the plugins
# and keys from scripts/build.sh; this script never runs cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FW=$ROOT/firmware

VERSION=""
OUT=$ROOT/target/firmware
SLOT_ONLY=0
CACHE_ONLY=0
DEV=0
PRODUCT=nasvisor-appliance
BOARD=qemu-q35
FW_TRIES=3
UEFI_KEYS=""
usage() { echo "usage: $0 --version X.Y.Z [--out DIR] [--slot-only] [--cache-only] [--dev] [--product P] [--board B] [--tries N] [--uefi-keys DIR]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --version) VERSION=${2:-}; shift 2 ;;
    --out) OUT=${2:-}; shift 2 ;;
    --slot-only) SLOT_ONLY=1; shift ;;
    --cache-only) CACHE_ONLY=1; shift ;;
    --dev) DEV=1; shift ;;
    --product) PRODUCT=${2:-}; shift 2 ;;
    --board) BOARD=${2:-}; shift 2 ;;
    --tries) FW_TRIES=${2:-}; shift 2 ;;
    --uefi-keys) UEFI_KEYS=${2:-}; shift 2 ;;
    -h | --help) usage ;;
    *) echo "build-firmware: unknown argument $1" >&2; usage ;;
  esac
done
if [ "$CACHE_ONLY" -eq 0 ]; then
  [[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] \
    || { echo "build-firmware: --version: \"$VERSION\" is not a version X.Y.Z" >&2; exit 2; }
fi
# The names a bundle's manifest must match (docs/firmware.md: 1-64 of
# A-Za-z0-9._-, not starting with . or -); the tries as nasvisord takes them.
for f in product:"$PRODUCT" board:"$BOARD"; do
  [[ "${f#*:}" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$ ]] \
    || { echo "build-firmware: --${f%%:*}: \"${f#*:}\" is not a name (1-64 of A-Za-z0-9._-, not starting with . or -)" >&2; exit 2; }
done
[[ "$FW_TRIES" =~ ^([1-9]|10)$ ]] || { echo "build-firmware: --tries: \"$FW_TRIES\" is not 1..10" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "build-firmware: run as root (mmdebstrap --mode=root, file ownership in the images)" >&2; exit 1; }
for tool in mmdebstrap mkfs.erofs mkfs.vfat mcopy mmd mkfs.ext4 sfdisk; do
  command -v "$tool" >/dev/null || { echo "build-firmware: $tool missing (run scripts/setup.sh)" >&2; exit 1; }
done
if [ -n "$UEFI_KEYS" ]; then
  for f in db.key db.crt; do
    [ -r "$UEFI_KEYS/$f" ] || { echo "build-firmware: --uefi-keys: no readable $UEFI_KEYS/$f (scripts/uefi-keys.sh makes a development set)" >&2; exit 2; }
  done
  openssl x509 -in "$UEFI_KEYS/db.crt" -noout 2>/dev/null \
    || { echo "build-firmware: --uefi-keys: $UEFI_KEYS/db.crt is not a PEM X.509 certificate" >&2; exit 2; }
  for tool in objcopy sbsign sbverify; do
    command -v "$tool" >/dev/null || { echo "build-firmware: $tool missing (run scripts/setup.sh)" >&2; exit 1; }
  done
fi
# uefi_sign IN OUT: IN signed with the db key into OUT (sbsign).
uefi_sign() {
  sbsign --key "$UEFI_KEYS/db.key" --cert "$UEFI_KEYS/db.crt" --output "$2" "$1" >"$TMP/sbsign.log" 2>&1 \
    || { cat "$TMP/sbsign.log" >&2; echo "build-firmware: sbsign of $1 failed" >&2; exit 1; }
}
# The kernel command line of slot $1 (a or b).
cmdline() { echo "root=PARTLABEL=nasvisor-$1 ro rootfstype=erofs nasvisor.slot=$1 panic=10 console=tty0 console=ttyS0,115200"; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# ---- the layout (MiB); docs/appliance.md, "The disk" ----------------------------------
ESP_MIB=128
SLOT_MIB=1024
DATA_MIB=512
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B    # EFI system partition
ROOT_TYPE=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709   # Linux root (x86-64)
DATA_TYPE=0FC63DAF-8483-4772-8E79-3D69D8477DE4   # Linux filesystem data
GENERATION=1                                     # the factory image's boot entry generation
TRIES=3                                          # boot attempts of a pending entry

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
T_START=$(now_ms)

# The scratch tree (the unpacked root, the partition files: about 1.5 GiB)
# goes to /dev/shm when it has room: nothing of it needs to reach the disk.
TMP_BASE=${NASVISOR_FW_TMP:-}
if [ -z "$TMP_BASE" ]; then
  TMP_BASE=$ROOT/target/tmp
  if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(df -Pm /dev/shm | awk 'NR == 2 {print $4}')" -ge 4096 ]; then
    TMP_BASE=/dev/shm
  fi
fi
mkdir -p "$TMP_BASE"
TMP=$(mktemp -d "$TMP_BASE/nasvisor-firmware.XXXXXX")
cleanup() { rm -rf "$TMP" "$OUT/rootfs-$VERSION.erofs.tmp" "$OUT/nasvisor-appliance.img.tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. the Debian root (mmdebstrap), cached ---------------------------------------------
# The apt sources are the host's own bookworm entries (main, updates,
# security, backports): no mirror name is written here.
SOURCES=$TMP/sources.sources
: >"$SOURCES"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  if grep -Eq '^Suites:.*\bbookworm' "$f"; then cat "$f" >>"$SOURCES"; echo >>"$SOURCES"; fi
done
if [ -f /etc/apt/sources.list ]; then
  grep -E '^deb\s.*\sbookworm(-[a-z]+)?\s' /etc/apt/sources.list >"$TMP/sources.list" || true
fi
grep -qs 'bookworm-backports' "$SOURCES" "$TMP/sources.list" \
  || { echo "build-firmware: no bookworm-backports in the host's apt sources (run scripts/setup.sh)" >&2; exit 1; }
MIRRORS=("$SOURCES")
if [ -s "$TMP/sources.list" ]; then MIRRORS+=("$TMP/sources.list"); fi

mapfile -t PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$FW/packages.txt" | grep -v '^$')
INCLUDE=$(IFS=,; echo "${PACKAGES[*]}")
CACHE=${NASVISOR_FW_CACHE:-$ROOT/target/firmware-cache}
mkdir -p "$CACHE"
# The key: the package list, the initramfs settings, the mmdebstrap command
# (this block of the script) and the day's package indices are not in it:
# remove the cache (or touch packages.txt) to take newer packages.
# shellcheck disable=SC2016 # "$1" in a hook is the chroot, expanded by mmdebstrap's shell
MMDEBSTRAP_ARGS=(
  --mode=root --variant=minbase --format=tar
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --include="$INCLUDE"
  --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && cp '$FW/apt/nasvisor-backports.pref' \"\$1/etc/apt/preferences.d/\""
  --customize-hook="cp '$FW/initramfs/modules' \"\$1/etc/initramfs-tools/modules\""
  --customize-hook="cp '$FW/initramfs/initramfs.conf' \"\$1/etc/initramfs-tools/conf.d/nasvisor.conf\""
  --customize-hook='chroot "$1" update-initramfs -u -k all'
  --customize-hook='rm -f "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*_Packages "$1"/var/lib/apt/lists/*_Release "$1"/var/lib/apt/lists/*_InRelease'
)
KEY=$( { printf '%s\n' "${MMDEBSTRAP_ARGS[@]}"; cat "$FW/packages.txt" "$FW/apt/nasvisor-backports.pref" "$FW/initramfs/modules" "$FW/initramfs/initramfs.conf"; } \
  | sed "s|$ROOT|ROOT|g" | sha256sum | cut -c1-16)
ROOTFS_TAR=$CACHE/rootfs-$KEY.tar
if [ ! -s "$ROOTFS_TAR" ]; then
  echo "build-firmware: mmdebstrap bookworm -> $ROOTFS_TAR (${#PACKAGES[@]} packages; a few minutes)"
  t0=$(now_ms)
  mmdebstrap "${MMDEBSTRAP_ARGS[@]}" bookworm "$TMP/rootfs.tar" "${MIRRORS[@]}" >"$TMP/mmdebstrap.log" 2>&1 \
    || { tail -n 40 "$TMP/mmdebstrap.log" >&2; echo "build-firmware: mmdebstrap failed" >&2; exit 1; }
  mv "$TMP/rootfs.tar" "$ROOTFS_TAR"
  # older caches of other package lists are not kept
  find "$CACHE" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$KEY.tar" -delete
  echo "build-firmware: mmdebstrap took $(( ($(now_ms) - t0) / 1000 )) s, $(du -m "$ROOTFS_TAR" | cut -f1) MiB"
else
  echo "build-firmware: rootfs from the cache $ROOTFS_TAR"
fi
if [ "$CACHE_ONLY" -eq 1 ]; then exit 0; fi

# ---- 2. the slot's tree: the Debian root + nasvisor ------------------------------------------
T_SLOT=$(now_ms)
BIN_DIR=${NASVISOR_FW_BIN_DIR:-$ROOT/target/release}
PLUGIN_DIR=${NASVISOR_FW_PLUGIN_DIR:-$ROOT/target/plugins}
KEYS_DIR=${NASVISOR_FW_KEYS_DIR:-$ROOT/target/keys}
GUEST_DIR=${NASVISOR_FW_GUEST_DIR:-$ROOT/target/guest}
for f in nasvisor-mini.qcow2 guest-image.json; do
  [ -s "$GUEST_DIR/$f" ] || { echo "build-firmware: $GUEST_DIR/$f missing (scripts/build-guest-image.sh, or set NASVISOR_FW_GUEST_DIR)" >&2; exit 1; }
done
for b in nasvisord nasvisor; do
  [ -x "$BIN_DIR/$b" ] || { echo "build-firmware: $BIN_DIR/$b missing (cargo build --release --bins, or set NASVISOR_FW_BIN_DIR)" >&2; exit 1; }
done
plugins=("$PLUGIN_DIR"/*.nvplugin)
[ -f "${plugins[0]}" ] || { echo "build-firmware: no *.nvplugin in $PLUGIN_DIR (scripts/build.sh, or set NASVISOR_FW_PLUGIN_DIR)" >&2; exit 1; }
keys=("$KEYS_DIR"/*.pub)
[ -f "${keys[0]}" ] || { echo "build-firmware: no *.pub in $KEYS_DIR (scripts/build.sh, or set NASVISOR_FW_KEYS_DIR)" >&2; exit 1; }

R=$TMP/root
mkdir -p "$R"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$ROOTFS_TAR" -C "$R"

# nasvisor: stripped binaries, the signed default plugins, the trusted keys.
install -d -m 0755 "$R/usr/lib/nasvisor/plugins" "$R/usr/lib/nasvisor/keys"
for b in nasvisord nasvisor; do
  if command -v strip >/dev/null; then
    strip --strip-unneeded -o "$R/usr/bin/$b" "$BIN_DIR/$b"
  elif [ -z "${NASVISOR_FW_BIN_DIR:-}" ]; then
    echo "build-firmware: strip missing (binutils) to strip target/release/$b" >&2; exit 1
  else
    cp "$BIN_DIR/$b" "$R/usr/bin/$b"
  fi
  chmod 0755 "$R/usr/bin/$b"
done
install -m 0644 "${plugins[@]}" "$R/usr/lib/nasvisor/plugins/"
install -m 0644 "${keys[@]}" "$R/usr/lib/nasvisor/keys/"
echo "$VERSION" >"$R/usr/lib/nasvisor/version"
# The bundled guest image, where nasvisord's [images] bundled expects it
# (`image list` shows it from the first start; docs/appliance.md).
install -d -m 0755 "$R/usr/share/nasvisor/images"
install -m 0644 "$GUEST_DIR/nasvisor-mini.qcow2" "$GUEST_DIR/guest-image.json" "$R/usr/share/nasvisor/images/"

# The appliance's own files (units, fstab, config, health check).
cp -a "$FW/rootfs/." "$R/"
# Firmware management on (docs/appliance.md, "The root slot"): the slots by
# their partition labels, the booted one from the kernel command line, the
# bundles' keys the vendor keys baked into this slot.
cat >>"$R/etc/nasvisor/nasvisord.toml" <<FWCONF

# Written by scripts/build-firmware.sh (--product, --board, --tries).
[firmware]
enabled = true
esp = "/efi"
slot-a = "/dev/disk/by-partlabel/nasvisor-a"
slot-b = "/dev/disk/by-partlabel/nasvisor-b"
cmdline = "/proc/cmdline"
tries = $FW_TRIES
trusted-keys-dir = "/usr/lib/nasvisor/keys"
product = "$PRODUCT"
board = "$BOARD"
reboot-command = ["systemctl", "reboot"]
FWCONF
install -d -m 0755 "$R/usr/share/doc/nasvisor"
install -m 0644 "$ROOT/docs/appliance.md" "$R/usr/share/doc/nasvisor/appliance.md"
cat >>"$R/usr/lib/os-release" <<OSREL
VARIANT="nasvisor appliance"
VARIANT_ID=nasvisor
IMAGE_ID=nasvisor-appliance
IMAGE_VERSION=$VERSION
OSREL

# A read-only root: an empty machine-id gives a transient one each boot;
# the mount points exist; the kernel and initramfs are in /boot under fixed
# names, for the installer to copy onto the ESP.
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$R/var/lib/dbus/machine-id"
install -d -m 0700 "$R/efi"
install -d -m 0700 "$R/var/lib/nasvisor"
kernel=$(cd "$R/boot" && find . -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "build-firmware: no kernel in the rootfs" >&2; exit 1; }
kver=${kernel#vmlinuz-}
[ -f "$R/boot/initrd.img-$kver" ] || { echo "build-firmware: no initrd.img-$kver in the rootfs" >&2; exit 1; }
ln -sfn "vmlinuz-$kver" "$R/boot/vmlinuz"
ln -sfn "initrd.img-$kver" "$R/boot/initrd.img"
# Secure Boot: a signed unified kernel image per slot the image may be
# written to (its command line, which names the slot, is part of what is
# signed). The section addresses are systemd-stub(7)'s for objcopy: the
# kernel below 16 MiB, the initramfs last.
rm -f "$R"/boot/nasvisor-[ab].efi
if [ -n "$UEFI_KEYS" ]; then
  stub=$R/usr/lib/systemd/boot/efi/linuxx64.efi.stub
  [ -f "$stub" ] || { echo "build-firmware: no systemd-stub $stub in the rootfs (systemd-boot-efi)" >&2; exit 1; }
  [ "$(stat -c %s "$R/boot/vmlinuz-$kver")" -lt $((16 * 1024 * 1024)) ] \
    || { echo "build-firmware: the kernel is 16 MiB or more: the unified image's sections would overlap" >&2; exit 1; }
  for slot in a b; do
    printf '%s' "$(cmdline "$slot")" >"$TMP/cmdline-$slot"
    objcopy \
      --add-section .osrel="$R/usr/lib/os-release" --change-section-vma .osrel=0x20000 \
      --add-section .cmdline="$TMP/cmdline-$slot" --change-section-vma .cmdline=0x30000 \
      --add-section .linux="$R/boot/vmlinuz-$kver" --change-section-vma .linux=0x2000000 \
      --add-section .initrd="$R/boot/initrd.img-$kver" --change-section-vma .initrd=0x3000000 \
      "$stub" "$TMP/uki-$slot.efi"
    uefi_sign "$TMP/uki-$slot.efi" "$R/boot/nasvisor-$slot.efi"
    rm -f "$TMP/uki-$slot.efi"
  done
fi

# Units: nasvisord and its health check on; what cannot work on a
# read-only root, or would write EFI variables or the ESP behind the
# installer's back, masked.
systemctl --root="$R" --quiet enable nasvisord.service nasvisor-healthy.service nasvisor-boot-report.service \
  nasvisor-grow-data.service \
  systemd-networkd.service
systemctl --root="$R" --quiet mask systemd-firstboot.service systemd-boot-system-token.service \
  systemd-boot-update.service apt-daily.timer apt-daily-upgrade.timer
if [ "$DEV" -eq 1 ]; then
  install -d "$R/etc/systemd/system/serial-getty@ttyS0.service.d"
  # shellcheck disable=SC2016 # $TERM is systemd's, expanded in the unit
  printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM\n' \
    >"$R/etc/systemd/system/serial-getty@ttyS0.service.d/dev-autologin.conf"
  install -d "$R/etc/systemd/system/nasvisord.service.d"
  printf '[Service]\nStandardOutput=journal+console\nStandardError=journal+console\n' \
    >"$R/etc/systemd/system/nasvisord.service.d/dev-console.conf"
  echo "NASVISOR_DEV_IMAGE=1" >>"$R/usr/lib/os-release"
fi

SLOT_IMG=$OUT/rootfs-$VERSION.erofs
rm -f "$SLOT_IMG.tmp"
mkfs.erofs -zlz4hc -T "$SOURCE_DATE_EPOCH" "$SLOT_IMG.tmp" "$R" >"$TMP/mkfs.erofs.log" 2>&1 \
  || { cat "$TMP/mkfs.erofs.log" >&2; echo "build-firmware: mkfs.erofs failed" >&2; exit 1; }
slot_bytes=$(stat -c %s "$SLOT_IMG.tmp")
if [ "$slot_bytes" -gt $((SLOT_MIB * 1024 * 1024)) ]; then
  echo "build-firmware: the slot image is $((slot_bytes / 1048576)) MiB, more than the ${SLOT_MIB} MiB slot" >&2; exit 1
fi
mv "$SLOT_IMG.tmp" "$SLOT_IMG"
BOOT=$OUT/boot-$VERSION
rm -rf "$BOOT"
mkdir -p "$BOOT"
cp "$R/boot/vmlinuz-$kver" "$BOOT/vmlinuz"
cp "$R/boot/initrd.img-$kver" "$BOOT/initrd.img"
if [ -n "$UEFI_KEYS" ]; then
  cp "$R"/boot/nasvisor-[ab].efi "$BOOT/"
  uefi_sign "$R/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$BOOT/systemd-bootx64.efi"
  for f in "$BOOT"/nasvisor-[ab].efi "$BOOT/systemd-bootx64.efi"; do
    sbverify --cert "$UEFI_KEYS/db.crt" "$f" >/dev/null 2>&1 || { echo "build-firmware: $f does not verify against db.crt" >&2; exit 1; }
  done
else
  cp "$R/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$BOOT/systemd-bootx64.efi"
fi
echo "build-firmware: slot image $SLOT_IMG: $((slot_bytes / 1048576)) MiB (kernel $kver; product $PRODUCT, board $BOARD, tries $FW_TRIES${UEFI_KEYS:+; Secure Boot: signed by $(openssl x509 -in "$UEFI_KEYS/db.crt" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')}) in $(( ($(now_ms) - T_SLOT) / 1000 )) s"
if [ "$SLOT_ONLY" -eq 1 ]; then exit 0; fi

# ---- 3. the partitions as files ------------------------------------------------------------------
# The ESP: systemd-boot, its settings, slot A's kernel and initramfs, and
# slot A's boot entry, pending with $TRIES tries (docs/appliance.md).
ESP=$TMP/esp.img
mkfs.vfat -F 32 -s 1 -n ESP -C "$ESP" $((ESP_MIB * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/loader ::/loader/entries ::/nasvisor ::/nasvisor/a ::/nasvisor/b
mcopy -i "$ESP" "$BOOT/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$ESP" "$BOOT/systemd-bootx64.efi" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$ESP" "$FW/esp/loader.conf" ::/loader/loader.conf
ENTRY=nasvisor-$GENERATION-a+$TRIES.conf
printf 'title      nasvisor %s (slot a)\nversion    %s\n' "$VERSION" "$VERSION" >"$TMP/$ENTRY"
if [ -n "$UEFI_KEYS" ]; then
  mcopy -i "$ESP" "$BOOT/nasvisor-a.efi" ::/nasvisor/a/linux.efi
  printf 'efi        /nasvisor/a/linux.efi\n' >>"$TMP/$ENTRY"
else
  mcopy -i "$ESP" "$BOOT/vmlinuz" ::/nasvisor/a/vmlinuz
  mcopy -i "$ESP" "$BOOT/initrd.img" ::/nasvisor/a/initrd.img
  printf 'linux      /nasvisor/a/vmlinuz\ninitrd     /nasvisor/a/initrd.img\noptions    %s\n' "$(cmdline a)" >>"$TMP/$ENTRY"
fi
mcopy -i "$ESP" "$TMP/$ENTRY" "::/loader/entries/$ENTRY"

# The data partition: ext4, empty; it survives updates.
DATA=$TMP/data.img
mkdir -p "$TMP/data"
mkfs.ext4 -q -F -L nasvisor-data -d "$TMP/data" "$DATA" "${DATA_MIB}M" >/dev/null

# ---- 4. the disk ------------------------------------------------------------------------------------
ESP_START=1
A_START=$((ESP_START + ESP_MIB))
B_START=$((A_START + SLOT_MIB))
DATA_START=$((B_START + SLOT_MIB))
DISK_MIB=$((DATA_START + DATA_MIB + 1))    # + the backup GPT
DISK=$OUT/nasvisor-appliance.img
rm -f "$DISK.tmp"
truncate -s "${DISK_MIB}M" "$DISK.tmp"
s() { echo $(($1 * 2048)); }               # MiB -> 512-byte sectors
sfdisk --quiet --no-reread --no-tell-kernel "$DISK.tmp" <<LAYOUT
label: gpt
unit: sectors
first-lba: 2048
start=$(s $ESP_START), size=$(s $ESP_MIB), type=$ESP_TYPE, name="ESP"
start=$(s $A_START), size=$(s $SLOT_MIB), type=$ROOT_TYPE, name="nasvisor-a"
start=$(s $B_START), size=$(s $SLOT_MIB), type=$ROOT_TYPE, name="nasvisor-b"
start=$(s $DATA_START), size=$(s $DATA_MIB), type=$DATA_TYPE, name="nasvisor-data"
LAYOUT
place() { dd if="$1" of="$DISK.tmp" bs=1M seek="$2" conv=notrunc,sparse status=none; }
place "$ESP" "$ESP_START"
place "$SLOT_IMG" "$A_START"
place "$DATA" "$DATA_START"
mv "$DISK.tmp" "$DISK"
cat >"$OUT/nasvisor-appliance.layout" <<LAYOUTINFO
# partition start-MiB size-MiB (scripts/build-firmware.sh $VERSION)
ESP $ESP_START $ESP_MIB
nasvisor-a $A_START $SLOT_MIB
nasvisor-b $B_START $SLOT_MIB
nasvisor-data $DATA_START $DATA_MIB
LAYOUTINFO
echo "build-firmware: $DISK: ${DISK_MIB} MiB ($(du -m "$DISK" | cut -f1) MiB allocated), version $VERSION, in $(( ($(now_ms) - T_START) / 1000 )) s"
