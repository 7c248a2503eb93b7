#!/usr/bin/env bash
# Compares HTTP proxies in front of one Go origin with wrk at saturation, on loopback:
#
#   direct        wrk -> origin (no proxy; the ceiling)
#   nginx         nginx (Debian nginx-light), upstream keepalive 256
#   haproxy       haproxy (Debian), http-reuse always
#   reverseproxy  a bare httputil.ReverseProxy with a tuned Transport (bench/proxy/proxyd)
#   ctxprop       package proxy's inbound side with a no-op Store (bench/proxy/proxyd)
#
# For each run it reports requests/s, the proxy's CPU time per 1000 requests (utime +
# stime of all its processes from /proc/<pid>/stat, before and after), its resident
# memory (VmRSS after the run, VmHWM peak), and the origin's CPU per 1000 requests. The
# variants alternate in every round, so drift on a shared machine hits them all alike;
# the summary gives the median of the rounds.
#
# Usage: bench/proxy/run.sh [-r rounds] [-d duration] [-c connections] [-t wrk threads]
# Needs: go, wrk, nginx, haproxy (apt-get install wrk nginx-light haproxy).
# Binaries go to the ignored .bin/ folder at the repository root.
set -euo pipefail

rounds=3 duration=10s conns=64 threads=2
while getopts r:d:c:t:h opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	d) duration=$OPTARG ;;
	c) conns=$OPTARG ;;
	t) threads=$OPTARG ;;
	*) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
if ((rounds < 3)); then
	echo "run.sh: -r $rounds: use at least 3 rounds, or the median means little" >&2
	exit 2
fi

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/.bin
for tool in go wrk nginx haproxy; do
	if ! command -v "$tool" >/dev/null; then
		echo "run.sh: $tool not found; install it (apt-get install wrk nginx-light haproxy)" >&2
		exit 1
	fi
done

mkdir -p "$bin"
(cd "$root" && go build -o "$bin/bench-origin" ./bench/proxy/origin && go build -o "$bin/bench-proxyd" ./bench/proxy/proxyd)

work=$(mktemp -d)
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

origin_port=18080
declare -A port=([direct]=$origin_port [nginx]=18081 [haproxy]=18082 [reverseproxy]=18083 [ctxprop]=18084)
declare -A main_pid
variants=(direct nginx haproxy reverseproxy ctxprop)

wait_port() {
	local deadline=$((SECONDS + 10))
	until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
		if ((SECONDS > deadline)); then
			echo "run.sh: nothing listens on 127.0.0.1:$1 after 10s; see $work/*.log" >&2
			exit 1
		fi
		sleep 0.05
	done
}

"$bin/bench-origin" -addr "127.0.0.1:$origin_port" >"$work/origin.log" 2>&1 &
pids+=($!)
main_pid[direct]=$!
origin_pid=$!

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $work/nginx/body;
	proxy_temp_path $work/nginx/proxy;
	fastcgi_temp_path $work/nginx/fastcgi;
	uwsgi_temp_path $work/nginx/uwsgi;
	scgi_temp_path $work/nginx/scgi;
	upstream app {
		server 127.0.0.1:$origin_port;
		keepalive 256;
	}
	server {
		listen 127.0.0.1:${port[nginx]};
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
		}
	}
}
CONF
nginx -c "$work/nginx.conf" -p "$work/nginx" -e "$work/nginx/error.log" >"$work/nginx.log" 2>&1 &
pids+=($!)
main_pid[nginx]=$!

cat >"$work/haproxy.cfg" <<CONF
global
	nbthread 2
	maxconn 4096
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	option forwardfor
	http-reuse always
frontend fe
	bind 127.0.0.1:${port[haproxy]}
	default_backend be
backend be
	server app 127.0.0.1:$origin_port maxconn 256
CONF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
main_pid[haproxy]=$!

for mode in reverseproxy ctxprop; do
	"$bin/bench-proxyd" -mode "$mode" -listen "127.0.0.1:${port[$mode]}" -app "127.0.0.1:$origin_port" >"$work/$mode.log" 2>&1 &
	pids+=($!)
	main_pid[$mode]=$!
done

for v in "${variants[@]}"; do
	wait_port "${port[$v]}"
done

# proc_pids prints a process and its children (nginx's workers).
proc_pids() {
	echo "$1"
	pgrep -P "$1" || true
}

# cpu_ticks sums utime and stime of the given pids; the command name in
# /proc/<pid>/stat may hold spaces, so fields are counted after its closing ')'.
cpu_ticks() {
	local total=0 pid rest
	for pid in "$@"; do
		rest=$(sed 's/^.*) //' "/proc/$pid/stat")
		set -- $rest
		total=$((total + ${12} + ${13}))
	done
	echo "$total"
}

# mem_kb sums a /proc/<pid>/status field (VmRSS, VmHWM) of the given pids.
mem_kb() {
	local field=$1 total=0 pid kb
	shift
	for pid in "$@"; do
		kb=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status")
		total=$((total + ${kb:-0}))
	done
	echo "$total"
}

hz=$(getconf CLK_TCK)
url_path=/orders
headers=(-H "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" -H "baggage: ctx.name=bench")

# Warm every variant up: connection pools, JIT-free but page-cache and GC warm.
for v in "${variants[@]}"; do
	wrk -t "$threads" -c "$conns" -d 2s "${headers[@]}" "http://127.0.0.1:${port[$v]}$url_path" >/dev/null
done

results=$work/results.tsv
printf 'round\tvariant\treq/s\tproxy_cpu_ms/1k\tproxy_rss_mb\tproxy_peak_mb\torigin_cpu_ms/1k\n' | tee "$results"
for ((round = 1; round <= rounds; round++)); do
	for v in "${variants[@]}"; do
		mapfile -t ppids < <(proc_pids "${main_pid[$v]}")
		p0=$(cpu_ticks "${ppids[@]}")
		o0=$(cpu_ticks "$origin_pid")
		out=$(wrk -t "$threads" -c "$conns" -d "$duration" "${headers[@]}" "http://127.0.0.1:${port[$v]}$url_path")
		p1=$(cpu_ticks "${ppids[@]}")
		o1=$(cpu_ticks "$origin_pid")
		if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
			echo "run.sh: $v had errors:" >&2
			echo "$out" >&2
		fi
		reqs=$(awk '/requests in/ {print $1}' <<<"$out")
		rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
		ocpu=$(awk -v t=$((o1 - o0)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.1f", t * 1000 / hz / n * 1000}')
		if [[ $v == direct ]]; then
			pcpu=- rss=- peak=-
		else
			pcpu=$(awk -v t=$((p1 - p0)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.1f", t * 1000 / hz / n * 1000}')
			rss=$(awk -v k="$(mem_kb VmRSS "${ppids[@]}")" 'BEGIN {printf "%.1f", k / 1024}')
			peak=$(awk -v k="$(mem_kb VmHWM "${ppids[@]}")" 'BEGIN {printf "%.1f", k / 1024}')
		fi
		printf '%d\t%s\t%.0f\t%s\t%s\t%s\t%s\n' "$round" "$v" "$rps" "$pcpu" "$rss" "$peak" "$ocpu" | tee -a "$results"
	done
done

echo
echo "median of $rounds rounds (wrk -t $threads -c $conns -d $duration, $(nproc) CPUs):"
printf 'variant\treq/s\tproxy_cpu_ms/1k\tproxy_rss_mb\n'
for v in "${variants[@]}"; do
	median() {
		awk -F'\t' -v v="$v" -v c="$1" 'NR > 1 && $2 == v {print $c}' "$results" | sort -g |
			awk '{a[NR] = $1} END {print (a[int((NR + 1) / 2)] == "" ? "-" : a[int((NR + 1) / 2)])}'
	}
	printf '%s\t%s\t%s\t%s\n' "$v" "$(median 3)" "$(median 4)" "$(median 5)"
done
