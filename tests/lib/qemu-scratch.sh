# shellcheck shell=bash
# Shared by the QEMU boot tests (tests/guest-image/boot-test.sh,
# tests/appliance/lib.sh): a scratch directory T under target/tmp, and
# QPID, the QEMU a test started, stopped by its own pid (stop_qemu). On
# exit QEMU is stopped, fd 5 (a monitor fifo) closed and T removed.
# Sourced with ROOT (the repository root) and NAME (T's prefix) set.

mkdir -p "$ROOT/target/tmp"
T=$(mktemp -d "$ROOT/target/tmp/$NAME.XXXXXX")
QPID=""
stop_qemu() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$QPID" 2>/dev/null || true
  fi
  if [ -n "$QPID" ]; then wait "$QPID" 2>/dev/null || true; fi
  QPID=""
}
cleanup() {
  stop_qemu
  exec 5>&- 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
