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

# firmware_layout WORK IMAGE: an appliance's firmware layout in files for
# a daemon on this machine: two 1 GiB sparse slot files, an ESP directory
# with slot a's entry (version 1.0.0) and kernel files, a command line
# naming slot a, the build key trusted; then a signed `reboot` bundle of
# IMAGE at WORK/bundle.nvfw (version 1.0.1, product and board `bench`).
# Sets fw_toml (the [firmware] section for start_daemon).
firmware_layout() {
  local work=$1 img=$2
  local opts="root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a"
  mkdir -p "$work/esp/loader/entries" "$work/esp/nasvisor/a" "$work/trusted"
  truncate -s 1G "$work/slot-a.img" "$work/slot-b.img"
  printf 'title nasvisor 1.0.0 (slot a)\nversion 1.0.0\nlinux /nasvisor/a/vmlinuz\ninitrd /nasvisor/a/initrd.img\noptions %s\n' "$opts" \
    > "$work/esp/loader/entries/nasvisor-1-a.conf"
  echo "kernel of a" > "$work/esp/nasvisor/a/vmlinuz"
  echo "initrd of a" > "$work/esp/nasvisor/a/initrd.img"
  echo "$opts" > "$work/cmdline"
  cp target/keys/build.pub "$work/trusted/"
  "${NASVISOR_BIN_DIR:-target/release}/nasvisor" firmware build --payload "$img" --class reboot \
    --product bench --compatible bench --version 1.0.1 --key target/keys/build.key \
    --out "$work/bundle.nvfw" >/dev/null
  fw_toml="[firmware]
enabled = true
esp = \"$work/esp\"
slot-a = \"$work/slot-a.img\"
slot-b = \"$work/slot-b.img\"
cmdline = \"$work/cmdline\"
trusted-keys-dir = \"$work/trusted\"
product = \"bench\"
board = \"bench\""
}
