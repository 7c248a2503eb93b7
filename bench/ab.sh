#!/usr/bin/env bash
# Compares one Go benchmark between an earlier commit and the working tree, alternating
# the two builds round by round so that drift on a shared machine hits both alike.
#
# The package's current *_test.go files replace the earlier commit's, so the benchmark
# exists on both sides; with -f only the files named are copied and the earlier commit keeps
# its other test files. -s applies a sed expression to the copies, where a test file names
# something the earlier code did not have yet.
#
# Usage: bench/ab.sh [-r rounds] [-t benchtime] [-f test-file]... [-s sed-expr] REV PKG BENCH
# e.g.   bench/ab.sh -s 's/\.LogSyncs/.Commits/g' 6ff12f3 ./bench/store AdminIncrSerial
#        bench/ab.sh -f crdt/bench_test.go 6ff12f3 ./crdt Join_TelemetryDelta
set -euo pipefail
rounds=3 benchtime=3s sedexpr= files=()
while getopts r:t:f:s:h opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	t) benchtime=$OPTARG ;;
	f) files+=("$OPTARG") ;;
	s) sedexpr=$OPTARG ;;
	*) sed -n '2,14p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ $# -ne 3 ]; then
	sed -n '2,14p' "$0" >&2
	exit 2
fi
rev=$1 pkg=$2 bench=$3
root=$(git rev-parse --show-toplevel)
cd "$root"
tmp=$(mktemp -d)
cleanup() {
	git worktree remove --force "$tmp/before" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
git worktree add -q --detach "$tmp/before" "$rev"
if [ ${#files[@]} -eq 0 ]; then
	rm -f "$tmp/before/$pkg"/*_test.go
	files=("$pkg"/*_test.go)
fi
for f in "${files[@]}"; do
	cp "$f" "$tmp/before/$f"
	if [ -n "$sedexpr" ]; then
		sed -i "$sedexpr" "$tmp/before/$f"
	fi
done
(cd "$tmp/before" && go test -c -o "$tmp/before.test" "$pkg")
go test -c -o "$tmp/after.test" "$pkg"
for r in $(seq 1 "$rounds"); do
	for side in before after; do
		"$tmp/$side.test" -test.run '^$' -test.bench "^Benchmark$bench\$" -test.benchtime "$benchtime" -test.benchmem |
			awk -v s="$side" -v r="$r" '/^Benchmark/ {print "round " r " " s ": " $0}'
	done
done
echo "before = $(git rev-parse --short "$rev"), after = the working tree at $(git rev-parse --short HEAD)"
