#!/usr/bin/env bash
# Profiles tack during a fan-out burst: starts tack (--route "* test"), subscribes N streams with
# loadgen, attaches `perf record` to tack for the publish phase, prints loadgen's report and the
# flat perf profile (by DSO and by symbol). Needs perf (apt-get install linux-perf).
# Usage: N=10000 M=100 TACK_ARGS="--shards 2" loadtest/perf_fanout.sh   (binaries must be built)
#        R=DIR uses tack and loadgen from DIR instead of target/release (e.g. another build's).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-10000}
M=${M:-100}
TACK_ARGS=${TACK_ARGS:-}
PERF_DATA=${PERF_DATA:-/tmp/tack-fanout.perf.data}
R=${R:-$ROOT/target/release}
D=$(mktemp -d -t perf-fanout.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$D"
}
trap cleanup EXIT
port() { echo $((20000 + RANDOM % 12000)); }
P1=$(port) P2=$(port) P3=$(port)
# shellcheck disable=SC2086 # TACK_ARGS is a word list
"$R/tack" --port "127.0.0.1:$P1" --publish-port "127.0.0.1:$P2" --metrics-port "127.0.0.1:$P3" \
    --route "* test" $TACK_ARGS >"$D/out" 2>"$D/err" &
TP=$!
PIDS+=("$TP")
for _ in $(seq 400); do grep -q "tack ready" "$D/err" && break; sleep 0.05; done
grep -q "tack ready" "$D/err" || { cat "$D/err"; exit 1; }
timeout 600 "$R/loadgen" --target "127.0.0.1:$P1" --publish-addr "127.0.0.1:$P2" --metrics "127.0.0.1:$P3" \
    -n "$N" -m "$M" --pid-tree "$TP" --label tack-perf --settle-ms 3000 --json >"$D/lg.out" 2>&1 &
LP=$!
PIDS+=("$LP")
# The subscribe phase takes N / 3000 s at loadgen's default connect rate; the 3 s settle follows.
sleep $((N / 3000 + 2))
perf record -F 1999 -p "$TP" -o "$PERF_DATA" 2>"$D/perf.err" &
PP=$!
wait "$LP" || true
kill -INT "$PP" 2>/dev/null || true
wait "$PP" || true
cat "$D/lg.out"
perf report -i "$PERF_DATA" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
perf report -i "$PERF_DATA" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
