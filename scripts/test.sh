#!/usr/bin/env bash
# Sets up the machine, builds everything (plugins included) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The appliance image's Debian root (mmdebstrap: downloads and unpacks,
# mostly waiting on I/O) is built beside the Rust build; the appliance test
# (scripts/test-boots.sh) waits for its status file. A cached root is reused.
mkdir -p target
rm -f target/firmware-cache.status
(
  scripts/build-firmware.sh --cache-only >target/firmware-cache.log 2>&1
  echo $? >target/firmware-cache.status
) &
cargo fmt --all --check
# What the script-level tests need: the binaries and the signed plugins.
bash scripts/build.sh

export NASVISOR_PLUGIN_DIR="$PWD/target/plugins"
export NASVISOR_BUILD_PUBKEY="$PWD/target/keys/build.pub"
# The script-level tests (the bundled guest's boots, the API fuzz, the
# appliance image under QEMU, the interruption sample) run beside the lints
# and the test build, in their own process group: stopped as a group if
# this script stops early. Compiling keeps both cores busy while they
# mostly wait on one TCG guest; the cargo tests run after both, alone.
boots_log=target/test-boots.log
boots_results=target/test-boots.results
rm -f "$boots_results"
setsid bash scripts/test-boots.sh "$boots_results" >"$boots_log" 2>&1 &
boots=$!
log=$(mktemp)
trap 'kill -TERM -- "-$boots" 2>/dev/null || true; rm -f "$log"' EXIT

# Lints: clippy (the workspace's lints, warnings denied).
cargo clippy --release --workspace --all-targets -- -D warnings
# `cargo test` must reuse what `cargo build --bins` compiled (one feature
# set for both; host/workspace-hack/Cargo.toml).
bash scripts/check-features.sh
# The core and the API contract compile no HTTP or TLS stack: those live in
# the crates that serve or fetch (api, cluster-net, download, tls).
for crate in nasvisor-core nasvisor-api-types; do
  if found=$(cargo tree -p "$crate" -e normal --prefix none | grep -E '^(hyper|rustls|rcgen|ureq)[ -]'); then
    echo "$crate depends on an HTTP/TLS stack (normal dependencies):" >&2
    echo "$found" | sort -u >&2
    exit 1
  fi
done
cargo test --release --workspace --no-run

echo "waiting for the script-level tests (scripts/test-boots.sh, $boots_log)"
wait "$boots" || true
cat "$boots_log"

set +e
cargo test --release --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo's own last line is a doc-test
# binary's, often "0 passed"); each script-level test counts as one.
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { while ((getline line < results) > 0) { split(line, r, " "); if (r[2] == 0) p++; else { f++; failed = failed " " r[1] } }
           if (failed != "") print "script-level tests failed:" failed " (" blog ")"
           printf "%d passed, %d failed\n", p, f }' results="$boots_results" blog="$boots_log" "$log"
# Every script-level test recorded, and each passed.
[ "$(wc -l <"$boots_results")" -eq 5 ] || { echo "scripts/test-boots.sh did not finish ($boots_log)" >&2; exit 1; }
if awk '$2 != 0 { bad = 1 } END { exit !bad }' "$boots_results"; then exit 1; fi
exit "$status"
