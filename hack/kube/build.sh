#!/usr/bin/env bash
# build.sh builds kube-apiserver and etcd from the Go module proxy into .bin/kube/ (or $1), where
# the k8s package's envtest tests find them (KUBEBUILDER_ASSETS overrides the folder).
#
# It is idempotent: a binary is rebuilt only when it is missing or reports another version, so a
# second run (or CI after a cache restore) takes seconds. A cold build takes several minutes and
# about 2.4 GB of memory; the tools module lives here, apart from the project's go.mod.
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=3.7.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/.bin/kube}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

log() { printf 'hack/kube/build.sh: %s\n' "$*"; }

# Static binaries run on any Linux the tests run on. go.sum here is complete, so the build
# never edits the tools module (-mod=readonly is the default).
export CGO_ENABLED=0

apiserver="$out/kube-apiserver"
if [[ -x "$apiserver" ]] && "$apiserver" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION"; then
	log "kube-apiserver $KUBE_VERSION already in $out, skipping"
else
	log "building kube-apiserver $KUBE_VERSION into $out (cold: several minutes)"
	start=$SECONDS
	(cd "$here" && go build -trimpath \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37" \
		-o "$apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	mv "$apiserver.tmp" "$apiserver"
	log "kube-apiserver built in $((SECONDS - start))s"
fi

etcd="$out/etcd"
if [[ -x "$etcd" ]] && "$etcd" --version 2>/dev/null | grep -q "^etcd Version: $ETCD_VERSION\$"; then
	log "etcd $ETCD_VERSION already in $out, skipping"
else
	log "building etcd $ETCD_VERSION into $out"
	start=$SECONDS
	(cd "$here" && go build -trimpath -ldflags "-s -w" -o "$etcd.tmp" go.etcd.io/etcd/server/v3)
	mv "$etcd.tmp" "$etcd"
	log "etcd built in $((SECONDS - start))s"
fi

log "done: KUBEBUILDER_ASSETS=$out"
