#!/usr/bin/env bash
# Runs bench/store/run.sh on FUSE mounts whose fsync is slower by each given delay (see
# bench/slowdisk), to see the store against raw bbolt on disks that flush like cloud block
# volumes (0.5–2+ ms) rather than like this machine's (~0.2 ms). Delay 0 still goes through FUSE,
# which shows FUSE's own cost; the "no FUSE" row runs on the plain disk under /tmp.
# Prints each run as it goes, then a Markdown table of the medians over the rounds (with the HTTP
# floor column when run.sh measures it).
# Needs root (the mount uses mount(2) and /dev/fuse). Measures the last commit, not the working
# tree (see below).
# Usage: bench/store/slowdisk.sh [rounds] [benchtime] [delays...]   (default: 3 3s 0 500us 1ms 2ms)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
benchtime=${2:-3s}
shift $(($# < 2 ? $# : 2))
delays=("$@")
if [ ${#delays[@]} -eq 0 ]; then
  delays=(0 500us 1ms 2ms)
fi
if [ "$(id -u)" -ne 0 ] || [ ! -e /dev/fuse ]; then
  echo "slowdisk.sh: needs root and /dev/fuse to mount FUSE" >&2
  exit 1
fi

work=$(mktemp -d /tmp/slowdisk.XXXXXX)
pid=""
mnt=""
# Whatever way the script ends, nothing stays mounted: slowdisk unmounts on SIGTERM, and umount
# covers a slowdisk that died without doing so.
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  fi
  mnt=""
}
trap 'cleanup; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# run.sh builds the benchmark from the tree it sits in, and others may be mid-edit in this one (a
# package that does not compile; run.sh itself rewritten under the bash reading it). So every run
# uses a snapshot of the last commit: commit a change to measure it.
commit=$(git rev-parse --short HEAD)
mkdir "$work/src"
git archive HEAD | tar -x -C "$work/src"
runsh=$work/src/bench/store/run.sh
bin=$PWD/.bin/slowdisk
mkdir -p .bin
(cd "$work/src/bench/slowdisk" && go build -o "$bin" .)

# mount_slow DELAY DIR: mounts DIR/mnt over a fresh DIR/backing and waits for slowdisk's
# "mounted" line.
mount_slow() {
  local delay=$1 dir=$2
  mkdir -p "$dir/backing" "$dir/mnt"
  mnt=$dir/mnt
  "$bin" -backing "$dir/backing" -mount "$mnt" -fsync-delay "$delay" >"$dir/slowdisk.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    if grep -q '^mounted ' "$dir/slowdisk.log"; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "slowdisk.sh: slowdisk did not mount $mnt within 10s:" >&2
  cat "$dir/slowdisk.log" >&2
  exit 1
}

# unmount_slow: stops slowdisk and fails if it did not unmount cleanly.
unmount_slow() {
  kill -TERM "$pid"
  if ! wait "$pid"; then
    pid=""
    echo "slowdisk.sh: slowdisk failed to unmount $mnt:" >&2
    cat "$(dirname "$mnt")/slowdisk.log" >&2
    exit 1
  fi
  pid=""
  mnt=""
}

# row LABEL OUTPUT: one table row of the medians of run.sh's per-round lines. A round reads
# "round N: admin API A ns/op, raw bbolt B ns/op, ..." and, where run.sh measures the HTTP floor
# (a handler that stores nothing), "HTTP floor F ns/op" on that line or on a "round N floor:"
# line after it. The ratio is raw ns/op ÷ admin ns/op per round, as run.sh computes it.
row() {
  local label=$1 out=$2
  awk -v label="$label" '
    function ns(re,   s) {
      if (!match($0, re " [0-9.]+ ns/op")) return ""
      s = substr($0, RSTART, RLENGTH)
      sub(/^[^0-9]*/, "", s)
      return s + 0
    }
    function median(v, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
      return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
    }
    !/^round [0-9]+/ { next }
    ns("admin( API)?") != "" {
      n++; a[n] = ns("admin( API)?"); b[n] = ns("raw bbolt")
      if (b[n] == "") { print "slowdisk.sh: no raw bbolt figure in " FILENAME ": " $0 > "/dev/stderr"; exit 1 }
      r[n] = b[n] / a[n]
    }
    ns("HTTP floor") != "" && n > 0 { fn++; f[fn] = ns("HTTP floor") }
    END {
      if (n == 0) { print "slowdisk.sh: no round lines in " FILENAME > "/dev/stderr"; exit 1 }
      floor = fn == n ? sprintf("%.0f", median(f, n)) : "–"
      printf "| %s | %.0f | %.0f | %s | %.2f |\n", label, median(a, n), median(b, n), floor, median(r, n)
    }' "$out"
}

rows=()
echo "== no FUSE: run.sh on the plain disk under ${TMPDIR:-/tmp}"
"$runsh" "$rounds" "$benchtime" | tee "$work/nofuse.out"
rows+=("$(row "no FUSE" "$work/nofuse.out")")

for i in "${!delays[@]}"; do
  delay=${delays[$i]}
  mount_slow "$delay" "$work/$i"
  echo "== fsync delay $delay: run.sh on $mnt"
  CTXPROPTEST_BENCH_DIR=$mnt "$runsh" "$rounds" "$benchtime" | tee "$work/$i.out"
  unmount_slow
  rm -rf "${work:?}/$i/backing"
  rows+=("$(row "FUSE + $delay" "$work/$i.out")")
done

echo
echo "bench/store/slowdisk.sh $rounds $benchtime ${delays[*]} — commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC'), medians over $rounds rounds"
echo
echo "| fsync delay | admin ns/op (median) | raw bbolt ns/op (median) | HTTP floor ns/op (median) | ratio raw ÷ admin (median) |"
echo "| --- | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
