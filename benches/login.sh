#!/usr/bin/env bash
# Login cost and brute-force throttling, against a release nasvisord on
# loopback (HTTPS keep-alive, wrk with a Lua script that POSTs logins and
# counts the answers by status):
#   1. login: user `bench` with its right password, `wrk -t2 -c2` (each
#      success clears the throttle): logins/s and latency, i.e. the cost of
#      argon2id (m=19 MiB, t=2, p=1) plus TLS, HTTP and the session.
#      Baseline in the same run: an authenticated GET /api/v1/auth/whoami
#      with an API token (SHA-256 + two in-memory reads) at the same
#      concurrency.
#   2. brute force: user `victim`, wrong passwords, `wrk -t2 -c8` for S
#      seconds from one address: how many passwords were checked (401)
#      and how many refused unchecked (429), against what the same run's
#      login rate would have checked without throttling.
# Usage (as root): benches/login.sh [runs] [seconds]   (default 3 runs of 10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk is missing: run scripts/setup.sh" >&2; exit 1; }
cargo build --release -q -p nasvisord -p nasvisor-cli
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh
start_daemon "$work" "$port"
for u in bench victim; do
  echo "$u password 1234" | target/release/nasvisor user create "$u" --role viewer --password-stdin > /dev/null
done
url="https://127.0.0.1:$port"

# POSTs BODY to the login and counts answers by status (all threads).
cat > "$work/login.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = args[1]
  counts = {}
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("counts")) do total[s] = (total[s] or 0) + n end
  end
  local out = {}
  for s, n in pairs(total) do table.insert(out, s .. "=" .. n) end
  table.sort(out)
  io.write("STATUS " .. table.concat(out, " ") .. "\n")
end
LUA

: > "$work/samples"
for r in $(seq 1 "$runs"); do
  out=$(wrk -t2 -c2 -d"${secs}s" --latency -s "$work/login.lua" "$url/api/v1/auth/login" \
    -- '{"user":"bench","password":"bench password 1234"}')
  echo "SAMPLE run=$r target=login rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out") p50=$(awk '$1 == "50%" { print $2 }' <<<"$out") p99=$(awk '$1 == "99%" { print $2 }' <<<"$out") $(grep '^STATUS' <<<"$out")" | tee -a "$work/samples"
  out=$(wrk -t2 -c2 -d"${secs}s" --latency -H "Authorization: Bearer $token" "$url/api/v1/auth/whoami")
  echo "SAMPLE run=$r target=whoami-token rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out") p50=$(awk '$1 == "50%" { print $2 }' <<<"$out") p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")" | tee -a "$work/samples"
done
brute=$((secs * 3))
out=$(wrk -t2 -c8 -d"${brute}s" -s "$work/login.lua" "$url/api/v1/auth/login" \
  -- '{"user":"victim","password":"a wrong guess"}')
echo "BRUTE seconds=$brute $(grep '^STATUS' <<<"$out")" | tee -a "$work/samples"
python3 - "$work/samples" <<'PY'
import re, statistics, sys
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
rows, brute = {}, None
for line in open(sys.argv[1]):
    if line.startswith("BRUTE"):
        brute = dict(re.findall(r"(\w+)=(\d+)", line))
        continue
    kv = dict(re.findall(r'(\w+)=(\S+)', line))
    rows.setdefault(kv["target"], []).append((float(kv["rps"]), ms(kv["p50"]), ms(kv["p99"])))
med = {t: tuple(statistics.median(x[i] for x in v) for i in range(3)) for t, v in rows.items()}
for t, (rps, p50, p99) in med.items():
    print(f"MEDIAN {t}: {rps:.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
print(f"a login costs {med['login'][1] / med['whoami-token'][1]:.0f}x a token-authenticated request (p50)")
checked, refused, secs = int(brute.get("401", 0)), int(brute.get("429", 0)), int(brute["seconds"])
unthrottled = med["login"][0] * secs
print(f"BRUTE FORCE {secs} s, one user, one address, 8 connections: {checked} passwords checked, "
      f"{refused} attempts refused unchecked (429); without throttling about {unthrottled:.0f} "
      f"would have been checked ({unthrottled / max(checked, 1):.0f}x more)")
PY
