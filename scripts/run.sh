#!/usr/bin/env bash
# Sets up the machine, builds everything and runs nasvisord on its embedded
# defaults, pointed at this checkout's freshly built and signed plugins and
# bundled guest image. State goes to target/run/data (NASVISOR_DATA_DIR
# overrides it). Extra arguments go to nasvisord (e.g. --listen ADDR, --check).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build.sh

data="${NASVISOR_DATA_DIR:-$PWD/target/run/data}"
mkdir -p "$(dirname "$data")"
cfg="$PWD/target/run/nasvisord.toml"
# Only the paths of this checkout differ from the embedded defaults.
cat > "$cfg" <<TOML
data-dir = "$data"

[[images.bundled]]
name = "nasvisor-mini"
path = "$PWD/target/guest/nasvisor-mini.qcow2"
metadata = "$PWD/target/guest/guest-image.json"

[plugins]
dir = "$PWD/target/plugins"
trusted-keys-dir = "$PWD/target/keys"
TOML

echo "nasvisord: config $cfg, data $data"
echo "CLI: export NASVISOR_DATA_DIR=$data NASVISOR_TOKEN=<the token printed below on the first start>"
exec target/release/nasvisord --config "$cfg" "$@"
