#!/usr/bin/env bash
# Load benchmark of the admin endpoint (HTTPS keep-alive, loopback), with
# `wrk -t2 -c64`: nasvisord (release) with 100 VMs defined, against
#   - authenticated GET /api/v1/vms (100 VMs) and GET /api/v1/hosts;
#   - authenticated GET /metrics (a Prometheus scrape, 100 VMs);
#   - unauthenticated GET /healthz on the same server;
#   - the baseline in the same run: a plain hyper + rustls server with the
#     same TLS configuration (host/api/examples/hello_baseline.rs), answering
#     `hello`, and answering the very bytes of the /api/v1/vms answer (so the
#     cost of carrying that answer stands apart from the cost of making it).
# Each target is run R times, interleaved; the medians are printed, with
# requests/s and p99 latency, and the ratio against the baseline.
# The daemon's `[api.limits] max-connections-per-address` is raised to 128
# for it: the default 32 would close half of wrk's 64 connections.
# Usage (as root): benches/api-load.sh [R] [seconds]   (default 3 runs of 10 s).
# NASVISOR_BENCH_PERF=1 also profiles nasvisord (perf record -g) during one
# more run of NASVISOR_BENCH_PERF_PATH (default /api/v1/vms) and prints the
# top of the report (NASVISOR_BENCH_PERF_CALLERS=1: with the callers).
# Needs scripts/build.sh and wrk (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk is missing: run scripts/setup.sh" >&2; exit 1; }
cargo build --release -q -p nasvisord -p nasvisor-cli
cargo build --release -q -p nasvisor-api --example hello_baseline
root=$PWD
work=$(mktemp -d)
port=$((20000 + RANDOM % 10000))
hello=$((port + 10000))
hello_big=$((port + 20000))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/lib.sh
. benches/lib.sh
start_daemon "$work" "$port" "[api.limits]
max-connections-per-address = 128"
daemon=$daemon_pid
pids+=($daemon)
for i in $(seq -w 1 100); do
  target/release/nasvisor vm create "vm$i" --vcpus 1 --memory 128 > /dev/null
done
curl -sfk -H "Authorization: Bearer $token" "https://127.0.0.1:$port/api/v1/vms" > "$work/vms.json"
n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/vms.json")
[ "$n" = 100 ] || { echo "expected 100 VMs, the API lists $n" >&2; exit 1; }
echo "GET /api/v1/vms answers $(stat -c %s "$work/vms.json") bytes for 100 VMs"

target/release/examples/hello_baseline "127.0.0.1:$hello" "$work/hello" > "$work/hello.out" &
pids+=($!)
target/release/examples/hello_baseline "127.0.0.1:$hello_big" "$work/hello-big" "$work/vms.json" > "$work/hello-big.out" &
pids+=($!)
for f in hello hello-big; do
  for _ in $(seq 1 100); do grep -q listening "$work/$f.out" 2>/dev/null && break; sleep 0.1; done
done

# name|url|auth
targets=(
  "vms|https://127.0.0.1:$port/api/v1/vms|yes"
  "hosts|https://127.0.0.1:$port/api/v1/hosts|yes"
  "metrics|https://127.0.0.1:$port/metrics|yes"
  "healthz|https://127.0.0.1:$port/healthz|no"
  "hello|https://127.0.0.1:$hello/|no"
  "hello-vms-bytes|https://127.0.0.1:$hello_big/|no"
)
: > "$work/samples"
for r in $(seq 1 "$runs"); do
  for t in "${targets[@]}"; do
    IFS='|' read -r name url auth <<<"$t"
    hdr=()
    [ "$auth" = yes ] && hdr=(-H "Authorization: Bearer $token")
    out=$(wrk -t2 -c64 -d"${secs}s" --latency "${hdr[@]}" "$url")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
    echo "SAMPLE run=$r target=$name rps=$rps p99=$p99 ${errs:+errors=\"$errs\"}" | tee -a "$work/samples"
  done
done
if [ "${NASVISOR_BENCH_PERF:-0}" = 1 ]; then
  perf record -q -F 199 --call-graph dwarf,16384 -p "$daemon" -o "$work/perf.data" -- sleep "$secs" &
  perf_pid=$!
  wrk -t2 -c64 -d"${secs}s" -H "Authorization: Bearer $token" \
    "https://127.0.0.1:$port${NASVISOR_BENCH_PERF_PATH:-/api/v1/vms}" > /dev/null
  wait "$perf_pid" || true
  if [ "${NASVISOR_BENCH_PERF_CALLERS:-0}" = 1 ]; then
    perf report -i "$work/perf.data" --children --stdio --percent-limit 4 -g caller,4,callee,function,percent 2>&1 \
      | grep -v '^#' | grep -v '^$' | head -300
  else
    perf report -i "$work/perf.data" --no-children --stdio --percent-limit 1.5 -g none 2>&1 \
      | grep -v '^#' | grep -v '^$' | head -40
  fi
fi
echo
python3 - "$work/samples" <<'PY'
import re, statistics, sys
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
rows = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
    rows.setdefault(kv["target"], []).append((float(kv["rps"]), ms(kv["p99"])))
base = statistics.median(r for r, _ in rows["hello"])
print("%-16s %12s %10s %14s" % ("target", "requests/s", "p99 ms", "vs hello (rps)"))
for name, v in rows.items():
    rps = statistics.median(r for r, _ in v)
    p99 = statistics.median(p for _, p in v)
    print("%-16s %12.0f %10.2f %13.1fx" % (name, rps, p99, base / rps))
PY
