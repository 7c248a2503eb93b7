#!/usr/bin/env bash
# Alternates the admin-API and raw-bbolt write benchmarks for several rounds on the same
# machine and prints each round's ratio and the median (raw bbolt ns/op ÷ admin ns/op).
# Usage: bench/store/run.sh [rounds] [benchtime]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
benchtime=${2:-3s}
bin=$(mktemp -d)/store.test
go test -c -o "$bin" ./bench/store
ratios=()
for r in $(seq 1 "$rounds"); do
  a=$("$bin" -test.run '^$' -test.bench '^BenchmarkAdminIncr$' -test.benchtime "$benchtime" | awk '/^BenchmarkAdminIncr/ {print $3}')
  b=$("$bin" -test.run '^$' -test.bench '^BenchmarkBoltBatch$' -test.benchtime "$benchtime" | awk '/^BenchmarkBoltBatch/ {print $3}')
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}')
  ratios+=("$ratio")
  echo "round $r: admin API ${a} ns/op, raw bbolt ${b} ns/op, ratio ${ratio}"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {printf "median ratio (raw bbolt ns/op ÷ admin ns/op = admin throughput ÷ raw): %s over %d rounds\n", v[int((NR+1)/2)], NR}'
