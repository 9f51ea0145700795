#!/usr/bin/env bash
# Builds nasvisor-mini, the small bundled guest system image, from Debian
# packages: Debian's cloud kernel (linux-image-cloud-amd64) and busybox-static.
# Its /init (tests/guest-image/init) reads a cloud-init NoCloud seed and
# reports on the serial console; see tests/guest-image/README.md.
#
# Outputs, in target/guest/:
#   vmlinuz, initrd.img       for direct kernel boot
#                             (append: console=ttyS0,115200n8 quiet)
#   nasvisor-mini.qcow2       BIOS-bootable disk: MBR + one FAT partition with
#                             syslinux, the kernel and the initramfs
#   guest-image.json          image metadata for the image library
#
# Idempotent: does nothing when the outputs are up to date. The key covers
# the kernel package and version, busybox and syslinux versions, this script
# and the files of tests/guest-image/ that go into the image.
# Installs the Debian packages it needs when they are missing (root or sudo).
# Nothing is mounted: the FAT file system is built in a file with mtools.
#
# Environment:
#   NASVISOR_GUEST_KERNEL_PKG  kernel package to use instead of the one the
#                              linux-image-cloud-amd64 meta package names
#   NASVISOR_GUEST_FORCE=1     rebuild even when up to date
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT=target/guest
CACHE=$OUT/cache
NAME=nasvisor-mini
DISK_MIB=64
PART_START=2048 # sectors (1 MiB)
CMDLINE="console=ttyS0,115200n8 quiet"
SRC=tests/guest-image
IMAGE_FILES=("$SRC/init" "$SRC/yaml.awk" "$SRC/udhcpc.script")
# Modules to ship, by name; their dependencies are added from modules.dep.
# Names missing from the kernel (or built in) are skipped.
MODULES=(
  virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  virtio_blk virtio_net virtio_scsi sd_mod
  fat vfat nls_cp437 nls_ascii nls_iso8859-1 nls_utf8
  isofs cdrom sr_mod ata_piix
  button evdev pvpanic pvpanic-pci
)

log() { echo "build-guest-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

mkdir -p "$OUT" "$CACHE"
exec 9>"$OUT/.lock"
flock 9
rm -rf "$OUT"/.build.* # left by a killed build

# ---- packages ----------------------------------------------------------------
need_pkgs=(busybox-static cpio dosfstools mtools syslinux syslinux-common fdisk xz-utils zstd)
declare -A PKGVER=()
while read -r p v st; do
  [ "$st" = "install ok installed" ] && PKGVER[$p]=$v
done < <(dpkg-query -W -f='${Package} ${Version} ${Status}\n' "${need_pkgs[@]}" 2>/dev/null || true)
missing=()
for p in "${need_pkgs[@]}"; do
  [ -n "${PKGVER[$p]:-}" ] || missing+=("$p")
done
apt_updated=0
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    $SUDO apt-get update -qq
    apt_updated=1
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
command -v qemu-img >/dev/null || die "qemu-img not found: run scripts/setup.sh first"

pkgver() { [ -n "${PKGVER[$1]:-}" ] && echo "${PKGVER[$1]}" || dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }

# ---- kernel package and version ----------------------------------------------
# The meta package linux-image-cloud-amd64 depends on the current kernel
# package, normally with "(= version)".
KPKG=""
KPKGVER=""
kernel_pkg() {
  local dep
  dep=$(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
    awk '/^Depends:/ { sub(/^Depends: */, ""); n = split($0, a, ","); for (i = 1; i <= n; i++) if (a[i] ~ /linux-image-.*-cloud-amd64/) { print a[i]; exit } }')
  KPKG=$(echo "$dep" | awk '{ print $1 }')
  KPKGVER=$(echo "$dep" | sed -n 's/.*(= *\([^)]*\)).*/\1/p')
}
if [ -n "${NASVISOR_GUEST_KERNEL_PKG:-}" ]; then
  KPKG=$NASVISOR_GUEST_KERNEL_PKG
else
  kernel_pkg
  if [ -z "$KPKG" ] && [ $apt_updated -eq 0 ]; then
    $SUDO apt-get update -qq || true
    apt_updated=1
    kernel_pkg
  fi
fi
if [ -n "$KPKG" ] && [ -z "$KPKGVER" ]; then
  KPKGVER=$(apt-cache show --no-all-versions "$KPKG" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
fi
if [ -z "$KPKG" ] || [ -z "$KPKGVER" ]; then
  if [ -f "$OUT/.stamp" ] && [ -f "$OUT/$NAME.qcow2" ]; then
    log "warning: cannot find the cloud kernel package in apt; keeping the existing image"
    exit 0
  fi
  die "cannot find linux-image-cloud-amd64's kernel package (apt-get update?)"
fi

# ---- up to date? ---------------------------------------------------------------
KEY=$(
  {
    echo "kernel $KPKG $KPKGVER"
    echo "busybox $(pkgver busybox-static)"
    echo "syslinux $(pkgver syslinux) $(pkgver syslinux-common)"
    echo "modules ${MODULES[*]}"
    echo "disk $DISK_MIB $PART_START $CMDLINE"
    sha256sum scripts/build-guest-image.sh "${IMAGE_FILES[@]}"
  } | sha256sum | cut -d' ' -f1
)
outputs=("$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/$NAME.qcow2" "$OUT/guest-image.json")
uptodate=1
for f in "${outputs[@]}"; do [ -s "$f" ] || uptodate=0; done
if [ "$uptodate" -eq 1 ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$KEY" ] && [ "${NASVISOR_GUEST_FORCE:-0}" != 1 ]; then
  log "up to date ($KPKG $KPKGVER)"
  exit 0
fi
START=$(date +%s.%N)
log "building $NAME with $KPKG $KPKGVER"

WORK=$(mktemp -d "$ROOT/$OUT/.build.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# ---- kernel ---------------------------------------------------------------------
DEB=$(find "$CACHE" -maxdepth 1 -name "${KPKG}_*.deb" 2>/dev/null | head -n 1)
want_deb_ver=$(echo "$KPKGVER" | sed 's/^[0-9]*://')
if [ -z "$DEB" ] || [ "$(dpkg-deb -f "$DEB" Version)" != "$KPKGVER" ]; then
  rm -f "$CACHE"/linux-image-*.deb
  log "downloading $KPKG=$KPKGVER"
  (cd "$CACHE" && apt-get download -q "$KPKG=$KPKGVER" 2>&1 | grep -v -e "unsandboxed as root" -e '^Get:' -e '^Fetched' >&2 || true)
  DEB=$(find "$CACHE" -maxdepth 1 -name "${KPKG}_${want_deb_ver}_*.deb" | head -n 1)
  [ -n "$DEB" ] || die "apt-get download $KPKG=$KPKGVER failed"
fi
KX=$WORK/kernel
dpkg-deb -x "$DEB" "$KX"
VMLINUZ=$(find "$KX/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)
[ -n "$VMLINUZ" ] || die "no vmlinuz in $DEB"
KVER=${VMLINUZ##*/vmlinuz-}
MODROOT=""
for d in "$KX/lib/modules/$KVER" "$KX/usr/lib/modules/$KVER"; do
  [ -d "$d" ] && MODROOT=$d && break
done
[ -n "$MODROOT" ] || die "no modules for $KVER in $DEB"
if [ ! -s "$MODROOT/modules.dep" ]; then
  base=${MODROOT%/lib/modules/$KVER}
  if command -v depmod >/dev/null; then
    depmod -b "$base" "$KVER"
  else
    busybox depmod -b "$base" "$KVER"
  fi
fi
[ -s "$MODROOT/modules.dep" ] || die "depmod produced no modules.dep"

# ---- modules: dependencies in load order ---------------------------------------------
declare -A MODPATH=() MODDEPS=() VISITED=()
while IFS= read -r line; do
  path=${line%%:*}
  deps=${line#*:}
  n=${path##*/}
  n=${n%%.ko*}
  n=${n//-/_}
  MODPATH[$n]=$path
  MODDEPS[$n]=$deps
done <"$MODROOT/modules.dep"
ORDER=()
visit() {
  local n=$1 d dn
  [ -n "${VISITED[$n]:-}" ] && return 0
  VISITED[$n]=1
  for d in ${MODDEPS[$n]}; do
    dn=${d##*/}
    dn=${dn%%.ko*}
    visit "${dn//-/_}"
  done
  ORDER+=("${MODPATH[$n]}")
}
for m in "${MODULES[@]}"; do
  n=${m//-/_}
  if [ -n "${MODPATH[$n]:-}" ]; then
    visit "$n"
  elif ! grep -qE "/${m}\.ko|/${n}\.ko" "$MODROOT/modules.builtin" 2>/dev/null; then
    log "note: module $m not in $KVER, skipped"
  fi
done

# ---- initramfs tree -------------------------------------------------------------
RD=$WORK/initramfs
mkdir -p "$RD"/{bin,dev,proc,sys,run,tmp,root,home,mnt/seed,etc/acpi/PWRF,lib/nasvisor,usr/share/udhcpc,var/log,var/tmp}
ln -s bin "$RD/sbin"
ln -s ../bin "$RD/usr/bin"
ln -s ../bin "$RD/usr/sbin"
ln -s ../run "$RD/var/run"
chmod 1777 "$RD/tmp" "$RD/var/tmp"
chmod 700 "$RD/root"
BB=$(command -v busybox)
cp "$BB" "$RD/bin/busybox"
for a in $("$BB" --list); do
  [ "$a" = busybox ] || ln -s busybox "$RD/bin/$a"
done
if [ "$(id -u)" -eq 0 ]; then
  mknod -m 600 "$RD/dev/console" c 5 1
  mknod -m 666 "$RD/dev/null" c 1 3
fi
install -m 755 "$SRC/init" "$RD/init"
install -m 644 "$SRC/yaml.awk" "$RD/lib/nasvisor/yaml.awk"
install -m 755 "$SRC/udhcpc.script" "$RD/usr/share/udhcpc/default.script"

# The counter of the live-migration tests (kernel option nasvisor.counter=1).
cat >"$RD/lib/nasvisor/counter" <<'EOF'
#!/bin/sh
# Prints "COUNT <n>" every 100 ms on the serial console.
n=0
while :; do
    echo "COUNT $n" >/dev/ttyS0
    n=$((n + 1))
    usleep 100000
done
EOF
# The acknowledged writer of the HA tests: numbered records, each synced
# to the disk before it is acknowledged on the console (see
# tests/guest-image/README.md).
cat >"$RD/lib/nasvisor/acker" <<'EOF'
#!/bin/sh
# Usage: acker [INTERVAL_US]  (default 100000)
# Record n is the 512-byte sector BASE+n of the first disk, where BASE is
# 32 MiB before its end: "REC <n>" padded with spaces to one 512-byte line.
# On start it counts the records found from 0 on (one read of the region,
# stopped at the first gap) and prints "RECORDS-FOUND <count>"; then it
# writes record count, count+1, ..., each with conv=fsync (a flush the
# host's QEMU carries to the image file), and prints "ACK <n>" only after.
for d in /dev/vda /dev/sda /dev/hda; do [ -b "$d" ] && DEV=$d && break; done
[ -n "$DEV" ] || { echo "ACKER-NO-DISK" >/dev/ttyS0; exit 1; }
SECTORS=$(( $(blockdev --getsize64 "$DEV") / 512 ))
BASE=$(( SECTORS - 65536 ))
n=$(dd if="$DEV" bs=512 skip="$BASE" count=65536 2>/dev/null | tr -d '\000' |
    awk '$1 == "REC" && $2 == NR - 1 { n = NR; next } { exit } END { print n + 0 }')
echo "RECORDS-FOUND $n" >/dev/ttyS0
while [ "$n" -lt 65536 ]; do
    printf '%-511s\n' "REC $n" | dd of="$DEV" bs=512 seek=$((BASE + n)) count=1 conv=notrunc,fsync 2>/dev/null \
        || { echo "ACKER-WRITE-FAILED $n" >/dev/ttyS0; exit 1; }
    echo "ACK $n" >/dev/ttyS0
    n=$((n + 1))
    usleep "${1:-100000}"
done
echo "ACKER-FULL" >/dev/ttyS0
EOF
# busybox acpid runs /etc/acpi/PWRF/00000080 on a power button press.
cat >"$RD/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "NASVISOR-POWEROFF acpi" >/dev/ttyS0
exec poweroff
EOF
chmod 755 "$RD/lib/nasvisor/counter" "$RD/lib/nasvisor/acker" "$RD/etc/acpi/PWRF/00000080"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$RD/etc/passwd"
printf 'root:*:0:0:99999:7:::\nnobody:*:0:0:99999:7:::\n' >"$RD/etc/shadow"
chmod 640 "$RD/etc/shadow"
printf '%s\n' root:x:0: adm:x:4: tty:x:5: disk:x:6: wheel:x:10: staff:x:50: sudo:x:27: users:x:100: nogroup:x:65534: >"$RD/etc/group"
echo "$NAME" >"$RD/etc/hostname"
cat >"$RD/etc/profile" <<'EOF'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PS1='\u@\h:\w\$ '
EOF
cat >"$RD/etc/os-release" <<EOF
NAME="nasvisor-mini"
ID=nasvisor-mini
VERSION_ID=1
PRETTY_NAME="nasvisor-mini (busybox, Debian kernel $KVER)"
EOF
: >"$RD/etc/resolv.conf"

MODDIR=$RD/lib/modules/$KVER
mkdir -p "$MODDIR"
: >"$MODDIR/load-order"
for p in "${ORDER[@]}"; do
  rel=${p%.xz}
  rel=${rel%.zst}
  rel=${rel%.gz}
  mkdir -p "$MODDIR/$(dirname "$rel")"
  case "$p" in
  *.ko.xz) xz -dc "$MODROOT/$p" >"$MODDIR/$rel" ;;
  *.ko.zst) zstd -q -dc "$MODROOT/$p" >"$MODDIR/$rel" ;;
  *.ko.gz) gzip -dc "$MODROOT/$p" >"$MODDIR/$rel" ;;
  *) cp "$MODROOT/$p" "$MODDIR/$rel" ;;
  esac
  echo "$rel" >>"$MODDIR/load-order"
done

find "$RD" -exec touch -h -d @0 {} +
(cd "$RD" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet --reproducible -o -H newc -R 0:0) | gzip -n -9 >"$WORK/initrd.img"
cp "$VMLINUZ" "$WORK/vmlinuz"

# ---- disk: MBR + FAT partition with syslinux, built without mounting ---------------------
SECTORS=$((DISK_MIB * 1024 * 1024 / 512))
# The last 32 MiB stay outside the partition: the acknowledged writer's
# records (/lib/nasvisor/acker) go there.
ACKER_SECTORS=65536
PART_SECTORS=$((SECTORS - PART_START - ACKER_SECTORS))
FAT=$WORK/fat.img
cat >"$WORK/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT nasvisor
PROMPT 0
TIMEOUT 0
LABEL nasvisor
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND console=tty0 $CMDLINE
EOF
mkfs.vfat -C -n NASVISOR -i 4e56534d -h "$PART_START" "$FAT" $((PART_SECTORS / 2)) >/dev/null
export MTOOLS_SKIP_CHECK=1
touch -d 2000-01-01T00:00:00Z "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg"
mcopy -m -i "$FAT" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::/
touch "$WORK/vmlinuz" "$WORK/initrd.img"
syslinux --install "$FAT"
DISK=$WORK/disk.raw
truncate -s "${DISK_MIB}M" "$DISK"
printf 'label: dos\nlabel-id: 0x4e56534d\nstart=%d, size=%d, type=e, bootable\n' "$PART_START" "$PART_SECTORS" |
  sfdisk --quiet --no-reread --no-tell-kernel "$DISK" >/dev/null
MBR=""
for f in /usr/lib/syslinux/mbr/mbr.bin /usr/lib/SYSLINUX/mbr.bin /usr/share/syslinux/mbr.bin; do
  [ -f "$f" ] && MBR=$f && break
done
[ -n "$MBR" ] || die "syslinux mbr.bin not found"
dd if="$MBR" of="$DISK" bs=440 count=1 conv=notrunc status=none
dd if="$FAT" of="$DISK" bs=512 seek="$PART_START" conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$DISK" "$WORK/$NAME.qcow2"

VSIZE=$(qemu-img info "$WORK/$NAME.qcow2" | sed -n 's/^virtual size:.*(\([0-9]*\) bytes).*/\1/p' | head -n 1)
[ "$VSIZE" = $((DISK_MIB * 1024 * 1024)) ] || die "unexpected virtual size '$VSIZE'"
SHA=$(sha256sum "$WORK/$NAME.qcow2" | cut -d' ' -f1)
cat >"$WORK/guest-image.json" <<EOF
{
  "name": "$NAME",
  "kernel-version": "$KVER",
  "kernel-package": "$KPKG=$KPKGVER",
  "kernel-cmdline": "$CMDLINE",
  "format": "qcow2",
  "os-family": "linux",
  "os-variant": "busybox",
  "cloud-init": true,
  "firmware": "bios",
  "ready-marker": "NASVISOR-READY",
  "virtual-size-bytes": $VSIZE,
  "sha256": "$SHA"
}
EOF

for f in vmlinuz initrd.img "$NAME.qcow2" guest-image.json; do
  mv -f "$WORK/$f" "$OUT/$f"
done
echo "$KEY" >"$OUT/.stamp"
log "built $OUT/$NAME.qcow2 (kernel $KVER, ${#ORDER[@]} modules, initrd $(du -k "$OUT/initrd.img" | cut -f1) KiB) in $(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
