#!/usr/bin/env bash
# Idempotent machine setup for nasvisor (Debian 12, run as root or with sudo).
# Installs every system package the build and the tests need, with
# --no-install-recommends. Safe to run again: it only installs what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Packages from bookworm main / security.
PKGS=(
  # wasm-capable compiler for the plugins (see shared/TOOLCHAIN.md section 1)
  rustc-web cargo-web rust-web-src lld-19
  # networking primitives used by the daemon and the tests
  iproute2 iputils-ping
  # NoCloud seed building (VFAT image) and the bundled guest's initramfs
  dosfstools mtools cpio busybox-static syslinux syslinux-common fdisk xz-utils zstd
  # the firmware install reads a slot image (host/firmware/tests/install.rs
  # builds one with mkfs.erofs; fsck.erofs extracts where mount cannot)
  erofs-utils
  # UEFI firmware for guests, cloud-init as the user-data validator
  ovmf cloud-init
  # the admin endpoint's load benchmark (benches/api-load.sh)
  wrk curl
  # the web console's browser test (host/nasvisord/tests/web_console.rs):
  # headless Chromium driven through chromedriver
  chromium chromium-driver
  # the API fuzzer's venv (benches/fuzz-api.sh), on Debian's own Python
  python3-venv
  # the appliance image (scripts/build-firmware.sh, docs/appliance.md): the
  # Debian root, the erofs slots, systemd-boot for the ESP, strip
  # (erofs-utils is above)
  mmdebstrap systemd-boot-efi binutils
  # UEFI Secure Boot of the appliance (docs/firmware.md): its boot chain
  # signed with sbsign (python3-virt-firmware, from backports below,
  # enrolls the keys in OVMF's variables for the tests)
  sbsigntool openssl
  # a disk that stops answering, for the HA tests (a FUSE pass-through
  # whose daemon a test stops: host/vm/tests/replica.rs, tests/ha.rs)
  bindfs
)
# Packages that must match qemu-utils 10.x, from bookworm-backports; and
# virt-fw-vars (bookworm has no python3-virt-firmware).
BPO_PKGS=(qemu-system-x86 qemu-utils python3-virt-firmware)

missing() {
  local out=()
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      out+=("$p")
    fi
  done
  echo "${out[@]:-}"
}

updated=0
apt_update() {
  if [ "$updated" -eq 0 ]; then
    $SUDO apt-get update -qq
    updated=1
  fi
}

# bookworm-backports source: reuse the mirror URI already configured for bookworm.
BPO_LIST=/etc/apt/sources.list.d/nasvisor-backports.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$uri" ]; then
    uri=$(awk '/^deb / && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  if [ -n "$uri" ]; then
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
      | $SUDO tee "$BPO_LIST" >/dev/null
    updated=0
  else
    echo "setup: cannot find the Debian mirror URI to add bookworm-backports" >&2
  fi
fi

m=$(missing "${PKGS[@]}")
if [ -n "$m" ]; then
  apt_update
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $m
fi

need_bpo=0
if [ -n "$(missing "${BPO_PKGS[@]}")" ]; then need_bpo=1; fi
if ! qemu-system-x86_64 --version 2>/dev/null | grep -q "version 10"; then need_bpo=1; fi
if [ "$need_bpo" -eq 1 ]; then
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports "${BPO_PKGS[@]}"
fi

echo "setup: system packages present"

# The API fuzzer (benches/fuzz-api.sh): schemathesis from PyPI in a venv of
# Debian's Python (not a pyenv or other python3 first on PATH), every
# package pinned in scripts/fuzz-requirements.txt. Skipped when the pinned
# version is there.
VENV=/opt/nasvisor-venv
REQS="$(dirname "$0")/fuzz-requirements.txt"
pinned=$(sed -n 's/^schemathesis==//p' "$REQS")
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $pinned"; then
  $SUDO /usr/bin/python3 -m venv "$VENV"
  $SUDO "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
fi
echo "setup: schemathesis $pinned in $VENV"

# The bundled guest image (Debian's cloud kernel + busybox), used by the demo
# and the tests. Skips itself when up to date.
bash "$(dirname "$0")/build-guest-image.sh"
