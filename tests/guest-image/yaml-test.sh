#!/usr/bin/env bash
# Host-side tests of the guest's NoCloud YAML reader (tests/guest-image/yaml.awk
# and the shell helpers of tests/guest-image/init), run with busybox awk and
# busybox sh exactly as in the guest. No QEMU needed; takes about a second.
#
# 1. The seed files in the exact format the default os-installer plugin
#    writes (fixtures/plugin-*) flatten to the expected records
#    (fixtures/plugin-*.flat).
# 2. Every fixture flattens to the same records as PyYAML's BaseLoader
#    (skipped when python3-yaml is missing).
# 3. The runcmd of the plugin's user-data becomes a script that prints the
#    ready marker; the helpers read users, groups, keys and routes.
# 4. Malformed input is reported, not silently accepted.
set -euo pipefail
cd "$(dirname "$0")"
command -v busybox >/dev/null || { echo "yaml-test: busybox missing (apt-get install busybox-static)" >&2; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "yaml-test: FAIL: $*" >&2; failures=$((failures + 1)); }
flat() { busybox awk -f yaml.awk "$1"; }

# ---- 1. golden records for the plugin's seed files -------------------------------
for f in fixtures/plugin-user-data fixtures/plugin-network-config fixtures/plugin-meta-data; do
  if ! flat "$f" >"$T/out" 2>"$T/err"; then fail "$f: $(cat "$T/err")"; fi
  if ! diff -u "$f.flat" "$T/out" >"$T/diff"; then fail "$f differs from $f.flat:"; cat "$T/diff" >&2; fi
done

# ---- 2. same records as PyYAML -----------------------------------------------------
if python3 -c 'import yaml' 2>/dev/null; then
  for f in fixtures/plugin-user-data fixtures/plugin-network-config fixtures/plugin-meta-data fixtures/yaml/*.yaml; do
    flat "$f" >"$T/awk" 2>"$T/err" || fail "$f: yaml.awk reported $(cat "$T/err")"
    python3 - "$f" >"$T/py" 2>"$T/pyerr" <<'EOF' || true
import sys, yaml
def enc(s):
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
def walk(p, v):
    if isinstance(v, dict):
        for k, x in v.items():
            walk(k if p == "" else p + "." + k, x)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            walk(str(i) if p == "" else p + "." + str(i), x)
    else:
        v = "" if v is None or v in ("~", "null", "Null", "NULL") else v
        print(p + "\t" + enc(v))
with open(sys.argv[1], newline="") as fh:
    walk("", yaml.load(fh.read(), Loader=yaml.BaseLoader))
EOF
    [ -s "$T/pyerr" ] && { fail "$f: PyYAML: $(tail -n 1 "$T/pyerr")"; continue; }
    if ! diff -u "$T/py" "$T/awk" >"$T/diff"; then fail "$f: yaml.awk and PyYAML disagree (- PyYAML, + yaml.awk):"; cat "$T/diff" >&2; fi
  done
else
  echo "yaml-test: python3-yaml missing, PyYAML comparison skipped" >&2
fi

# ---- 3. the init's helpers on the plugin's seed ----------------------------------------
sed -n '/^# ---- YAML helpers/,/^# ---- seed/p' init >"$T/helpers.sh"
sed 's|/dev/ttyS0|/dev/stdout|' fixtures/plugin-user-data >"$T/user-data"
flat "$T/user-data" >"$T/u.flat"
flat fixtures/plugin-network-config >"$T/n.flat"
flat fixtures/yaml/cloud-config.yaml >"$T/c.flat"
flat fixtures/yaml/netplan.yaml >"$T/np.flat"
cat >"$T/check.sh" <<EOF
. "$T/helpers.sh"
UD=U
yload U "$T/u.flat"
yload N "$T/n.flat"
yload C "$T/c.flat"
yload P "$T/np.flat"
shellify runcmd >"$T/runcmd.sh"
echo "users=\$(ykeys U users)"
echo "alice=\$(yget U users.0.name) groups=\$(ylist U users.0.groups | tr '\n' ,) sudo=\$(ylist U users.0.sudo whole)"
echo "bob-key=\$(ylist U users.1.ssh_authorized_keys whole | cut -c1-15)"
echo "nic0=\$(yget N ethernets.nic0.match.macaddress) \$(ylist N ethernets.nic0.addresses | tr '\n' ,) via=\$(yget N ethernets.nic0.routes.0.via)"
echo "nic1-dhcp=\$(yget N ethernets.nic1.dhcp4)"
echo "carol-groups=\$(ylist C users.1.groups | tr '\n' ,) sudo=\$(ylist C users.1.sudo whole | tr '\n' ,)"
echo "motd=\$(yget C write_files.0.content | tr '\n' '|')"
echo "net=\$(ykeys P network.ethernets) routes=\$(ykeys P network.ethernets.eth0.routes)"
yhas C empty_map || echo "empty_map absent"
yget C nothing >/dev/null && echo "nothing present"
UD=C
shellify runcmd >"$T/runcmd2.sh"
EOF
busybox sh "$T/check.sh" >"$T/got" 2>&1 || fail "helpers: $(cat "$T/got")"
cat >"$T/want" <<'EOF'
users=0 1
alice=alice groups=adm,sudo, sudo=ALL=(ALL) NOPASSWD:ALL
bob-key=ssh-rsa AAAAB3N
nic0=52:54:00:12:34:56 192.0.2.10/24,2001:db8::10/64, via=192.0.2.1
nic1-dhcp=true
carol-groups=users,wheel, sudo=ALL=(ALL) NOPASSWD:ALL,ALL=(root) /bin/true,
motd=Hello|  indented|world|
net=eth0 eth1 routes=0 1
empty_map absent
nothing present
EOF
diff -u "$T/want" "$T/got" >"$T/diff" || { fail "helpers:"; cat "$T/diff" >&2; }
printf '%s\n' '#!/bin/sh' "'sh' '-c' 'printf '\\''%s\\n'\\'' \"\$1\" > /dev/stdout || true' 'nasvisor-ready' 'NASVISOR-READY'" >"$T/want"
diff -u "$T/want" "$T/runcmd.sh" >"$T/diff" || { fail "runcmd script:"; cat "$T/diff" >&2; }
[ "$(busybox sh "$T/runcmd.sh")" = NASVISOR-READY ] || fail "the plugin's runcmd does not print the marker"
[ "$(busybox sh "$T/runcmd2.sh" 2>&1 | tr '\n' '|')" = "plain string, no colon|a b c|nested list|quoted|" ] ||
  fail "runcmd forms: $(busybox sh "$T/runcmd2.sh" 2>&1 | tr '\n' '|')"

# ---- 4. malformed input --------------------------------------------------------------
printf 'a: [1, 2\nb: "open\n' >"$T/bad.yaml"
if flat "$T/bad.yaml" >/dev/null 2>"$T/err"; then fail "malformed YAML accepted"; fi
grep -q 'line 1: unterminated flow collection' "$T/err" || fail "no error for line 1: $(cat "$T/err")"
grep -q 'line 2: unterminated double-quoted' "$T/err" || fail "no error for line 2: $(cat "$T/err")"

if [ "$failures" -ne 0 ]; then echo "yaml-test: $failures failure(s)" >&2; exit 1; fi
echo "yaml-test: PASS"
