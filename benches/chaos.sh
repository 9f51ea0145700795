#!/usr/bin/env bash
# The HA chaos run: randomised faults (kill a host, kill a daemon, kill an
# HA VM's QEMU, cut a link; each healed before the next) on real nasvisord
# hosts in network namespaces, with the daemon's default cluster timings and
# two HA VMs on a shared pool (one running the guest's acknowledged writer).
# After each fault it checks that no VM runs twice, that no acknowledged
# record is lost, and that every HA VM touched runs again within 30 s.
# Prints one TRIAL line per trial, the summary and any violation; the whole
# output stays in target/chaos.log.
# NASVISOR_CHAOS_POOL=default puts both VMs on their hosts' own pools, so
# that every failover goes through a synchronous replica.
# Usage (as root): benches/chaos.sh [trials] [hosts] [seed]
#   (default 100 trials on 3 hosts, a seed from the clock; the run prints it).
# Needs scripts/build.sh and the guest image (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
log=target/chaos.log
mkdir -p target
status=0
env NASVISOR_CHAOS_TRIALS=${1:-100} NASVISOR_CHAOS_HOSTS=${2:-3} ${3:+NASVISOR_CHAOS_SEED=$3} \
  cargo test --release -q --workspace --test chaos -- --ignored --nocapture --test-threads 1 \
  >"$log" 2>&1 || status=$?
grep -E '^(CHAOS|TRIAL|SLOW|SUMMARY|VIOLATION)|test result' "$log" || true
# A failure of the harness itself (not an invariant): its message.
grep -A8 'panicked at' "$log" | grep -v '^ *[0-9]*: \|^ *at ' || true
echo "(the whole output: $log)"
exit $status
