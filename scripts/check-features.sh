#!/usr/bin/env bash
# Fails when `cargo test` would compile a dependency with other features
# than `cargo build --bins` does: each such crate, and everything above it,
# would then be compiled twice by the suite. The fix is an entry in
# host/workspace-hack/Cargo.toml asking for the features listed below.
set -euo pipefail
cd "$(dirname "$0")/.."

bins=$(mktemp)
all=$(mktemp)
trap 'rm -f "$bins" "$all"' EXIT
# One line per package and feature set; (*) marks a repeat.
cargo tree --workspace -e normal,build -f '{p} [{f}]' --prefix none | grep -v '(\*)' | sort -u > "$bins"
cargo tree --workspace -e normal,build,dev -f '{p} [{f}]' --prefix none | grep -v '(\*)' | sort -u > "$all"
# A package the binaries use must appear with the same features in both.
if differ=$(comm -23 "$bins" "$all") && [ -n "$differ" ]; then
  echo "check-features: the test build would compile these with other features than the binaries' build:" >&2
  echo "$differ" | sed 's/^/  bins:  /' >&2
  echo "$differ" | awk '{print $1 " " $2}' | while read -r name version; do
    grep -F "$name $version " "$all" | sed 's/^/  tests: /' >&2
  done
  echo "ask for the tests' features in host/workspace-hack/Cargo.toml" >&2
  exit 1
fi
echo "check-features: cargo build and cargo test share one feature set"
