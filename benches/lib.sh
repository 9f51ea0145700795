# Shared by the benchmark scripts (sourced, not run): starting a release
# nasvisord on loopback with a fresh data directory.
#
# start_daemon WORK PORT [EXTRA_TOML]
#   Writes WORK/cfg.toml (data in WORK/data, the API on 127.0.0.1:PORT, TCG,
#   the built plugins and keys, the HA lease in WORK/lease, then
#   EXTRA_TOML), starts nasvisord (its
#   output in WORK/out and WORK/err) and waits for its first-start banner.
#   Sets daemon_pid and token (the bootstrap admin token), and exports
#   NASVISOR_ENDPOINT, NASVISOR_TOKEN and NASVISOR_DATA_DIR for the CLI.
#   NASVISOR_BIN_DIR (default target/release), NASVISOR_PLUGIN_DIR and
#   NASVISOR_BUILD_PUBKEY (default target/plugins, target/keys/build.pub)
#   say where the daemon and the plugins are.
start_daemon() {
  local work=$1 port=$2 extra=${3:-}
  local root=$PWD
  # The HA lease (and so the daemon's watchdog, which ends when the lease's
  # directory is gone) in WORK, unless EXTRA_TOML places it: a script that
  # removes WORK leaves no watchdog behind.
  case $extra in
    *"[cluster]"*) ;;
    *) extra="[cluster]
ha-lease-dir = \"$work/lease\"
$extra" ;;
  esac
  local bin=${NASVISOR_BIN_DIR:-target/release}
  local plugins=${NASVISOR_PLUGIN_DIR:-$root/target/plugins}
  local keys
  keys=$(dirname "${NASVISOR_BUILD_PUBKEY:-$root/target/keys/build.pub}")
  cat > "$work/cfg.toml" <<TOML
data-dir = "$work/data"
[host]
name = "bench"
[api]
listen = "127.0.0.1:$port"
[vm]
accel = "tcg"
[plugins]
dir = "$plugins"
trusted-keys-dir = "$keys"
$extra
TOML
  "$bin/nasvisord" --config "$work/cfg.toml" --log warn > "$work/out" 2> "$work/err" &
  daemon_pid=$!
  for _ in $(seq 1 600); do grep -q "admin token" "$work/out" 2>/dev/null && break; sleep 0.1; done
  token=$(sed -n 's/^admin token (shown once, store it now): //p' "$work/out")
  [ -n "$token" ] || { cat "$work/err" >&2; return 1; }
  export NASVISOR_ENDPOINT="https://127.0.0.1:$port" NASVISOR_TOKEN="$token" NASVISOR_DATA_DIR="$work/data"
}

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m }'; }
