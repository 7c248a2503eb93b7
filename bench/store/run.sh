#!/usr/bin/env bash
# Alternates the store benchmarks for several rounds on the same machine and prints each
# round's figures and the medians:
#
#   admin   BenchmarkAdminIncr: 16 clients write durably through the admin API (HTTP)
#   raw     BenchmarkBoltBatch: 16 goroutines write durably to raw bbolt with DB.Batch
#   floor   BenchmarkHTTPFloor: the same 16 HTTP clients against a handler that stores
#           nothing, the most any HTTP API can do on this machine
#
# Ratios are throughputs (the inverse of ns/op): admin÷raw is the issue's target (≥ 0.8),
# floor÷raw bounds it from above, admin÷floor is what the store and its fsync cost.
# Usage: bench/store/run.sh [rounds] [benchtime]
# The files go under $CTXPROPTEST_BENCH_DIR when set (see bench/store/slowdisk.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
benchtime=${2:-3s}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=$tmp/store.test
go test -c -o "$bin" ./bench/store
bench() {
  "$bin" -test.run '^$' -test.bench "^$1\$" -test.benchtime "$benchtime" | awk -v n="$1" '$1 ~ "^"n {print $3}'
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ar=() fr=() af=() as=() bs=() fs=()
for r in $(seq 1 "$rounds"); do
  a=$(bench BenchmarkAdminIncr)
  b=$(bench BenchmarkBoltBatch)
  f=$(bench BenchmarkHTTPFloor)
  ar+=("$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}')")
  fr+=("$(awk -v f="$f" -v b="$b" 'BEGIN {printf "%.2f", b / f}')")
  af+=("$(awk -v a="$a" -v f="$f" 'BEGIN {printf "%.2f", f / a}')")
  as+=("$a") bs+=("$b") fs+=("$f")
  echo "round $r: admin API ${a} ns/op, raw bbolt ${b} ns/op, ratio ${ar[-1]}"
  echo "round $r floor: HTTP floor ${f} ns/op, floor÷raw ${fr[-1]}, admin÷floor ${af[-1]}"
done
echo "median ratio (raw bbolt ns/op ÷ admin ns/op = admin throughput ÷ raw): $(printf '%s\n' "${ar[@]}" | median) over $rounds rounds"
echo "medians: admin API $(printf '%s\n' "${as[@]}" | median) ns/op, raw bbolt $(printf '%s\n' "${bs[@]}" | median) ns/op, HTTP floor $(printf '%s\n' "${fs[@]}" | median) ns/op; floor÷raw $(printf '%s\n' "${fr[@]}" | median), admin÷floor $(printf '%s\n' "${af[@]}" | median)"
