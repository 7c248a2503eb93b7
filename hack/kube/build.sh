#!/usr/bin/env bash
# build.sh builds kube-apiserver and etcd from the Go module proxy into .bin/kube/ (or $1), where
# the k8s package's envtest tests find them (KUBEBUILDER_ASSETS overrides the folder).
#
# It is idempotent: a binary is rebuilt only when it is missing or reports another version, so a
# second run (or CI after a cache restore) takes seconds. A cold build takes up to 20 minutes on
# 2 cores and about 2.4 GB of memory, and says so as it goes; the tools module lives here, apart
# from the project's go.mod.
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=3.7.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/.bin/kube}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

log() { printf 'hack/kube/build.sh: %s\n' "$*"; }

# A cold build is long and go itself prints only "go: downloading" lines, so every step says
# before it starts what it does and roughly how long it takes, shows signs of life while it
# runs, and says after it how long it took.

# heartbeat WHAT START prints a line every 30s until killed. Its sleep holds no output open,
# so that a reader of the script's output (a pipe) sees the end when the script ends.
heartbeat() {
	while sleep 30 </dev/null >/dev/null 2>&1; do log "  ... still $1 ($((SECONDS - $2))s so far)"; done
}

# compile NAME PKG OUT LDFLAGS builds PKG into OUT, counting the packages as go compiles them
# (go build -v names each one it compiles; cached packages are not named, and other lines,
# such as compile errors, are passed through).
compile() {
	local name=$1 pkg=$2 bin=$3 ldflags=$4 total n=0 start=$SECONDS line
	total=$(cd "$here" && go list -deps "$pkg" | wc -l)
	log "  compiling $name: $total packages to compile or take from the build cache"
	(cd "$here" && go build -v -trimpath -ldflags "$ldflags" -o "$bin.tmp" "$pkg") 2>&1 |
		while IFS= read -r line; do
			if [[ $line =~ ^[A-Za-z0-9._~/-]+$ ]]; then
				n=$((n + 1))
				if ((n % 100 == 0)); then
					log "  ... $name: compiled $n of at most $total packages ($((SECONDS - start))s so far)"
				fi
			else
				printf '%s\n' "$line"
			fi
		done
	mv "$bin.tmp" "$bin"
}

# Static binaries run on any Linux the tests run on. go.sum here is complete, so the build
# never edits the tools module (-mod=readonly is the default).
export CGO_ENABLED=0

# Modules first, on their own, so that the long silent part has a name and a progress line.
log "step 1/3: downloading the modules of kube-apiserver and etcd into $(go env GOMODCACHE)"
log "  (cold: 147 modules, 88 MB of zips, 1-5 minutes depending on the network; cached: a second)"
start=$SECONDS
heartbeat "downloading modules" "$start" &
hb=$!
trap 'kill "$hb" 2>/dev/null || true' EXIT
(cd "$here" && go mod download)
kill "$hb" 2>/dev/null || true
log "step 1/3: modules ready in $((SECONDS - start))s"

apiserver="$out/kube-apiserver"
if [[ -x "$apiserver" ]] && "$apiserver" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION"; then
	log "step 2/3: kube-apiserver $KUBE_VERSION already in $out, skipping"
else
	log "step 2/3: building kube-apiserver $KUBE_VERSION into $out"
	log "  (cold: 5-20 minutes on 2 cores and about 2.4 GB of memory; with a warm build cache: 20-30s)"
	start=$SECONDS
	compile kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$apiserver" \
		"-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
	log "step 2/3: kube-apiserver built in $((SECONDS - start))s"
fi

etcd="$out/etcd"
if [[ -x "$etcd" ]] && "$etcd" --version 2>/dev/null | grep -q "^etcd Version: $ETCD_VERSION\$"; then
	log "step 3/3: etcd $ETCD_VERSION already in $out, skipping"
else
	log "step 3/3: building etcd $ETCD_VERSION into $out"
	log "  (cold: 1-3 minutes, most packages being shared with kube-apiserver; with a warm build cache: seconds)"
	start=$SECONDS
	compile etcd go.etcd.io/etcd/server/v3 "$etcd" "-s -w"
	log "step 3/3: etcd built in $((SECONDS - start))s"
fi

log "done: KUBEBUILDER_ASSETS=$out"
