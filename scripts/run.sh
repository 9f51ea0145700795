#!/usr/bin/env bash
# Sets up the machine, builds everything and runs nasvisord on its embedded
# defaults, pointed at this checkout's freshly built and signed plugins.
# Extra arguments go to nasvisord (e.g. --check, --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build.sh

exec target/release/nasvisord \
  --data-dir "${NASVISOR_DATA_DIR:-$PWD/target/run/data}" \
  --plugin-dir "$PWD/target/plugins" \
  --trusted-keys-dir "$PWD/target/keys" \
  "$@"
