#!/usr/bin/env bash
# Fuzzes the running admin API from its own OpenAPI document with
# schemathesis (scripts/setup.sh installs it in a venv): a release nasvisord
# on loopback with a fresh data directory, its /api/v1/openapi.json, and
# three runs of `schemathesis run` against it:
#   1. with no credential (random Authorization headers included);
#   2. as a viewer (a user and an API token made for the run);
#   3. as an admin (the bootstrap token), last, since it changes things.
# Checks on every answer: no 5xx (not_a_server_error), the status code,
# content type, headers and body documented for it (the *_conformance
# checks), schema-invalid requests refused (negative_data_rejection), 405
# for methods a path does not have (unsupported_method), a refusal without
# or with a wrong credential (ignored_auth), and no answer the caller's
# role must not get (nasvisor_no_privilege_leak in benches/fuzz-api-hooks.py:
# no 2xx to the no-credential run but for /healthz and the login, none to
# the viewer run for an operation whose x-nasvisor-role is operator or
# admin). At the end the daemon must still run and answer /healthz.
#
# What keeps the machine safe, instead of excluding routes (every route is
# fuzzed; there is no host shutdown route):
#   - The whole run (daemon, CLI, schemathesis, the QEMUs the daemon starts)
#     is in a network namespace of its own with only loopback up
#     (`unshare --net`): vswitches make their bridges there, and a cluster
#     join, an image import from a URL or the cluster endpoint reach
#     nothing beyond loopback.
#   - Every absolute path in a request body (a pool's directory, which the
#     server creates and makes 0700, an image or volume file to import) is
#     moved into the run's sandbox directory by the hook file's before_call.
#   - A console read asked to `follow` is sent without it (it would stream
#     until the client goes away).
#   - The run does not lock itself out: a revocation of its own tokens, or
#     a change or deletion of its users (admin and the viewer), is sent for
#     another id or name (the fuzzer finds the ids in GET /api/v1/tokens).
#   - On exit the daemon is stopped by its pid, then every process whose
#     command line names the run's data directory (the QEMUs, their storage
#     daemons: VMs outlive nasvisord) is killed by its pid, and the
#     temporary directory is removed.
# The run is bounded: `examples` test cases per operation and phase, a
# request timeout, and a time limit per run.
#
# Usage (as root): benches/fuzz-api.sh [examples] [seed]   (default 10, a
# random seed, printed). Prints one SUMMARY line per run; the schemathesis
# logs are kept in ${CARGO_TARGET_DIR:-target}/fuzz-api/. Exits non-zero
# on any failure. NASVISOR_BIN_DIR=DIR uses the nasvisord and nasvisor
# there instead of building them; NASVISOR_FUZZ_SCHEMA=FILE fuzzes from
# that document instead of the daemon's (to try a change of it first).
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-10}
seed=${2:-$((RANDOM * 32768 + RANDOM))}
venv=${NASVISOR_VENV:-/opt/nasvisor-venv}
st=$venv/bin/schemathesis
out_dir=${CARGO_TARGET_DIR:-$PWD/target}/fuzz-api

if [ -z "${NASVISOR_FUZZ_IN_NETNS:-}" ]; then
  [ -x "$st" ] || { echo "schemathesis is missing: run scripts/setup.sh" >&2; exit 1; }
  command -v unshare >/dev/null || { echo "unshare (util-linux) is missing" >&2; exit 1; }
  if [ -z "${NASVISOR_BIN_DIR:-}" ]; then
    cargo build --release -q -p nasvisord -p nasvisor-cli
    NASVISOR_BIN_DIR=${CARGO_TARGET_DIR:-$PWD/target}/release
  fi
  export NASVISOR_BIN_DIR NASVISOR_FUZZ_IN_NETNS=1
  exec unshare --net -- bash "$0" "$examples" "$seed"
fi

ip link set lo up
bin=$NASVISOR_BIN_DIR
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  fi
  # What the daemon started and left running names its data directory.
  local pids
  pids=$(ps -eo pid=,args= | awk -v d="$work/data" -v me=$$ 'index($0, d) && $1 != me { print $1 }')
  if [ -n "$pids" ]; then
    echo "stopping what the daemon left running: $(echo $pids)"
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
      # shellcheck disable=SC2086
      kill -0 $pids 2>/dev/null || break
      sleep 0.1
    done
  fi
  [ -f "$work/err" ] && cp "$work/err" "$out_dir/nasvisord.log"
  rm -rf "$work"
}
trap cleanup EXIT
# Stopped by a signal (scripts/test-boots.sh), the clean-up still runs.
trap 'exit 143' TERM INT

# shellcheck source=benches/lib.sh
. benches/lib.sh
start_daemon "$work" "$port" "[cluster]
ha-lease-dir = \"$work/lease\""
url="https://127.0.0.1:$port"
ca="$work/data/tls/cert.pem"
mkdir -p "$work/sandbox" "$out_dir"

# The viewer: a user and an API token of its own.
viewer="fuzz-viewer-$RANDOM"
echo "fuzz viewer password $RANDOM$RANDOM" | "$bin/nasvisor" user create "$viewer" --role viewer --password-stdin > /dev/null
viewer_token=$("$bin/nasvisor" token create fuzz --user "$viewer" -o json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
if [ -n "${NASVISOR_FUZZ_SCHEMA:-}" ]; then
  cp "$NASVISOR_FUZZ_SCHEMA" "$work/openapi.json"
else
  curl -sf --cacert "$ca" -H "Authorization: Bearer $token" "$url/api/v1/openapi.json" > "$work/openapi.json"
fi
ops=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(sum(len(m) for m in d["paths"].values()))' "$work/openapi.json")
echo "fuzzing $ops operations of $url, $examples examples each, seed $seed"

# What the fuzzer can find by name (half of the path parameters it sends
# are taken from these, the rest generated): a pool with a volume and a
# snapshot, a vswitch, a stopped VM with a disk and a NIC, an image and its
# import job, this host, the plugin worlds.
api() { # METHOD PATH [JSON]: the answer's body; fails on an error status
  curl -sS --fail-with-body --cacert "$ca" -H "Authorization: Bearer $token" -X "$1" ${3:+-H "Content-Type: application/json" -d "$3"} "$url$2"
}
json() { python3 -c 'import json, sys; a = json.load(sys.stdin); print(a[sys.argv[1]]) if sys.argv[1] in a else sys.exit(f"no {sys.argv[1]} in {a}")' "$1"; }
api POST /api/v1/pools "{\"name\": \"fuzz\", \"path\": \"$work/sandbox/pool-fuzz\"}" > /dev/null
api POST /api/v1/pools/fuzz/volumes '{"name": "vol", "size_mib": 16}' > /dev/null
api POST /api/v1/pools/fuzz/volumes/vol/snapshots '{"name": "snap"}' > /dev/null
api POST /api/v1/vswitches '{"name": "fuzzbr"}' > /dev/null
# (A host short of disk or memory places no VM: the run goes on without.)
if ! vm_id=$(api POST /api/v1/vms '{"name": "fuzz-vm", "vcpus": 1, "memory_mib": 128,
  "disks": [{"pool": "fuzz", "size_mib": 16}], "nics": [{"vswitch": "fuzzbr"}]}' | json id); then
  echo "no VM to fuzz by name (above); going on without one" >&2
  vm_id=fuzz-vm
fi
qemu-img create -q -f qcow2 "$work/sandbox/fuzz-img.qcow2" 16M
job_id=$(api POST /api/v1/images "{\"name\": \"fuzz-img\", \"path\": \"$work/sandbox/fuzz-img.qcow2\"}" | json id)
cat > "$work/schemathesis.toml" <<TOML
[dictionaries]
id = { values = ["$vm_id", "fuzz-vm", "$job_id"] }
name = { values = ["fuzz", "fuzzbr", "fuzz-img", "fuzz-vm"] }
pool = { values = ["fuzz"] }
volume = { values = ["vol"] }
snapshot = { values = ["snap"] }
host = { values = ["bench"] }
world = { values = ["scheduler", "ha-policy", "sha", "os-installer"] }

[parameters]
"path.id" = { dictionary = "id", probability = 0.5 }
"path.name" = { dictionary = "name", probability = 0.5 }
"path.pool" = { dictionary = "pool", probability = 0.5 }
"path.volume" = { dictionary = "volume", probability = 0.5 }
"path.snapshot" = { dictionary = "snapshot", probability = 0.5 }
"path.host" = { dictionary = "host", probability = 0.5 }
"path.node" = { dictionary = "host", probability = 0.5 }
"path.world" = { dictionary = "world", probability = 0.5 }
TOML

status=0
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance
checks+=,response_schema_conformance,negative_data_rejection,unsupported_method,ignored_auth
checks+=,nasvisor_no_privilege_leak

# run_fuzz AS [schemathesis options]: one run, its log in $out_dir/AS.log.
run_fuzz() {
  local as=$1
  shift
  local started rc=0
  started=$(date +%s.%N)
  NASVISOR_FUZZ_AS=$as NASVISOR_FUZZ_SANDBOX="$work/sandbox" \
    NASVISOR_FUZZ_KEEP_TOKENS="$token $viewer_token" NASVISOR_FUZZ_KEEP_USERS="admin $viewer" \
    SCHEMATHESIS_HOOKS="$hooks" \
    timeout 900 "$st" --config-file "$work/schemathesis.toml" run "$work/openapi.json" --url "$url" --tls-verify "$ca" \
    --checks "$checks" --max-examples "$examples" --seed "$seed" --workers 2 \
    --request-timeout 30 --generation-database none --no-color \
    --report ndjson --report-ndjson-path "$out_dir/$as.ndjson" \
    "$@" > "$out_dir/$as.log" 2>&1 || rc=$?
  local secs
  secs=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.0f}')" "$started")
  python3 - "$out_dir/$as.ndjson" "$as" "$rc" "$secs" <<'PY'
import collections, json, sys
path, who, rc, secs = sys.argv[1:]
ops, statuses, failed = set(), collections.Counter(), collections.Counter()
for line in open(path):
    body = json.loads(line).get("ScenarioFinished")
    if not body:
        continue
    rec = body.get("recorder", {})
    label = rec.get("label") or ""
    if label.split(" ")[0] in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        ops.add(label)
    for it in rec.get("interactions", {}).values():
        code = (it.get("response") or {}).get("status_code")
        statuses[f"{code // 100}xx" if code else "none"] += 1
    for checks in rec.get("checks", {}).values():
        for c in checks:
            if str(c.get("status", "")).lower() == "failure":
                failed[(c.get("name"), label)] += 1
answers = " ".join(f"{k}={v}" for k, v in sorted(statuses.items()))
print(f"SUMMARY as={who} operations={len(ops)} requests={sum(statuses.values())} {answers} "
      f"failing_checks={len(failed)} seconds={secs} exit={rc}")
for (name, label), n in sorted(failed.items()):
    print(f"  FAILED {name}: {label} ({n}x)")
PY
  if [ "$rc" -ne 0 ]; then
    status=1
    tail -n 60 "$out_dir/$as.log"
  fi
}

# schemathesis and hypothesis keep files in the working directory.
hooks=$PWD/benches/fuzz-api-hooks.py
cd "$work"

# The privilege check must catch a leak: the admin token presented as a
# viewer's has to fail it on an admin-only read.
if NASVISOR_FUZZ_AS=viewer SCHEMATHESIS_HOOKS="$hooks" \
  "$st" --config-file "$work/schemathesis.toml" run "$work/openapi.json" --url "$url" \
  --tls-verify "$ca" --checks nasvisor_no_privilege_leak --include-operation-id listUsers \
  --phases fuzzing --max-examples 1 --generation-database none --no-color \
  -H "Authorization: Bearer $token" > "$out_dir/canary.log" 2>&1; then
  echo "the privilege check let an admin-only answer to a viewer pass" >&2
  status=1
fi

# No credential: random Authorization headers are generated (all refused).
run_fuzz none
run_fuzz viewer -H "Authorization: Bearer $viewer_token" --generation-with-security-parameters false
run_fuzz admin -H "Authorization: Bearer $token" --generation-with-security-parameters false

if ! kill -0 "$daemon_pid" 2>/dev/null; then
  echo "nasvisord died during the run:" >&2
  tail -n 40 "$work/err" >&2
  status=1
elif ! curl -sf --max-time 10 --cacert "$ca" "$url/healthz" > /dev/null; then
  echo "nasvisord no longer answers /healthz" >&2
  status=1
else
  echo "nasvisord still runs and answers /healthz"
fi
grep -E "panicked|ERROR" "$work/err" | head -n 20 || true
exit "$status"
