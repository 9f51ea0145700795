#!/usr/bin/env bash
# The suite's script-level tests, which need only what scripts/build.sh
# built: scripts/test.sh runs this beside the cargo test build (compiling
# keeps both cores busy, these mostly wait on one TCG guest), then runs the
# cargo tests on a quiet machine. Usage: test-boots.sh RESULTS
#
#   guest-yaml        the bundled guest's YAML reader (tests/guest-image)
#   guest-boot        the bundled guest image built and booted under QEMU
#   api-fuzz          the running API fuzzed from its OpenAPI document
#   appliance         the appliance image built from this tree, booted under
#                     QEMU + OVMF, signed bundles installed inside it, a
#                     broken update falling back by itself, a hung kernel
#                     reset by the board's watchdog, a power cut
#   interrupt-sample  installs of the slot image just built, killed at 10
#                     random points (200 points: BENCHMARKS.md)
#
# Each test's outcome is a line "NAME EXIT-STATUS" in RESULTS (one test each
# in the suite's count); their output goes to stdout. The appliance test
# waits for the appliance's Debian root that test.sh builds from its start
# (target/firmware-cache.status: the exit status of
# `build-firmware.sh --cache-only`, log target/firmware-cache.log).
# Stopped with SIGTERM to its process group, every test stops its QEMU and
# daemons by their pids (their EXIT traps).
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:?usage: test-boots.sh RESULTS}
: >"$results"
trap 'exit 143' TERM INT

run() {
  local name=$1 t rc
  shift
  t=$(date +%s)
  echo "==== $name: $*"
  "$@"
  rc=$?
  echo "==== $name: exit status $rc after $(($(date +%s) - t)) s"
  echo "$name $rc" >>"$results"
}

run guest-yaml bash tests/guest-image/yaml-test.sh
run guest-boot bash tests/guest-image/boot-test.sh
# The binaries just built (without it the script runs `cargo build`, which
# would wait for the test build's lock).
run api-fuzz env NASVISOR_BIN_DIR="$PWD/target/release" bash benches/fuzz-api.sh 10 1

status=target/firmware-cache.status
while [ ! -s "$status" ]; do sleep 2; done
if [ "$(cat "$status")" = 0 ]; then
  run appliance bash tests/appliance/install-test.sh
else
  echo "==== appliance: the appliance image's Debian root could not be built:"
  tail -n 30 target/firmware-cache.log
  echo "appliance 1" >>"$results"
fi
if [ -f target/firmware/rootfs-1.0.0.erofs ]; then
  run interrupt-sample bash benches/firmware-interrupt.sh 10
else
  echo "==== interrupt-sample: no slot image (the appliance test builds it)"
  echo "interrupt-sample 1" >>"$results"
fi
