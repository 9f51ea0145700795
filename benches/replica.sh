#!/usr/bin/env bash
# What a synchronous replica costs a guest's writes: one QEMU with a plain
# and a replicated data disk (512 MiB qcow2 each; the replica served by a
# qemu-storage-daemon on loopback over TLS), timed in turns through the
# guest's devices (host/vm/tests/replica.rs, replica_write_cost): a 4 KiB
# write plus flush, and a 1 MiB write; and the same on a plain NBD disk on
# the same link and server (one round trip to the passive host, no local
# copy). Prints the medians and ranges and the ratios replicated/plain and
# replicated/NBD, all measured in the same run. Then the replica is lost,
# 32 MiB are written without it, and it is brought back by a resume (only
# what it missed) and by a full copy, both timed (RESUME and FULL lines).
# Usage: benches/replica.sh [rounds]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-200}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
NASVISOR_BENCH_ROUNDS=$rounds cargo test --release -q -p nasvisor-vm --test replica \
  -- --ignored --nocapture replica_write_cost 2>&1 | tee "$out" | grep -E '^(ATTACH|RESUME|FULL)' || true
grep -q '^REPLICA' "$out" || { cat "$out"; exit 1; }
grep '^REPLICA' "$out" | python3 -c '
import sys, statistics
cols = {}
for line in sys.stdin:
    for kv in line.split()[1:]:
        k, v = kv.split("=", 1)
        if k != "round":
            cols.setdefault(k, []).append(float(v))
n = len(cols["plain_sync_ms"])
print(f"medians (min-max) over {n} rounds, milliseconds:")
for k in ("plain_sync_ms", "replicated_sync_ms", "nbd_sync_ms", "plain_1m_ms", "replicated_1m_ms", "nbd_1m_ms"):
    v = cols[k]
    print(f"  {k:20s} {statistics.median(v):8.3f}  ({min(v):.3f}-{max(v):.3f})")
for what in ("sync", "1m"):
    p = statistics.median(cols[f"plain_{what}_ms"])
    r = statistics.median(cols[f"replicated_{what}_ms"])
    b = statistics.median(cols[f"nbd_{what}_ms"])
    print(f"  ratio replicated/plain ({what}): {r / p:.2f}; replicated/NBD: {r / b:.2f}; NBD/plain: {b / p:.2f}")
'
