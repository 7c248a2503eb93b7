#!/usr/bin/env bash
# Compares HTTP proxies in front of one Go origin, on loopback, in one run:
#
#   direct           wrk/vegeta -> origin (no proxy; the floor of latency, the ceiling of req/s)
#   nginx            nginx (Debian nginx-light), 2 workers, upstream keepalive 256
#   haproxy          haproxy (Debian), 2 threads, http-reuse always
#   reverseproxy     a bare httputil.ReverseProxy with a tuned Transport (bench/proxy/proxyd)
#   fasthttp         a bare reverse proxy on valyala/fasthttp (bench/proxy/proxyd), pool 256:
#                    the library candidate for a data path off net/http, no header work
#   caddy            Caddy's reverse_proxy (Go module, built into .bin/), keepalive pool 256
#   ctxprop          package proxy's inbound side, telemetry to a Store that drops it
#                    (headers only: the data path alone)
#   ctxprop+counter  the same with the real localstore on a bbolt file, windowed durability,
#                    as the sidecar wires it: every request writes its telemetry counters
#   sidecar          the real binary: `sidecar run` built from this tree as `make build` builds
#                    it (static, stripped), its own store, no
#                    peers, the context from baggage (inbound.context_baggage = "ctx.name"),
#                    on its inbound fast path (inbound.fast_path = true, the default)
#   sidecar-nethttp  the same binary with inbound.fast_path = false (net/http server and
#                    Transport), to compare the two data paths in one run
#
# In every round each variant gets, in turn: wrk at saturation (req/s, the proxy's CPU time
# per 1000 requests as utime+stime of all its processes from /proc/<pid>/stat, its resident
# memory after the run), then vegeta at fixed rates (p50 and p99 latency at each rate). The
# variants alternate within every round (each round starting three variants further on),
# so drift on a shared machine hits them all alike; the summary is the median of the rounds, as a Markdown table with the ratios and deltas
# against direct. Every request is its own trace (a random traceparent, from trace.lua for
# wrk and a generated targets file for vegeta) and carries baggage ctx.name=bench.
#
# Usage: bench/proxy/run.sh [-r rounds] [-d wrk duration] [-c connections] [-t wrk threads]
#                           [-v vegeta duration per rate] [-R "rate rate ..."] [-o table.md]
# Needs: go, wrk, nginx, haproxy, jq (apt-get install wrk nginx-light haproxy jq). Caddy and
# vegeta are built from the Go module proxy into the ignored .bin/ folder at the repository
# root on first use, at the versions pinned below.
set -euo pipefail

caddy_version=v2.11.9
vegeta_version=v12.13.0

rounds=3 duration=10s conns=64 threads=2 vduration=5s rates="500 1000 2000" table_out=
while getopts r:d:c:t:v:R:o:h opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	d) duration=$OPTARG ;;
	c) conns=$OPTARG ;;
	t) threads=$OPTARG ;;
	v) vduration=$OPTARG ;;
	R) rates=$OPTARG ;;
	o) table_out=$OPTARG ;;
	*) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
if [[ ! $vduration =~ ^[0-9]+s$ ]]; then
	echo "run.sh: -v $vduration: give whole seconds, such as 5s" >&2
	exit 2
fi
if ((rounds < 3)); then
	echo "run.sh: -r $rounds: use at least 3 rounds, or the median means little" >&2
	exit 2
fi
read -ra rates <<<"$rates"

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/.bin
for tool in go wrk nginx haproxy jq; do
	if ! command -v "$tool" >/dev/null; then
		echo "run.sh: $tool not found; install it (apt-get install wrk nginx-light haproxy jq)" >&2
		exit 1
	fi
done

mkdir -p "$bin"
# The sidecar is built as `make build` and the Dockerfile build it: the binary users run.
(cd "$root" && go build -o "$bin/bench-origin" ./bench/proxy/origin && go build -o "$bin/bench-proxyd" ./bench/proxy/proxyd &&
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$bin/bench-sidecar" ./cmd/sidecar)

# go_tool builds a Go command at a pinned version with `go install pkg@version`, which
# resolves the tool's own go.mod outside this module: its dependencies never enter ours.
go_tool() {
	local name=$1 pkg=$2 version=$3 module=$4
	if [[ -x $bin/$name ]] && go version -m "$bin/$name" | awk -v m="$module" -v v="$version" '$1 == "mod" && $2 == m && $3 == v {ok = 1} END {exit !ok}'; then
		return
	fi
	echo "run.sh: building $pkg@$version into $bin" >&2
	GOBIN=$bin go install "$pkg@$version"
}
go_tool caddy github.com/caddyserver/caddy/v2/cmd/caddy "$caddy_version" github.com/caddyserver/caddy/v2
go_tool vegeta github.com/tsenart/vegeta/v12 "$vegeta_version" github.com/tsenart/vegeta/v12

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
variants=(direct nginx haproxy reverseproxy fasthttp caddy ctxprop ctxprop+counter sidecar sidecar-nethttp)
declare -A port=([direct]=$origin_port [nginx]=18081 [haproxy]=18082 [reverseproxy]=18083
	[caddy]=18085 [fasthttp]=18089 [ctxprop]=18084 [ctxprop+counter]=18086 [sidecar]=18087 [sidecar-nethttp]=18088)
declare -A main_pid

wait_port() {
	local deadline=$((SECONDS + 20))
	until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
		if ((SECONDS > deadline)); then
			echo "run.sh: nothing listens on 127.0.0.1:$1 after 20s; logs:" >&2
			tail -n 20 "$work"/*.log >&2
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

# Caddy: no admin endpoint, no HTTPS, no access log (its default); an upstream keep-alive
# pool as large as the others' (Caddy's default keeps 32 idle connections per host).
cat >"$work/Caddyfile" <<CONF
{
	admin off
	auto_https off
	persist_config off
}
http://127.0.0.1:${port[caddy]} {
	reverse_proxy 127.0.0.1:$origin_port {
		transport http {
			keepalive 90s
			keepalive_idle_conns 256
			keepalive_idle_conns_per_host 256
		}
	}
}
CONF
XDG_DATA_HOME=$work/caddy XDG_CONFIG_HOME=$work/caddy \
	"$bin/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
pids+=($!)
main_pid[caddy]=$!

"$bin/bench-proxyd" -mode reverseproxy -listen "127.0.0.1:${port[reverseproxy]}" -app "127.0.0.1:$origin_port" >"$work/reverseproxy.log" 2>&1 &
pids+=($!)
main_pid[reverseproxy]=$!
"$bin/bench-proxyd" -mode fasthttp -listen "127.0.0.1:${port[fasthttp]}" -app "127.0.0.1:$origin_port" >"$work/fasthttp.log" 2>&1 &
pids+=($!)
main_pid[fasthttp]=$!
"$bin/bench-proxyd" -mode ctxprop -listen "127.0.0.1:${port[ctxprop]}" -app "127.0.0.1:$origin_port" >"$work/ctxprop.log" 2>&1 &
pids+=($!)
main_pid[ctxprop]=$!
"$bin/bench-proxyd" -mode ctxprop -store "$work/store/ctxprop.db" -listen "127.0.0.1:${port[ctxprop+counter]}" -app "127.0.0.1:$origin_port" >"$work/ctxprop-counter.log" 2>&1 &
pids+=($!)
main_pid[ctxprop+counter]=$!

# The real binary, twice: the fast path (default) and the net/http path. Each has its own
# store and admin port; the outbound and sync listeners take free ports.
declare -A sidecar_admin=([sidecar]=18097 [sidecar-nethttp]=18098) sidecar_fast=([sidecar]=true [sidecar-nethttp]=false)
for v in sidecar sidecar-nethttp; do
	env CTXPROP_ADMIN_ADDRESS="127.0.0.1:${sidecar_admin[$v]}" CTXPROP_INBOUND_ADDRESS="127.0.0.1:${port[$v]}" \
		CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:0 CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS="" CTXPROP_SYNC_ADDRESS=127.0.0.1:0 \
		CTXPROP_INBOUND_APP="127.0.0.1:$origin_port" CTXPROP_INBOUND_CONTEXT_BAGGAGE=ctx.name \
		CTXPROP_INBOUND_FAST_PATH="${sidecar_fast[$v]}" \
		CTXPROP_STORE_PATH="$work/store/$v.db" CTXPROP_LOG_FORMAT=json \
		"$bin/bench-sidecar" run -config - >"$work/$v.log" 2>&1 </dev/null &
	pids+=($!)
	main_pid[$v]=$!
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
# Every request carries its own trace (a random traceparent) and the context in baggage:
# wrk through trace.lua, vegeta through a targets file with one trace per target.
wrk_script=$root/bench/proxy/trace.lua
max_rate=0
for rate in "${rates[@]}"; do
	((rate > max_rate)) && max_rate=$rate
done
for v in "${variants[@]}"; do
	awk -v url="http://127.0.0.1:${port[$v]}$url_path" -v n=$((max_rate * ${vduration%s} + 1000)) 'BEGIN {
		srand()
		for (i = 0; i < n; i++) {
			tid = ""; sid = ""
			for (j = 0; j < 32; j++) tid = tid sprintf("%x", int(rand() * 16))
			for (j = 0; j < 16; j++) sid = sid sprintf("%x", int(rand() * 16))
			printf "GET %s\ntraceparent: 00-%s-%s-01\nbaggage: ctx.name=bench\n\n", url, tid, sid
		}
	}' >"$work/targets.$v"
done

# Warm every variant up: connection pools, page cache, heaps grown to their working size.
for v in "${variants[@]}"; do
	wrk -t "$threads" -c "$conns" -d 2s -s "$wrk_script" "http://127.0.0.1:${port[$v]}$url_path" >/dev/null
done

# vegeta_run attacks a variant at a fixed rate and prints "p50_us p99_us requests".
vegeta_run() {
	local v=$1 rate=$2 report
	report=$("$bin/vegeta" attack -targets "$work/targets.$v" -rate "$rate/s" -duration "$vduration" -keepalive=true |
		"$bin/vegeta" report -type json)
	if [[ $(jq -r '.success' <<<"$report") != 1 ]]; then
		echo "run.sh: $v at $rate/s had failures: $(jq -c '{success, status_codes, errors}' <<<"$report")" >&2
	fi
	jq -r '"\(.latencies["50th"] / 1000) \(.latencies["99th"] / 1000) \(.requests)"' <<<"$report"
}

results=$work/results.tsv
header='round\tvariant\treq/s\tproxy_cpu_ms/1k\tproxy_rss_mb\tproxy_peak_mb\torigin_cpu_ms/1k\tproxy_cpu_ms/1k@rates'
for rate in "${rates[@]}"; do
	header+="\tp50_us@$rate\tp99_us@$rate"
done
printf "$header\n" | tee "$results"
for ((round = 1; round <= rounds; round++)); do
	# Each round starts three variants further on, so that no variant always takes the
	# same place in the round, after the same neighbour.
	start=$((((round - 1) * 3) % ${#variants[@]}))
	order=("${variants[@]:start}" "${variants[@]:0:start}")
	for v in "${order[@]}"; do
		mapfile -t ppids < <(proc_pids "${main_pid[$v]}")
		p0=$(cpu_ticks "${ppids[@]}")
		o0=$(cpu_ticks "$origin_pid")
		out=$(wrk -t "$threads" -c "$conns" -d "$duration" -s "$wrk_script" "http://127.0.0.1:${port[$v]}$url_path")
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
		line=$(printf '%d\t%s\t%.0f\t%s\t%s\t%s\t%s' "$round" "$v" "$rps" "$pcpu" "$rss" "$peak" "$ocpu")
		# The fixed rates: latency at each, and the proxy's CPU over all of them
		# (per request without the batching that saturation allows).
		p0=$(cpu_ticks "${ppids[@]}") total=0 lat=
		for rate in "${rates[@]}"; do
			read -r p50 p99 n < <(vegeta_run "$v" "$rate")
			lat+=$(printf '\t%.0f\t%.0f' "$p50" "$p99")
			total=$((total + n))
		done
		p1=$(cpu_ticks "${ppids[@]}")
		rcpu=-
		if [[ $v != direct ]]; then
			rcpu=$(awk -v t=$((p1 - p0)) -v n="$total" -v hz="$hz" 'BEGIN {printf "%.1f", t * 1000 / hz / n * 1000}')
		fi
		echo "$line	$rcpu$lat" | tee -a "$results"
	done
done

# median prints the median of column $2 of variant $1 over the rounds, "-" when none.
median() {
	awk -F'\t' -v v="$1" -v c="$2" 'NR > 1 && $2 == v && $c != "-" {print $c}' "$results" | sort -g |
		awk '{a[NR] = $1} END {print (NR == 0 ? "-" : a[int((NR + 1) / 2)])}'
}

table=$work/table.md
{
	echo "median of $rounds rounds; wrk -t $threads -c $conns -d $duration at saturation, vegeta"
	echo "-duration $vduration at each fixed rate; $(nproc) CPUs shared by the load generators, the"
	echo "origin and the proxy. Every request its own trace (random traceparent) with baggage"
	echo "ctx.name=bench. Latency in µs: p50 / p99, and Δ against direct at the same rate."
	echo
	cols="| variant | req/s | ÷ direct | CPU ms / 1000 req (wrk) | CPU ms / 1000 req (fixed rates) | RSS MB |"
	rule="| --- | ---: | ---: | ---: | ---: | ---: |"
	for rate in "${rates[@]}"; do
		cols+=" p50 / p99 @ $rate | Δ p50 / Δ p99 @ $rate |"
		rule+=" ---: | ---: |"
	done
	echo "$cols"
	echo "$rule"
	direct_rps=$(median direct 3)
	for v in "${variants[@]}"; do
		rps=$(median "$v" 3)
		row="| $v | $rps | $(awk -v a="$rps" -v b="$direct_rps" 'BEGIN {printf "%.2f", a / b}') | $(median "$v" 4) | $(median "$v" 8) | $(median "$v" 5) |"
		col=9
		for rate in "${rates[@]}"; do
			p50=$(median "$v" $col) p99=$(median "$v" $((col + 1)))
			d50=$(median direct $col) d99=$(median direct $((col + 1)))
			row+=" $p50 / $p99 |"
			if [[ $v == direct ]]; then
				row+=" – |"
			else
				row+=" $(printf '%+d / %+d' $((p50 - d50)) $((p99 - d99))) |"
			fi
			col=$((col + 2))
		done
		echo "$row"
	done
	echo
	for col in 4 8; do
		what="under wrk"
		[[ $col == 8 ]] && what="at the fixed rates"
		rp=$(median reverseproxy $col) ng=$(median nginx $col)
		for v in sidecar sidecar-nethttp ctxprop ctxprop+counter; do
			c=$(median "$v" $col)
			# Each round's own ratio too: drift between rounds cancels within one.
			rounds_ratio=$(awk -F'\t' -v v="$v" -v c=$col 'NR > 1 && $2 == v {x[$1] = $c} NR > 1 && $2 == "reverseproxy" {r[$1] = $c}
				END {for (i = 1; i in x; i++) printf "%s%.2f", (i > 1 ? ", " : ""), x[i] / r[i]}' "$results")
			awk -v v="$v" -v c="$c" -v rp="$rp" -v ng="$ng" -v what="$what" -v per="$rounds_ratio" \
				'BEGIN {printf "- %s CPU per request %s: %.2f × reverseproxy (rounds: %s), %.2f × nginx\n", v, what, c / rp, per, c / ng}'
		done
	done
	# The origin's CPU per request is the same work in every slot, so its changes
	# between slots measure the machine's (other tenants, caches, frequency); dividing
	# by it takes that drift out of the ctxprop / reverseproxy comparison.
	for v in sidecar ctxprop ctxprop+counter; do
		awk -F'\t' -v v="$v" 'NR > 1 && $2 == v {x[$1] = $4 / $7} NR > 1 && $2 == "reverseproxy" {r[$1] = $4 / $7}
			END {
				printf "- %s ÷ reverseproxy under wrk, each divided by the origin CPU of its own slot (rounds):", v
				for (i = 1; i in x; i++) printf "%s %.2f", (i > 1 ? "," : ""), x[i] / r[i]
				printf "\n"
			}' "$results"
	done
} >"$table"
echo
cat "$table"
if [[ -n $table_out ]]; then
	cp "$table" "$table_out"
fi
