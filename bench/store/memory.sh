#!/usr/bin/env bash
# Memory per context on the real sidecar binary (issue 11): the RSS a store of N
# one-counter contexts costs, written through the admin API and then loaded at start-up,
# against the same binary with an empty store in the same run.
#
#   1. baseline: `sidecar run` on a fresh store, ready and idle for $settle seconds: VmRSS.
#   2. write: bench/store/fill writes N contexts (POST /v1/contexts/mem-<i>/counters/hits,
#      JSON, 16 clients, each write durable before its answer) while VmRSS is sampled
#      every 100 ms: the peak while written, and VmRSS once the writes are checkpointed
#      into the bbolt file and the process idled for $settle seconds.
#   3. load: SIGTERM, then `sidecar run` again on the same file: the peak VmRSS from
#      start-up to ready (the load), and VmRSS after $settle idle seconds.
#
# Each figure is printed as MB, as a ratio to the baseline, and as (RSS − baseline) ÷ N
# bytes per context. RssAnon (the Go heap and stacks) and RssFile (the bbolt file's
# pages mapped in) are shown too.
#
# Usage: bench/store/memory.sh [contexts] [settle-seconds]
# Needs: go, curl. Files go under $CTXPROPTEST_BENCH_DIR when set.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
n=${1:-100000}
settle=${2:-10}
work=$(mktemp -d "${CTXPROPTEST_BENCH_DIR:-${TMPDIR:-/tmp}}/memory-bench-XXXXXX")
pid= sampler=
cleanup() {
	[[ -n $sampler ]] && kill "$sampler" 2>/dev/null || true
	[[ -n $pid ]] && kill "$pid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/sidecar" ./cmd/sidecar
go build -o "$work/fill" ./bench/store/fill

# field prints a /proc/<pid>/status field (VmRSS, RssAnon, RssFile) in kB.
field() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# start runs the sidecar on $work/data with the shipped config.hcl, ephemeral ports,
# and sets pid; it returns once the sidecar logged that it is ready and sets addr.
start() {
	: >"$work/log"
	CTXPROP_ADMIN_ADDRESS=127.0.0.1:0 CTXPROP_INBOUND_ADDRESS=127.0.0.1:0 \
		CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:0 CTXPROP_SYNC_ADDRESS=127.0.0.1:0 \
		CTXPROP_STORE_PATH="$work/data/ctxprop.db" \
		"$work/sidecar" run -config "$root/config.hcl" >"$work/log" 2>&1 &
	pid=$!
}
wait_ready() {
	local i
	for i in $(seq 1200); do
		addr=$(grep -o 'sidecar ready: admin=127.0.0.1:[0-9]*' "$work/log" 2>/dev/null | head -1 | cut -d= -f2) || true
		if [[ -n $addr ]]; then return; fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "memory.sh: the sidecar did not start:" >&2
	cat "$work/log" >&2
	exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# sample records the peak VmRSS of $pid in $work/peak until killed.
sample() {
	local peak=0 v
	while v=$(field "$pid" VmRSS 2>/dev/null) && [[ -n $v ]]; do
		((v > peak)) && peak=$v && echo "$peak" >"$work/peak"
		sleep 0.1
	done
}
start_sampler() { echo 0 >"$work/peak"; sample & sampler=$!; }
stop_sampler() { kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; sampler=; cat "$work/peak"; }

# commits prints ctxprop_store_commits_total.
commits() { curl -s "http://$addr/metrics" | awk '$1 == "ctxprop_store_commits_total" {print $2}'; }

report() { # label kB
	awk -v l="$1" -v r="$2" -v b="$base" -v n="$n" -v a="${3:-}" -v f="${4:-}" 'BEGIN {
		extra = (a != "") ? sprintf("  (RssAnon %.1f MB, RssFile %.1f MB)", a / 1024, f / 1024) : ""
		printf "%-34s %7.1f MB  %5.2f × baseline  %6.0f B/context%s\n", l, r / 1024, r / b, (r - b) * 1024 / n, extra
	}'
}

# 1. Baseline.
rm -rf "$work/data"
start
wait_ready
sleep "$settle"
base=$(field "$pid" VmRSS)
base_anon=$(field "$pid" RssAnon) base_file=$(field "$pid" RssFile)

# 2. Write.
start_sampler
"$work/fill" -addr "$addr" -n "$n" -c 16
written_peak=$(stop_sampler)
c0=$(commits)
for i in $(seq 600); do [[ $(commits) != "$c0" ]] && break; sleep 0.1; done # the checkpoint
sleep "$settle"
written=$(field "$pid" VmRSS)
written_anon=$(field "$pid" RssAnon) written_file=$(field "$pid" RssFile)
stop

# 3. Load.
start
start_sampler
wait_ready
load_peak=$(stop_sampler)
sleep "$settle"
loaded=$(field "$pid" VmRSS)
loaded_anon=$(field "$pid" RssAnon) loaded_file=$(field "$pid" RssFile)
got=$(curl -s "http://$addr/metrics" | awk '$1 == "ctxprop_store_contexts" {print $2}')
stop

echo "sidecar $(git describe --always --dirty 2>/dev/null || echo "(no git)"), $n one-counter contexts, settle ${settle}s, store file $(du -k "$work/data/ctxprop.db" | cut -f1) kB, contexts loaded: $got"
printf "%-34s %7.1f MB  (RssAnon %.1f MB, RssFile %.1f MB)\n" "baseline (empty store)" "$(awk -v b="$base" 'BEGIN {print b/1024}')" "$(awk -v b="$base_anon" 'BEGIN {print b/1024}')" "$(awk -v b="$base_file" 'BEGIN {print b/1024}')"
report "while written (peak)" "$written_peak"
report "written, checkpointed, idle" "$written" "$written_anon" "$written_file"
report "loading at start-up (peak)" "$load_peak"
report "loaded, idle" "$loaded" "$loaded_anon" "$loaded_file"
