#!/usr/bin/env bash
# Builds everything: the host binaries (release) and every plugin under
# plugins/ and tests/plugins/ into signed WebAssembly components.
# Cached: cargo reuses target/, the wasm std build lives in target/wasm.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --bins

NV=target/release/nasvisor
KEYDIR=target/keys
mkdir -p "$KEYDIR"
if [ ! -f "$KEYDIR/build.key" ]; then
  # A per-checkout development signing key. Vendors sign with their own.
  "$NV" plugin keygen --out "$KEYDIR/build" >/dev/null
fi
# Development UEFI Secure Boot keys (PK, KEK, db) for the appliance's boot
# chain (scripts/build-firmware.sh --uefi-keys). Vendors use their own.
bash scripts/uefi-keys.sh "$KEYDIR/uefi"

# The default plugins, installed by scripts/run.sh.
"$NV" plugin build plugins/scheduler plugins/ha-policy plugins/sha plugins/os-installer \
  --key "$KEYDIR/build.key" --out-dir target/plugins
# Adversarial plugins for the sandbox tests only.
test_crates=()
for d in tests/plugins/*/; do test_crates+=("${d%/}"); done
"$NV" plugin build "${test_crates[@]}" --key "$KEYDIR/build.key" --out-dir target/test-plugins
