#!/usr/bin/env bash
# Sets up the machine, builds everything (plugins included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build.sh

export NASVISOR_PLUGIN_DIR="$PWD/target/plugins"
export NASVISOR_BUILD_PUBKEY="$PWD/target/keys/build.pub"
# The bundled guest image: its YAML reader, then real boots under QEMU.
bash tests/guest-image/yaml-test.sh
bash tests/guest-image/boot-test.sh

cargo test --release --workspace --no-fail-fast
