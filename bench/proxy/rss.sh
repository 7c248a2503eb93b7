#!/usr/bin/env bash
# RSS over time of the real sidecar binary under sustained load, with the Go runtime's
# default GC (the sidecar's GOGC=50) and with other GOGC/GOMEMLIMIT settings, alternated in one run.
#
# For each setting, each round: a fresh `sidecar run` (its own bbolt store, no peers,
# the context from baggage, the inbound fast path as by default) in front of bench/proxy's
# origin; its RSS idle, after each of T wrk turns (-t2 -c64, D seconds, a trace and
# baggage ctx.name=bench per request, bench/proxy/trace.lua) and 10 s after the last,
# then split into anonymous and file pages;
# then its CPU ms per 1000 requests over the turns (utime+stime from /proc/<pid>/stat).
#
# Usage: bench/proxy/rss.sh [-r rounds] [-t turns] [-d seconds] [setting ...]
#   a setting is "label" or "label:VAR=value,VAR=value", e.g. gogc100:GOGC=100
#   default settings: default gogc100:GOGC=100 (Go's own default)
# Needs: go, wrk (apt-get install wrk).
set -euo pipefail
rounds=2 turns=5 secs=8
while getopts r:t:d:h opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	t) turns=$OPTARG ;;
	d) secs=$OPTARG ;;
	*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
settings=("$@")
((${#settings[@]})) || settings=(default gogc100:GOGC=100)
command -v wrk >/dev/null || { echo "rss.sh: wrk not found; apt-get install wrk" >&2; exit 1; }

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
# The sidecar as `make build` and the Dockerfile build it: the binary users run.
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$work/sidecar" ./cmd/sidecar && go build -o "$work/origin" ./bench/proxy/origin)

"$work/origin" -addr 127.0.0.1:28080 >"$work/origin.log" 2>&1 &
pids+=($!)

rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# anon_file_mb prints the RSS's anonymous part (the Go heap and stacks) and its file part
# (the binary's pages, shared with every process that maps the same file), in MB.
anon_file_mb() { awk '/^RssAnon/ {a = $2} /^RssFile/ {f = $2} END {printf "%.1f\t%.1f", a / 1024, f / 1024}' "/proc/$1/status"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

printf 'round\tsetting\tidle_mb'
for t in $(seq "$turns"); do printf '\tturn%d_mb' "$t"; done
printf '\tafter10s_mb\tanon_mb\tfile_mb\tcpu_ms/1k\treq/s\n'
for r in $(seq "$rounds"); do
	for s in "${settings[@]}"; do
		label=${s%%:*} envs=()
		[[ $s == *:* ]] && IFS=, read -ra envs <<<"${s#*:}"
		rm -rf "$work/data"
		env ${envs[@]+"${envs[@]}"} CTXPROP_ADMIN_ADDRESS=127.0.0.1:28097 CTXPROP_INBOUND_ADDRESS=127.0.0.1:28087 \
			CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:0 CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS="" CTXPROP_SYNC_ADDRESS=127.0.0.1:0 \
			CTXPROP_INBOUND_APP=127.0.0.1:28080 CTXPROP_INBOUND_CONTEXT_BAGGAGE=ctx.name \
			CTXPROP_STORE_PATH="$work/data/ctxprop.db" CTXPROP_LOG_FORMAT=json \
			"$work/sidecar" run -config - </dev/null >"$work/sidecar.log" 2>&1 &
		sp=$!
		pids+=("$sp")
		for _ in $(seq 100); do
			(exec 3<>/dev/tcp/127.0.0.1/28087) 2>/dev/null && break
			sleep 0.1
		done
		sleep 1
		line="$r	$label	$(rss_mb "$sp")"
		c0=$(cpu_ticks "$sp") req=0
		for _ in $(seq "$turns"); do
			n=$(wrk -t2 -c64 -d"${secs}s" -s "$root/bench/proxy/trace.lua" http://127.0.0.1:28087/ | awk '/requests in/ {print $1}')
			req=$((req + n))
			line="$line	$(rss_mb "$sp")"
		done
		c1=$(cpu_ticks "$sp")
		sleep 10
		line="$line	$(rss_mb "$sp")	$(anon_file_mb "$sp")	$(awk -v c=$((c1 - c0)) -v n="$req" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", c * 1000 / hz * 1000 / n}')	$((req / (turns * secs)))"
		printf '%s\n' "$line"
		kill "$sp"
		wait "$sp" 2>/dev/null || true
	done
done
