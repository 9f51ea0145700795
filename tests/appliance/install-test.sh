#!/usr/bin/env bash
# Install test of the appliance image (docs/appliance.md, "The install
# test"): a signed `reboot` bundle installed inside the booted appliance
# through the API, the reboot into it, and a broken update that the
# appliance undoes by itself. Real QEMU (q35, OVMF, TCG), one QEMU process
# for the four boots: the guest reboots itself.
#
# 1. Builds the factory disk at 1.0.0 (as boot-test.sh does), a slot 1.1.0
#    whose [firmware] gives a new slot 1 try (--tries 1: the broken update
#    below fails in one boot), and a slot 1.2.0 whose nasvisord exits 1 at
#    once (NASVISOR_FW_BIN_DIR: the real `nasvisor` CLI and /bin/false as
#    nasvisord). Each slot becomes a `reboot` bundle with the CLI
#    (`firmware build`, then `firmware sign` with target/keys/build.key,
#    whose public half the slots trust), checked with `firmware verify`.
# 2. Boots the factory slot a on a disk 1 GiB larger than the image: the
#    data partition grows from 512 MiB into the rest (its console line; it
#    does not grow again at the next boot). Takes the admin token and the
#    TLS fingerprint from nasvisord's banner on the serial console;
#    `firmware status` shows a booted (blessed), b empty; `image list` has
#    the bundled guest image nasvisor-mini, ready.
# 3. `nasvisor firmware install 1.1.0 --wait` through the forwarded port:
#    b pending with 3 tries.
# 4. `nasvisor firmware reboot`: the guest reboots into b, which is blessed;
#    the status shows b booted and blessed at 1.1.0, a good, the update
#    succeeded and the rollback floor 1.1.0.
# 5. From b, `firmware install 1.2.0` into a (1 try), `firmware reboot`:
#    a's nasvisord never starts, the health check gives up when
#    nasvisord.service fails (start limit), the machine reboots, a's entry
#    is bad and b boots again by itself; the status reports the failed
#    update ("slot a did not become healthy after 1 tries; back on slot b").
# 6. Service releases under systemd (the supervised path): a `service`
#    bundle 1.1.1 (this tree's nasvisord, the CLI and the plugins) installs,
#    nasvisord.service's main process execs into it (its banner again on
#    the console) and it becomes healthy: the status shows it running and
#    current, the host reports 1.1.1, the floor is 1.1.1. Then 1.1.2, whose
#    nasvisord exits 1 at once: systemd starts the unit again and the
#    launcher (or the release's watchdog) rolls it back to 1.1.1; the status
#    reports the failed update "... back on service release 1.1.1".
# 7. Power lost during an install: from b, starts installing a `reboot`
#    bundle 1.3.0 (1.1.0's slot image under a newer version) and kills QEMU
#    (SIGKILL: the guest's unwritten data is lost, as on a power cut) while
#    the payload is being written into a. Reads the ESP back: b's entry
#    nasvisor-2-b.conf (blessed, 1.1.0) and no entry of a that could boot.
# 8. The next boot is b, healthy, nothing pending. (That the daemon cleans
#    up after a killed install, and that a new install then succeeds, is
#    benches/firmware-interrupt.sh's, a sample of which the suite runs.)
#
# It covers boot-test.sh's three boots but one: the factory boot blessed, a
# failed try that falls back (here an unhealthy slot), an unhealthy boot
# rebooting by itself to the good entry. A slot whose root cannot be
# mounted (panic=10) is boot-test.sh's alone.
#
# Prints each phase's duration. Temporary files are removed and QEMU is
# stopped by its pid on exit, also on failure; nothing is killed by name.
# Environment: BOOT_TIMEOUT (seconds to /healthz, default 300),
# NASVISOR_CLI (default target/release/nasvisor), NASVISOR_FW_SIGN_KEY
# (default target/keys/build.key), NASVISOR_FW_* (scripts/build-firmware.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=install-test
# shellcheck source=tests/appliance/lib.sh
. tests/appliance/lib.sh
T_TEST=$(now_ms)
CLI=${NASVISOR_CLI:-$ROOT/target/release/nasvisor}
KEY=${NASVISOR_FW_SIGN_KEY:-$ROOT/target/keys/build.key}
BIN_DIR=${NASVISOR_FW_BIN_DIR:-$ROOT/target/release}
KEYS_DIR=${NASVISOR_FW_KEYS_DIR:-$ROOT/target/keys}
PRODUCT=nasvisor-appliance
BOARD=qemu-q35
[ -x "$CLI" ] || fail "no CLI $CLI (cargo build --release --bins)"
[ -f "$KEY" ] || fail "no signing key $KEY (scripts/build.sh)"
phase() { echo "$NAME: PHASE $1: $(( ($(now_ms) - $2) / 1000 )) s"; }

# ---- 1. the images and the bundles -------------------------------------------------------
t=$(now_ms)
build_image 1.0.0 --product "$PRODUCT" --board "$BOARD"
mkdir -p "$T/fw" "$T/broken-bin"
scripts/build-firmware.sh --slot-only --version 1.1.0 --product "$PRODUCT" --board "$BOARD" --tries 1 --out "$T/fw"
cp "$BIN_DIR/nasvisor" "$T/broken-bin/nasvisor"
cp "$(type -P false)" "$T/broken-bin/nasvisord"   # a daemon that exits 1 at once
NASVISOR_FW_BIN_DIR=$T/broken-bin scripts/build-firmware.sh --slot-only --version 1.2.0 \
  --product "$PRODUCT" --board "$BOARD" --tries 1 --out "$T/fw"
# bundle VERSION [AS]: the slot image of VERSION as a signed `reboot`
# bundle of version AS (VERSION by default).
bundle() {
  local v=$1 as=${2:-$1}
  env -u SOURCE_DATE_EPOCH "$CLI" firmware build --payload "$T/fw/rootfs-$v.erofs" --payload-name rootfs.erofs \
    --class reboot --product "$PRODUCT" --compatible "$BOARD" --version "$as" --expires-in 30d \
    --out "$T/nasvisor-$as.nvfw" >/dev/null
  "$CLI" firmware sign "$T/nasvisor-$as.nvfw" --key "$KEY" >/dev/null
  "$CLI" firmware verify "$T/nasvisor-$as.nvfw" --trusted-keys "$KEYS_DIR" --product "$PRODUCT" \
    --compatible "$BOARD" --installed-version 1.0.0 || fail "the $as bundle does not verify"
}
bundle 1.1.0
bundle 1.1.0 1.3.0
bundle 1.2.0
# the slot images are not needed any more: the bundles carry them
rm -f "$T"/fw/rootfs-*.erofs
T_BUILD=$(( $(now_ms) - t ))
phase "images and bundles built" "$t"

# ---- 2. the factory boot -------------------------------------------------------------------
cp --sparse=always "$IMG" "$T/disk.img"
# A disk 1 GiB larger than the image, as a NAS's disk is: the first boot
# grows the data partition into it (nasvisor-grow-data.service).
truncate -s +1G "$T/disk.img"
[ "$(entries)" = "nasvisor-1-a+3.conf" ] || fail "factory entries: $(entries | tr '\n' ' ')"
echo "$NAME: boot 1: the factory slot a (TCG, 2 vCPUs, 2 GiB), /healthz forwarded to 127.0.0.1:$PORT"
start_qemu
wait_healthz
T_BOOT_A=$T_HEALTHZ
phase "boot to /healthz (factory slot a)" "$T0"
wait_for ".*NASVISOR-BOOT slot=a version=1.0.0 healthy=active bless=active entries=nasvisor-1-a.conf" 120
# The banner on the console: the token (first start only) and the fingerprint.
TOKEN=$(report 'admin token (shown once, store it now): ' | sed 's/.*: //' | tr -d '[:space:]')
FP=$(report 'TLS certificate SHA-256 fingerprint: ' | sed 's/.*: //' | tr -d '[:space:]')
[ -n "$TOKEN" ] || fail "no admin token on the serial console"
wait_for ".*NASVISOR-DATA grown from 512 MiB to 153[0-9] MiB .*" 10
echo "$NAME: $(report 'NASVISOR-DATA ')"
[ -n "$FP" ] || fail "no TLS fingerprint on the serial console"
(umask 077 && printf '%s\n' "$TOKEN" >"$T/token")
echo "$NAME: the admin token and the TLS fingerprint ($FP) read from the serial console"
nv() { "$CLI" --endpoint "https://127.0.0.1:$PORT" --token-file "$T/token" --fingerprint "$FP" "$@"; }
# status JSON CHECK...: each CHECK a python expression over `s` (the status).
status_ok() {
  nv --json firmware status >"$T/status.json" || fail "firmware status failed"
  python3 - "$T/status.json" "$@" <<'PY' || { cat "$T/status.json" >&2; fail "firmware status: a check failed"; }
import json, sys
s = json.load(open(sys.argv[1]))
a, b = s["slots"]
for check in sys.argv[2:]:
    if not eval(check):
        sys.exit(f"not true: {check}")
PY
}
status_ok 's["booted"] == "a"' 'a["state"] == "booted" and a["blessed"] is True and a["version"] == "1.0.0"' \
  'b["state"] == "empty"' 's["pending"] is None'
echo "$NAME: status: booted a (blessed, 1.0.0), b empty"
# The board's watchdog is armed by systemd (RuntimeWatchdogSec=60s, as soon
# as udev loaded its driver), and systemd watches nasvisord (WatchdogSec=90s).
# The q35 board has one, the ICH9 TCO timer (no other watchdog device is
# given to QEMU).
t=$(now_ms)
until nv --json firmware status 2>/dev/null | python3 -c 'import json,sys; w = json.load(sys.stdin)["watchdog"]["hardware"]; sys.exit(not any(d["state"] == "active" for d in w))'; do
  [ $(( $(now_ms) - t )) -lt 90000 ] || { nv --json firmware status >&2; fail "the hardware watchdog was not armed within 90 s"; }
  sleep 2
done
status_ok 'len(s["watchdog"]["hardware"]) == 1' 's["watchdog"]["hardware"][0]["device"] == "/dev/watchdog0"' \
  's["watchdog"]["hardware"][0]["identity"] == "iTCO_wdt"' 's["watchdog"]["hardware"][0]["state"] == "active"' \
  's["watchdog"]["hardware"][0]["timeout_s"] == 60' 's["watchdog"]["service_timeout_s"] == 90'
echo "$NAME: watchdogs: $(nv firmware status | sed -n 's/^watchdog: *//p')"
# The four default plugins loaded (each checked at load in a fresh instance
# under the decision deadline: under TCG a cold first instance can run past
# it, and only a second, warm one judges the plugin).
nv --json plugin list >"$T/plugins.json" || fail "plugin list failed"
python3 -c 'import json,sys; p = json.load(open(sys.argv[1])); bad = [(x["world"], x["name"], x["state"]) for x in p if x["name"].startswith("builtin-") or x["state"] != "active"]; sys.exit("not the default plugin, or not active: %r" % bad if bad or len(p) != 4 else 0)' "$T/plugins.json" \
  || { cat "$T/plugins.json" >&2; fail "a default plugin is not loaded"; }
echo "$NAME: plugins: $(python3 -c 'import json,sys; print(", ".join(x["name"] + "@" + x["version"] for x in json.load(open(sys.argv[1]))))' "$T/plugins.json")"
# The bundled guest image is in the slot and in the library from the first
# start, as on a host installed from packages.
nv --json image list >"$T/images.json" || fail "image list failed"
python3 -c 'import json,sys; i = [x for x in json.load(open(sys.argv[1])) if x["name"] == "nasvisor-mini"]; sys.exit(0 if i and i[0]["state"] == "ready" and i[0]["virtual_size_mib"] > 0 else "no ready nasvisor-mini: %r" % i)' "$T/images.json" \
  || { cat "$T/images.json" >&2; fail "the bundled guest image is not in the library"; }
echo "$NAME: image list: nasvisor-mini (the bundled guest image) ready"

# ---- 3. install 1.1.0 into b ----------------------------------------------------------------
t=$(now_ms)
nv firmware install "$T/nasvisor-1.1.0.nvfw" --wait >"$T/install.out" 2>&1 || { cat "$T/install.out" >&2; fail "firmware install 1.1.0"; }
T_INSTALL_1=$(( $(now_ms) - t ))
phase "upload + install of 1.1.0 ($(du -m "$T/nasvisor-1.1.0.nvfw" | cut -f1) MiB)" "$t"
status_ok 'b["state"] == "pending" and b["tries_left"] == 3 and b["version"] == "1.1.0"' \
  's["pending"]["slot"] == "b"' 's["last_outcome"]["result"] == "installed"'
echo "$NAME: status: b pending (3 tries left), 1.1.0"

# ---- 4. reboot into b -----------------------------------------------------------------------
t=$(now_ms)
mark_log
nv firmware reboot || fail "firmware reboot"
wait_for ".*NASVISOR-BOOT slot=b version=1.1.0 healthy=active bless=active entries=nasvisor-1-a.conf,nasvisor-2-b.conf" "$TIMEOUT"
T_REBOOT_B=$(( $(now_ms) - t ))
phase "reboot into b (to its boot report, blessed)" "$t"
has '.*Command line: .*root=PARTLABEL=nasvisor-b .*nasvisor.slot=b.*' || fail "not booted from slot b"
if has '.*NASVISOR-DATA grown.*'; then fail "the data partition grew again on the second boot"; fi
T0=$(now_ms)
wait_healthz
# The running daemon judges the update once the entry is blessed.
deadline=$(( $(now_ms) + 30000 ))
until nv --json firmware status 2>/dev/null | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["pending"] is not None)'; do
  [ "$(now_ms)" -lt "$deadline" ] || break
  sleep 1
done
status_ok 's["booted"] == "b"' 'b["state"] == "booted" and b["blessed"] is True and b["version"] == "1.1.0"' \
  'a["state"] == "good" and a["version"] == "1.0.0"' 's["pending"] is None' \
  's["last_outcome"]["result"] == "succeeded" and s["last_outcome"]["version"] == "1.1.0"' \
  's["rollback_floor"] == "1.1.0"'
echo "$NAME: status: booted b (blessed, 1.1.0), a good, last update succeeded, rollback floor 1.1.0"

# ---- 5. a broken update: 1.2.0 into a, whose nasvisord never starts ------------------------
t=$(now_ms)
nv firmware install "$T/nasvisor-1.2.0.nvfw" --wait >"$T/install.out" 2>&1 || { cat "$T/install.out" >&2; fail "firmware install 1.2.0"; }
T_INSTALL_2=$(( $(now_ms) - t ))
phase "upload + install of 1.2.0" "$t"
status_ok 'a["state"] == "pending" and a["tries_left"] == 1 and a["version"] == "1.2.0"' 's["pending"]["slot"] == "a"'
echo "$NAME: status: a pending (1 try left), 1.2.0"
t=$(now_ms)
mark_log
nv firmware reboot || fail "firmware reboot"
wait_for ".*NASVISOR-UNHEALTHY.* slot=a version=1.2.0 .*" "$TIMEOUT"
echo "$NAME: $(report NASVISOR-UNHEALTHY)"
wait_for ".*NASVISOR-BOOT slot=b version=1.1.0 healthy=inactive bless=inactive entries=nasvisor-2-b.conf,nasvisor-3-a+0-1.conf" "$TIMEOUT"
T0=$(now_ms)
wait_healthz
T_FALLBACK=$(( $(now_ms) - t ))
phase "broken boot of a to the fallback on b (/healthz on b)" "$t"
status_ok 's["booted"] == "b"' 'a["state"] == "bad" and a["tries_done"] == 1' 's["pending"] is None' \
  's["last_outcome"]["result"] == "failed" and s["last_outcome"]["version"] == "1.2.0"' \
  '"slot a did not become healthy after 1 tries; back on slot b" in s["last_outcome"]["reason"]' \
  's["rollback_floor"] == "1.1.0"'
echo "$NAME: status: back on b; the update failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_outcome"]["reason"])' "$T/status.json")"

# ---- 6. service releases under systemd: 1.1.1 in place, then a broken 1.1.2 rolled back ----
# svc_bundle VERSION NASVISORD: a signed `service` bundle of that nasvisord,
# the CLI and the default plugins.
svc_bundle() {
  local v=$1 d=$T/svc-$1
  mkdir -p "$d/plugins"
  strip --strip-unneeded -o "$d/nasvisord" "$2" 2>/dev/null || cp "$2" "$d/nasvisord"
  strip --strip-unneeded -o "$d/nasvisor" "$BIN_DIR/nasvisor"
  cp "$ROOT"/target/plugins/*.nvplugin "$d/plugins/"
  tar -cf "$T/svc-$v.tar" -C "$d" nasvisord nasvisor plugins
  env -u SOURCE_DATE_EPOCH "$CLI" firmware build --payload "$T/svc-$v.tar" --class service \
    --product "$PRODUCT" --compatible "$BOARD" --version "$v" --expires-in 30d --out "$T/svc-$v.nvfw" >/dev/null
  "$CLI" firmware sign "$T/svc-$v.nvfw" --key "$KEY" >/dev/null
}
svc_bundle 1.1.1 "$BIN_DIR/nasvisord"
svc_bundle 1.1.2 "$(type -P false)"   # a release that exits 1 at once
# A release that hangs the kernel: once the board's watchdog is armed, the
# kernel stops for good (a crash with kernel.panic=0: no reboot of its own),
# so that only the hardware watchdog can bring the board back.
cat >"$T/hang-nasvisord" <<'SH'
#!/bin/sh
i=0
until grep -qx active /sys/class/watchdog/watchdog0/state 2>/dev/null; do
  i=$((i + 1)); [ "$i" -lt 120 ] || exit 1; sleep 1
done
echo "NASVISOR-HANG: the kernel stops now" >/dev/kmsg
echo 0 >/proc/sys/kernel/panic
echo c >/proc/sysrq-trigger
SH
chmod +x "$T/hang-nasvisord"
svc_bundle 1.1.3 "$T/hang-nasvisord"
# svc_status CHECK...: the status, once no service release is on trial.
svc_settled() {
  local deadline=$(( $(now_ms) + 120000 ))
  until nv --json firmware status 2>/dev/null | python3 -c 'import json,sys; s = json.load(sys.stdin); sys.exit(s["service"]["on_trial"] is not None)'; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "a service release is still on trial after 120 s"
    sleep 1
  done
}
t=$(now_ms)
mark_log
nv firmware install "$T/svc-1.1.1.nvfw" --wait >"$T/install.out" 2>&1 || { cat "$T/install.out" >&2; fail "firmware install (service 1.1.1)"; }
grep -q "service release 1.1.1 staged" "$T/install.out" || { cat "$T/install.out" >&2; fail "1.1.1 was not staged"; }
# nasvisord restarts into it in place (systemd's main pid execs): its
# banner again on the console, then the release is healthy.
wait_for ".*nasvisor admin endpoint: .*" 120
svc_settled
T_SERVICE=$(( $(now_ms) - t ))
phase "service release 1.1.1 installed and healthy under systemd" "$t"
status_ok 's["booted"] == "b"' 's["service"]["running"] == "1.1.1" and s["service"]["current"] == "1.1.1"' \
  's["last_outcome"]["result"] == "succeeded" and s["last_outcome"]["version"] == "1.1.1"' 's["rollback_floor"] == "1.1.1"'
nv --json host >"$T/host.json" || fail "host"
python3 -c 'import json,sys; v = json.load(open(sys.argv[1]))["version"]; sys.exit(0 if v == "1.1.1" else f"the host reports {v}")' "$T/host.json" \
  || fail "the host does not report the service release's version"
echo "$NAME: service release 1.1.1 runs (host version 1.1.1, rollback floor 1.1.1)"
t=$(now_ms)
nv firmware install "$T/svc-1.1.2.nvfw" --wait >"$T/install.out" 2>&1 || { cat "$T/install.out" >&2; fail "firmware install (service 1.1.2)"; }
# It exits at once; systemd starts the unit again (Restart=on-failure),
# whose launcher or the release's watchdog rolls it back to 1.1.1.
deadline=$(( $(now_ms) + 180000 ))
until nv --json firmware status >"$T/status.json" 2>/dev/null \
    && python3 -c 'import json,sys; s = json.load(open(sys.argv[1])); o = s["last_outcome"]; sys.exit(not (o["version"] == "1.1.2" and o["result"] == "failed" and s["service"]["on_trial"] is None))' "$T/status.json"; do
  [ "$(now_ms)" -lt "$deadline" ] || { cat "$T/status.json" >&2 2>/dev/null; fail "the broken service release 1.1.2 was not rolled back within 180 s"; }
  sleep 1
done
T_SERVICE_ROLLBACK=$(( $(now_ms) - t ))
phase "broken service release 1.1.2 rolled back under systemd" "$t"
status_ok 's["service"]["running"] == "1.1.1" and s["service"]["current"] == "1.1.1"' \
  's["last_outcome"]["result"] == "failed" and s["last_outcome"]["version"] == "1.1.2"' \
  '"back on service release 1.1.1" in s["last_outcome"]["reason"]' 's["rollback_floor"] == "1.1.1"'
echo "$NAME: the broken release 1.1.2 was rolled back: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_outcome"]["reason"])' "$T/status.json")"

# ---- 6b. a hung kernel: the hardware watchdog resets the board ---------------------------------
# Service release 1.1.3 hangs the kernel at its start. Nothing feeds the
# board's watchdog any more; it resets the machine (the same QEMU process:
# the guest did not reboot itself, its kernel had stopped). b boots again,
# and the launcher finds 1.1.3 on trial, already launched once: it is
# rolled back to 1.1.1 and the update reported failed.
t=$(now_ms)
mark_log
QPID_BEFORE=$QPID
nv firmware install "$T/svc-1.1.3.nvfw" --wait >"$T/install.out" 2>&1 || { cat "$T/install.out" >&2; fail "firmware install (service 1.1.3)"; }
wait_for ".*Kernel panic - not syncing: sysrq triggered crash.*" 180
has '.*NASVISOR-HANG: the kernel stops now.*' || fail "the kernel stopped, but not by the release 1.1.3"
t_hang=$(now_ms)
echo "$NAME: the kernel hung (release 1.1.3); waiting for the board's watchdog"
wait_for ".*Command line: .*root=PARTLABEL=nasvisor-b .*" 300
T_WATCHDOG_RESET=$(( $(now_ms) - t_hang ))
[ "$QPID" = "$QPID_BEFORE" ] && kill -0 "$QPID" 2>/dev/null || fail "QEMU did not outlive the reset"
wait_for ".*NASVISOR-BOOT slot=b version=1.1.0 .*" "$TIMEOUT"
T0=$(now_ms)
wait_healthz
svc_settled
T_HANG=$(( $(now_ms) - t ))
phase "hung kernel reset by the watchdog (hang to the next kernel $((T_WATCHDOG_RESET / 1000)) s), 1.1.3 rolled back" "$t"
status_ok 's["booted"] == "b"' 'b["state"] == "booted" and b["blessed"] is True' \
  's["service"]["running"] == "1.1.1" and s["service"]["current"] == "1.1.1"' \
  's["last_outcome"]["result"] == "failed" and s["last_outcome"]["version"] == "1.1.3"' \
  '"service release 1.1.3 stopped before it became healthy" in s["last_outcome"]["reason"]' \
  'any(d["state"] == "active" for d in s["watchdog"]["hardware"])'
echo "$NAME: the watchdog reset the hung board after $((T_WATCHDOG_RESET / 1000)) s (kernel hung to the next kernel's start); 1.1.3 rolled back: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_outcome"]["reason"])' "$T/status.json")"

# ---- 7. power lost in the middle of an install, the ESP read back ---------------------------
t=$(now_ms)
nv --json firmware install "$T/nasvisor-1.3.0.nvfw" >"$T/install.json" 2>"$T/install.err" \
  || { cat "$T/install.err" >&2; fail "firmware install 1.3.0 (to be interrupted)"; }
JOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/install.json")
# Until the payload is being written into a (a third of the way in).
deadline=$(( $(now_ms) + 300000 ))
until nv --json job show "$JOB" 2>/dev/null | python3 -c 'import json,sys; j = json.load(sys.stdin); sys.exit(not (j["message"] == "writing" and j["progress"] >= 0.3 or j["state"] != "running"))'; do
  [ "$(now_ms)" -lt "$deadline" ] || fail "the install of 1.3.0 never reached the writing phase"
  sleep 0.2
done
nv --json job show "$JOB" >"$T/job.json" 2>/dev/null || true
python3 -c 'import json,sys; j = json.load(open(sys.argv[1])); sys.exit(0 if j["state"] == "running" else "the install was " + j["state"])' "$T/job.json" \
  || fail "the install ended before the power cut"
CUT_AT=$(python3 -c 'import json,sys; j = json.load(open(sys.argv[1])); print(j["message"], "%.0f %%" % (j["progress"] * 100))' "$T/job.json")
kill -KILL "$QPID"
wait "$QPID" 2>/dev/null || true
echo "$NAME: power cut during the install of 1.3.0 ($CUT_AT)"
# The ESP as the cut left it: b's blessed entry (1.1.0, booting slot b),
# and no entry of a that could boot a slot written half-way: none (the
# install removed a's entries first, step 5's bad one among them) or bad
# ones (+0-N).
if entries | grep -e '-a' | grep -q -v -e '-a+0-'; then fail "an entry of a that could boot after the cut: $(entries | tr '\n' ' ')"; fi
entries | grep -qx 'nasvisor-2-b.conf' || fail "no blessed entry of b after the cut: $(entries | tr '\n' ' ')"
mtype -i "$(esp)" ::/loader/entries/nasvisor-2-b.conf >"$T/entry-b"
grep -qx 'version *1.1.0' "$T/entry-b" || fail "b's entry is not 1.1.0: $(cat "$T/entry-b")"
grep -q 'root=PARTLABEL=nasvisor-b .*nasvisor.slot=b' "$T/entry-b" || fail "b's entry does not boot slot b: $(cat "$T/entry-b")"
echo "$NAME: ESP after the cut: $(entries | tr '\n' ' ')(b blessed at 1.1.0, no bootable entry of a)"

# ---- 8. the next boot: b, healthy, nothing pending -------------------------------------------
start_qemu
wait_for ".*NASVISOR-BOOT slot=b version=1.1.0 .*" "$TIMEOUT"
wait_healthz
T_POWER_CUT=$(( $(now_ms) - t ))
phase "power cut during an install, back on b" "$t"
status_ok 's["booted"] == "b"' 'b["state"] == "booted" and b["blessed"] is True and b["version"] == "1.1.0"' \
  's["pending"] is None' 'a["state"] != "pending"'
echo "$NAME: status after the cut: booted b (1.1.0), nothing pending, a $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["slots"][0]["state"])' "$T/status.json")"
stop_qemu
echo "$NAME: PASS: build $((T_BUILD / 1000)) s; boot to /healthz $((T_BOOT_A / 1000)) s; upload+install $((T_INSTALL_1 / 1000)) s (1.1.0), $((T_INSTALL_2 / 1000)) s (1.2.0); reboot into b $((T_REBOOT_B / 1000)) s; broken boot to fallback $((T_FALLBACK / 1000)) s; service release $((T_SERVICE / 1000)) s, its broken successor rolled back $((T_SERVICE_ROLLBACK / 1000)) s; hung kernel to the next kernel $((T_WATCHDOG_RESET / 1000)) s (back serving $((T_HANG / 1000)) s); power cut to b again $((T_POWER_CUT / 1000)) s; test $(( ($(now_ms) - T_TEST) / 1000 )) s"
