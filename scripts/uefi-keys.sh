#!/usr/bin/env bash
# Makes a set of UEFI Secure Boot keys in DIR, unless it is there already:
#   PK.key PK.crt    the platform key (owns the board's key databases)
#   KEK.key KEK.crt  the key-exchange key (may change db)
#   db.key db.crt    the signing key of the boot chain (systemd-boot and the
#                    unified kernel images: scripts/build-firmware.sh --uefi-keys)
#   owner            the owner GUID the certificates are enrolled under
# RSA 2048 and SHA-256, self-signed X.509 (what UEFI firmware verifies), 10
# years. For development and the tests: a vendor keeps its own keys offline
# (docs/firmware.md, "Secure Boot").
#
#   scripts/uefi-keys.sh DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
if [ -f "$dir/db.crt" ] && [ -f "$dir/db.key" ] && [ -f "$dir/owner" ]; then exit 0; fi
command -v openssl >/dev/null || { echo "uefi-keys: openssl missing (run scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.new.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for k in PK KEK db; do
  openssl req -new -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -subj "/CN=nasvisor development $k/" -keyout "$tmp/$k.key" -out "$tmp/$k.crt" 2>/dev/null
  chmod 0600 "$tmp/$k.key"
done
cat /proc/sys/kernel/random/uuid >"$tmp/owner"
mv "$tmp"/* "$dir"/
echo "uefi-keys: made development Secure Boot keys in $dir"
