#!/usr/bin/env bash
# A/B of two builds of the real `sidecar run` binary on one machine, in one run: the
# sidecar built from a git revision (A, "before") and from the working tree (B, "after"),
# both in front of bench/proxy's Go origin on loopback, each with its own store, no peers,
# the context taken from baggage (inbound.context_baggage = "ctx.name"). In every round
# A and B take turns at each rate (the order flips each round, so drift on a shared
# machine hits both alike); vegeta sends every request with its own traceparent and
# baggage ctx.name=bench, as run.sh does. Per turn: the sidecar's CPU (utime+stime from
# /proc/<pid>/stat) per 1000 requests, its RSS after the turn, p50 and p99. The last lines
# are the ratio B ÷ A of CPU per request, per round and rate, and the "sync fell behind"
# lines each sidecar logged.
#
# Usage: bench/proxy/sidecar-ab.sh [-b revision] [-r rounds] [-d seconds per turn]
#                                  [-R "rate rate ..."]   (0 means saturation, 64 workers)
#                                  [-A VAR=value,...] [-B VAR=value,...]
# -A and -B add environment variables to A's and B's sidecar: with -b HEAD on a clean
# tree, an A/B of one build under two settings (e.g. -B GOGC=100).
# Needs: go, jq. vegeta is built into the ignored .bin/ as run.sh does.
set -euo pipefail

vegeta_version=v12.13.0
rev=HEAD rounds=5 dur=10 rates="2000"
env_a= env_b=
while getopts b:r:d:R:A:B:h opt; do
	case $opt in
	b) rev=$OPTARG ;;
	r) rounds=$OPTARG ;;
	d) dur=$OPTARG ;;
	R) rates=$OPTARG ;;
	A) env_a=$OPTARG ;;
	B) env_b=$OPTARG ;;
	*) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
read -ra rates <<<"$rates"
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/.bin
mkdir -p "$bin"
for tool in go jq; do
	command -v "$tool" >/dev/null || { echo "sidecar-ab.sh: $tool not found" >&2; exit 1; }
done
if [[ ! -x $bin/vegeta ]]; then
	GOBIN=$bin go install "github.com/tsenart/vegeta/v12@$vegeta_version"
fi

work=$(mktemp -d)
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/src-a"
(cd "$root" && git archive "$rev" | tar -x -C "$work/src-a")
(cd "$work/src-a" && go build -o "$work/sidecar-a" ./cmd/sidecar)
(cd "$root" && go build -o "$work/sidecar-b" ./cmd/sidecar && go build -o "$work/origin" ./bench/proxy/origin)
echo "A = $(cd "$root" && git rev-parse --short "$rev"), B = working tree of $(cd "$root" && git rev-parse --short HEAD)$(cd "$root" && git diff --quiet HEAD || echo ' (modified)')"

origin_port=18180
"$work/origin" -addr "127.0.0.1:$origin_port" >"$work/origin.log" 2>&1 &
pids+=($!)

declare -A port=([a]=18181 [b]=18182) admin=([a]=18191 [b]=18192) pid
for v in a b; do
	extra=()
	[[ $v == a && -n $env_a ]] && IFS=, read -ra extra <<<"$env_a"
	[[ $v == b && -n $env_b ]] && IFS=, read -ra extra <<<"$env_b"
	env ${extra[@]+"${extra[@]}"} CTXPROP_ADMIN_ADDRESS="127.0.0.1:${admin[$v]}" CTXPROP_INBOUND_ADDRESS="127.0.0.1:${port[$v]}" \
		CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:0 CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS="" CTXPROP_SYNC_ADDRESS=127.0.0.1:0 \
		CTXPROP_INBOUND_APP="127.0.0.1:$origin_port" CTXPROP_INBOUND_CONTEXT_BAGGAGE=ctx.name \
		CTXPROP_STORE_PATH="$work/$v.db" CTXPROP_LOG_FORMAT=json \
		"$work/sidecar-$v" run -config - >"$work/$v.log" 2>&1 &
	pids+=($!)
	pid[$v]=$!
done
for p in "$origin_port" "${port[a]}" "${port[b]}" "${admin[a]}" "${admin[b]}"; do
	deadline=$((SECONDS + 30))
	until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
		((SECONDS > deadline)) && { echo "nothing listens on $p" >&2; tail "$work"/*.log >&2; exit 1; }
		sleep 0.05
	done
done

max=2000
for r in "${rates[@]}"; do ((r > max)) && max=$r; done
for v in a b; do
	awk -v url="http://127.0.0.1:${port[$v]}/orders" -v n=$((max * dur + 1000)) 'BEGIN {
		srand()
		for (i = 0; i < n; i++) {
			tid = ""; sid = ""
			for (j = 0; j < 32; j++) tid = tid sprintf("%x", int(rand() * 16))
			for (j = 0; j < 16; j++) sid = sid sprintf("%x", int(rand() * 16))
			printf "GET %s\ntraceparent: 00-%s-%s-01\nbaggage: ctx.name=bench\n\n", url, tid, sid
		}
	}' >"$work/targets.$v"
done

cpu_ticks() {
	local rest
	rest=$(sed 's/^.*) //' "/proc/$1/stat")
	set -- $rest
	echo $((${12} + ${13}))
}
hz=$(getconf CLK_TCK)

# turn attacks variant $1 at rate $2 (0: saturation) and prints "cpu_ms/1k rss_mb p50_us p99_us requests".
turn() {
	local v=$1 rate=$2 c0 c1 report
	local args=(-rate "$rate/s")
	[[ $rate == 0 ]] && args=(-rate 0 -max-workers 64)
	c0=$(cpu_ticks "${pid[$v]}")
	report=$("$bin/vegeta" attack -targets "$work/targets.$v" "${args[@]}" -duration "${dur}s" -keepalive=true |
		"$bin/vegeta" report -type json)
	c1=$(cpu_ticks "${pid[$v]}")
	jq -r --arg cpu $(((c1 - c0) * 1000 / hz)) --arg rss "$(awk '$1 == "VmRSS:" {print $2}' "/proc/${pid[$v]}/status")" \
		'"\(($cpu | tonumber) * 1000 / .requests) \(($rss | tonumber) / 1024) \(.latencies["50th"] / 1000) \(.latencies["99th"] / 1000) \(.requests) \(.success)"' <<<"$report"
}

# Warm both up.
for v in a b; do "$bin/vegeta" attack -targets "$work/targets.$v" -rate 1000/s -duration 2s | "$bin/vegeta" report >/dev/null; done

printf 'round\trate\tvariant\tcpu_ms/1k\trss_mb\tp50_us\tp99_us\trequests\tsuccess\n'
ratios=()
for ((round = 1; round <= rounds; round++)); do
	order=(a b)
	((round % 2 == 0)) && order=(b a)
	for rate in "${rates[@]}"; do
		declare -A cpu=()
		for v in "${order[@]}"; do
			read -r c rss p50 p99 n ok < <(turn "$v" "$rate")
			cpu[$v]=$c
			printf '%d\t%s\t%s\t%.1f\t%.1f\t%.0f\t%.0f\t%d\t%s\n' "$round" "$rate" "$v" "$c" "$rss" "$p50" "$p99" "$n" "$ok"
		done
		ratios+=("round $round rate $rate: B/A cpu per request $(awk -v a="${cpu[a]}" -v b="${cpu[b]}" 'BEGIN {printf "%.2f", b / a}')")
	done
done
printf '%s\n' "${ratios[@]}"
for v in a b; do
	echo "$v: \"sync fell behind\" logged $(grep -c 'sync fell behind' "$work/$v.log" || true) times; RSS now $(awk '$1 == "VmRSS:" {print $2}' "/proc/${pid[$v]}/status") kB"
done
