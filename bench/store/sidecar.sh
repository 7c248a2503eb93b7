#!/usr/bin/env bash
# The store benchmark against the product as deployed: the real sidecar binary (all of it
# running: proxy listeners, sync, flags, metrics) takes durable counter increments from 16
# wrk connections (or the fourth argument's number) on its admin API, alternated with raw bbolt (BenchmarkBoltBatch, 16
# goroutines, the same fsync policy) and with a Go net/http server that answers at once
# without storing anything (the HTTP floor for the same wrk clients). wrk is a C load
# generator; unlike the Go clients of run.sh it costs little CPU, but it shares the
# machine's cores with the server, as the raw benchmark's goroutines do. The same server
# answering each request only once a group fdatasync covers it (floord -sync) is the
# durable floor: the best any HTTP API that answers after its write is on disk can do with
# these clients on this disk (issue 14).
#
# Usage: bench/store/sidecar.sh [rounds] [seconds] [base-revision] [connections]
# With a base revision (a commit, tag or branch), its sidecar binary is built too and
# measured in every round right after this tree's, for an A/B of a change (issue 14); "-"
# for none. connections (default 16) is wrk's -c for every server alike: with more
# clients than one fdatasync's worth, the group commit gathers more writes per sync.
# Needs: go, wrk (apt-get install wrk). Files go under $CTXPROPTEST_BENCH_DIR when set.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
rounds=${1:-5}
secs=${2:-5}
base=${3:-}
[[ $base == - ]] && base=
conns=${4:-16}
command -v wrk >/dev/null || { echo "sidecar.sh: wrk not found; apt-get install wrk" >&2; exit 1; }
work=$(mktemp -d "${CTXPROPTEST_BENCH_DIR:-${TMPDIR:-/tmp}}/sidecar-bench-XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/sidecar" ./cmd/sidecar
go test -c -o "$work/store.test" ./bench/store
go build -o "$work/floord" ./bench/store/floord
if [[ -n $base ]]; then
	# The base's sources, not a worktree: nothing of the repository changes.
	mkdir "$work/base"
	git archive "$base" | tar -x -C "$work/base"
	(cd "$work/base" && go build -o "$work/sidecar-base" ./cmd/sidecar)
fi

# start_sidecar runs the sidecar (or the binary $1) on a fresh store in the background and
# sets addr to the admin address it logged.
start_sidecar() {
	rm -rf "$work/data" "$work/log"
	CTXPROP_ADMIN_ADDRESS=127.0.0.1:0 CTXPROP_INBOUND_ADDRESS=127.0.0.1:0 \
		CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:0 CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS="" CTXPROP_SYNC_ADDRESS=127.0.0.1:0 \
		CTXPROP_STORE_PATH="$work/data/ctxprop.db" \
		"${1:-$work/sidecar}" run -config "$root/config.hcl" >"$work/log" 2>&1 &
	pids+=($!)
	local i
	for i in $(seq 100); do
		addr=$(grep -o 'admin=127.0.0.1:[0-9]*' "$work/log" 2>/dev/null | head -1 | cut -d= -f2) || true
		if [[ -n $addr ]]; then return; fi
		sleep 0.1
	done
	echo "sidecar.sh: the sidecar did not start:" >&2
	cat "$work/log" >&2
	exit 1
}
stop_last() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
# cpu_ticks prints the user+system CPU clock ticks the last process started has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/${pids[-1]}/stat"; }
# cpu_us prints the CPU µs per request: ticks before and after, requests/s, seconds.
cpu_us() { awk -v t0="$1" -v t1="$2" -v r="$3" -v s="$secs" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (t1 - t0) / hz * 1e6 / (r * s)}'; }
# store_stats prints the writes per log sync and the mean ms of a log sync (append and
# fdatasync) of the sidecar at addr, from its /metrics.
store_stats() {
	curl -s "http://$addr/metrics" | awk '
		/^ctxprop_store_log_syncs_total / {n = $2}
		/^ctxprop_store_changes_total / {c = $2}
		/^ctxprop_store_commit_seconds_total / {t = $2}
		END {if (n > 0) printf "%.1f writes/sync, %.3f ms/sync", c / n, t / n * 1000; else printf "no log syncs"}'
}

rps() { wrk -t 2 -c "$conns" -d "${secs}s" -s "$root/bench/store/incr.lua" "http://$1" | awk '/^Requests\/sec/ {print $2}'; }
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ar=() fr=() af=() bf=() df=()
for r in $(seq 1 "$rounds"); do
	# With a base, odd rounds run this tree's sidecar first and even rounds the base's, so
	# that neither always gets the quieter moment.
	if [[ -n $base && $((r % 2)) == 0 ]]; then
		start_sidecar "$work/sidecar-base"
		t0=$(cpu_ticks)
		ab=$(rps "$addr")
		bcpu=$(cpu_us "$t0" "$(cpu_ticks)" "$ab") bst=$(store_stats)
		stop_last
	fi
	start_sidecar
	t0=$(cpu_ticks)
	a=$(rps "$addr")
	acpu=$(cpu_us "$t0" "$(cpu_ticks)" "$a") ast=$(store_stats)
	stop_last
	if [[ -n $base && $((r % 2)) == 1 ]]; then
		start_sidecar "$work/sidecar-base"
		t0=$(cpu_ticks)
		ab=$(rps "$addr")
		bcpu=$(cpu_us "$t0" "$(cpu_ticks)" "$ab") bst=$(store_stats)
		stop_last
	fi
	b=$("$work/store.test" -test.run '^$' -test.bench '^BenchmarkBoltBatch$' -test.benchtime "${secs}s" | awk '/^BenchmarkBoltBatch/ {print $3}')
	"$work/floord" -addr-file "$work/floor.addr" >/dev/null &
	pids+=($!)
	for i in $(seq 100); do [[ -s $work/floor.addr ]] && break; sleep 0.1; done
	t0=$(cpu_ticks)
	f=$(rps "$(cat "$work/floor.addr")")
	fcpu=$(cpu_us "$t0" "$(cpu_ticks)" "$f")
	stop_last
	rm -f "$work/floor.addr"
	# The durable floor: the same server, answering once a group fdatasync covers the
	# request (floord -sync), on the disk of the sidecar's store.
	"$work/floord" -addr-file "$work/floor.addr" -sync "$work/floor.log" >/dev/null &
	pids+=($!)
	for i in $(seq 300); do [[ -s $work/floor.addr ]] && break; sleep 0.1; done
	t0=$(cpu_ticks)
	d=$(rps "$(cat "$work/floor.addr")")
	dcpu=$(cpu_us "$t0" "$(cpu_ticks)" "$d")
	stop_last
	rm -f "$work/floor.addr" "$work/floor.log"
	# Throughputs: wrk's requests/s against 1e9 ÷ raw bbolt's ns/op.
	ar+=("$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a * b / 1e9}')")
	fr+=("$(awk -v f="$f" -v b="$b" 'BEGIN {printf "%.2f", f * b / 1e9}')")
	# The goal of issue 14: the sidecar against the HTTP floor under the same clients.
	af+=("$(awk -v a="$a" -v f="$f" 'BEGIN {printf "%.3f", a / f}')")
	echo "round $r: sidecar ${a} req/s, raw bbolt $(awk -v b="$b" 'BEGIN {printf "%.0f", 1e9 / b}') writes/s (${b} ns/op), HTTP floor ${f} req/s; sidecar÷raw ${ar[-1]}, floor÷raw ${fr[-1]}, sidecar÷floor ${af[-1]}"
	df+=("$(awk -v a="$a" -v d="$d" 'BEGIN {printf "%.3f", a / d}')")
	echo "round $r: durable floor ${d} req/s, durable floor÷floor $(awk -v d="$d" -v f="$f" 'BEGIN {printf "%.3f", d / f}'), sidecar÷durable floor ${df[-1]}"
	echo "round $r: CPU per request: sidecar ${acpu} µs, HTTP floor ${fcpu} µs, durable floor ${dcpu} µs; sidecar's log: ${ast}"
	if [[ -n $base ]]; then
		bf+=("$(awk -v a="$ab" -v f="$f" 'BEGIN {printf "%.3f", a / f}')")
		echo "round $r: base $base ${ab} req/s, base÷floor ${bf[-1]}, CPU per request ${bcpu} µs; base's log: ${bst}"
	fi
done
echo "median over $rounds rounds: sidecar÷raw $(printf '%s\n' "${ar[@]}" | median), floor÷raw $(printf '%s\n' "${fr[@]}" | median), sidecar÷floor $(printf '%s\n' "${af[@]}" | median), sidecar÷durable floor $(printf '%s\n' "${df[@]}" | median)"
if [[ -n $base ]]; then
	echo "median over $rounds rounds: base÷floor $(printf '%s\n' "${bf[@]}" | median)"
fi
