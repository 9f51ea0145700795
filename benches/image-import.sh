#!/usr/bin/env bash
# Benchmark: what the inspection of an untrusted image and the library's
# conversion cost (docs/storage.md). Runs the same qemu-img commands the
# image library runs, under the same limits (prlimit: 1 GiB of address
# space, 30 s of CPU; MALLOC_ARENA_MAX=2), on a 1 GiB qcow2 holding 512 MiB
# of data:
#   info  = qemu-img info --output=json --force-share -f qcow2
#   check = qemu-img check --output=json --force-share -f qcow2
#   convert = qemu-img convert -f qcow2 -O qcow2 (the library always rewrites)
#   rename = what an older release did instead of the conversion
# N runs each (default 5); prints each median in ms.
set -euo pipefail
runs=${1:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
img="$dir/src.qcow2"
qemu-img create -q -f qcow2 "$img" 1G
qemu-io -f qcow2 -c "write -P 0x5a 0 512M" "$img" >/dev/null
limit=(env MALLOC_ARENA_MAX=2 prlimit --as=1073741824 --cpu=30)
median() { sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m }'; }
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )) | awk '{ print $1 / 1000 }'; }
for step in info check convert rename; do
  times=()
  for _ in $(seq 1 "$runs"); do
    case $step in
      info) t=$(ms "${limit[@]}" qemu-img info --output=json --force-share -f qcow2 "$img") ;;
      check) t=$(ms "${limit[@]}" qemu-img check --output=json --force-share -f qcow2 "$img") ;;
      convert) rm -f "$dir/out.qcow2"; sync; t=$(ms "${limit[@]}" qemu-img convert -f qcow2 -O qcow2 "$img" "$dir/out.qcow2") ;;
      rename) cp "$img" "$dir/copy.qcow2"; sync; t=$(ms mv "$dir/copy.qcow2" "$dir/moved.qcow2"); rm -f "$dir/moved.qcow2" ;;
    esac
    times+=("$t")
  done
  echo "$step: median $(printf '%s\n' "${times[@]}" | median) ms over $runs runs"
done
