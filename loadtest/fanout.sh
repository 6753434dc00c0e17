#!/usr/bin/env bash
# Fan-out benchmark: the same held-connection scenarios against tack, Pushpin and Nchan, measured
# with target/release/loadgen. See loadtest/README.md ("Fan-out benchmark").
#
# Usage: loadtest/fanout.sh
# Environment (all optional):
#   PEERS="tack pushpin nchan"   peers to run; every other scenario runs them in reverse order
#   SCENARIOS="stream:1000:burst stream:1000:paced ..."   MODE:SUBSCRIBERS:burst|paced[:MESSAGES]
#                                MODE is stream, sse, longpoll or ws
#   MESSAGES=100                 messages per scenario (unless the scenario names its own)
#   RATE=10                      messages/s of paced scenarios
#   INFLIGHT=32 CONNECT_RATE=3000   subscribe bounds (peers.md: Pushpin fails above ~500 in flight)
#   RUN_TIMEOUT=400              seconds before one loadgen run is killed
#   DRAIN_TIMEOUT=120            loadgen --drain-timeout-s: longest wait for deliveries after the
#                                last publish (a run also ends after 3 s without any delivery)
#   TACK_ARGS=""                 extra tack arguments (e.g. "--shards 2 --driver legacy")
#   LOADGEN_EXTRA=""             extra loadgen arguments, e.g. the ordering run:
#                                "--ids --out-of-order 4 --duplicate-every 5" (GRIP peers only)
#   NO_BUILD=1                   use the existing release binaries
#   OUT_MD=path                  also append the Markdown report to this file
#   OUT_JSON=path                also write every run's JSON summary (one per line)
#   KEEP_TMP=1                   keep the temp directory (configs, logs, loadgen outputs)
set -euo pipefail
set -f # no globbing: path templates hold "?"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/pushpin.sh
source "$ROOT/loadtest/lib/pushpin.sh"
# shellcheck source-path=SCRIPTDIR source=lib/proc.sh
source "$ROOT/loadtest/lib/proc.sh"
PEERS=${PEERS:-"tack pushpin nchan"}
SCENARIOS=${SCENARIOS:-"stream:1000:burst stream:1000:paced stream:10000:burst stream:10000:paced stream:19000:burst stream:19000:paced longpoll:1000:burst"}
MESSAGES=${MESSAGES:-100}
RATE=${RATE:-10}
INFLIGHT=${INFLIGHT:-32}
CONNECT_RATE=${CONNECT_RATE:-3000}
RUN_TIMEOUT=${RUN_TIMEOUT:-400}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
TACK_ARGS=${TACK_ARGS:-}
LOADGEN_EXTRA=${LOADGEN_EXTRA:-}
TACK_BIN=$ROOT/target/release/tack
LOADGEN=$ROOT/target/release/loadgen
GRIP_ORIGIN=$ROOT/target/release/grip_origin
OUT_MD=${OUT_MD:-}
OUT_JSON=${OUT_JSON:-}
READY_TIMEOUT_S=40

log() { printf '[fanout] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for p in $PEERS; do
    case $p in tack | pushpin | nchan) ;; *) die "unknown peer '$p' in PEERS" ;; esac
done
for s in $SCENARIOS; do
    [[ $s =~ ^(stream|sse|longpoll|ws):[0-9]+:(burst|paced)(:[0-9]+)?$ ]] || die "bad scenario '$s'"
done
want() { [[ " $PEERS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- dependencies
missing=()
command -v jq >/dev/null || missing+=(jq)
if want pushpin; then command -v pushpin >/dev/null || missing+=(pushpin); fi
if want nchan; then
    command -v nginx >/dev/null || missing+=(nginx)
    [[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]] || missing+=(libnginx-mod-nchan)
fi
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "building tack, loadgen and grip_origin (release)"
    (cd "$ROOT" && cargo build --release -p tack && cargo build --release -p loadtest --bin loadgen --bin grip_origin)
fi
for b in "$LOADGEN" "$GRIP_ORIGIN"; do [[ -x $b ]] || die "missing $b"; done
if want tack; then [[ -x $TACK_BIN ]] || die "missing $TACK_BIN"; fi

# ---------------------------------------------------------------- processes we own
TMP=$(mktemp -d -t fanout.XXXXXX)
chmod 755 "$TMP" # nginx workers drop privileges and must reach their files
OWNED=()

trap cleanup EXIT
trap 'exit 130' INT TERM


# ---------------------------------------------------------------- the GRIP backend (Pushpin)
ORIGIN_PORT=""
start_origin() {
    "$GRIP_ORIGIN" >"$TMP/grip_origin.out" 2>&1 &
    local pid=$!
    OWNED+=("$pid")
    local deadline=$((SECONDS + 10))
    until grep -q "listening on" "$TMP/grip_origin.out"; do
        ((SECONDS < deadline)) || die "grip_origin did not start"
        sleep 0.05
    done
    ORIGIN_PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$TMP/grip_origin.out")
}

# ---------------------------------------------------------------- peers
# Each start_* sets PEER_PID, SUB_PORT, PUB_PORT, METRICS (loadgen --metrics or empty).
PEER_PID=""
SUB_PORT=""
PUB_PORT=""
METRICS=""

start_tack() {
    local d=$1
    SUB_PORT=$(free_port)
    PUB_PORT=$(free_port)
    local mport
    mport=$(free_port)
    METRICS="127.0.0.1:$mport"
    # shellcheck disable=SC2086 # TACK_ARGS is a word list on purpose
    "$TACK_BIN" --port "127.0.0.1:$SUB_PORT" --publish-port "127.0.0.1:$PUB_PORT" \
        --metrics-port "$METRICS" --route "* test" $TACK_ARGS >"$d/stdout.log" 2>"$d/stderr.log" &
    PEER_PID=$!
    OWNED+=("$PEER_PID")
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until grep -q "tack ready" "$d/stderr.log"; do
        kill -0 "$PEER_PID" 2>/dev/null || die "tack exited during start-up: $(cat "$d/stderr.log")"
        ((SECONDS < deadline)) || die "no 'tack ready' within ${READY_TIMEOUT_S}s"
        sleep 0.05
    done
}

start_pushpin() {
    local d=$1
    mkdir -p "$d/run" "$d/log"
    SUB_PORT=$(free_port)
    PUB_PORT=$(free_port)
    METRICS=""
    local push_in push_in_sub command
    push_in=$(free_port)
    push_in_sub=$(free_port)
    command=$(free_port)
    echo "* 127.0.0.1:$ORIGIN_PORT,over_http" >"$d/routes"
    # message_rate / message_hwm deliberately unset (the stock pushpin.conf has message_rate=2500
    # and message_hwm=25000): this measures throughput, see shared/peers.md.
    write_pushpin_conf "$d" "$SUB_PORT" "$PUB_PORT" "$push_in" "$push_in_sub" "$command"
    pushpin --config "$d/pushpin.conf" >"$d/log/stdout.log" 2>&1 &
    PEER_PID=$!
    OWNED+=("$PEER_PID")
}

start_nchan() {
    local d=$1
    mkdir -p "$d/logs"
    SUB_PORT=$(free_port)
    PUB_PORT=$SUB_PORT
    METRICS=""
    cat >"$d/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 19800; }
http {
    access_log off;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    nchan_shared_memory_size 256M;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$SUB_PORT reuseport;
        location ~ ^/sub/(\w+)\$ {
            nchan_subscriber http-chunked;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }
        location ~ ^/ev/(\w+)\$ {
            nchan_subscriber eventsource;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }
        location ~ ^/lp/(\w+)\$ {
            nchan_subscriber longpoll;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }
        location ~ ^/ws/(\w+)\$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }
        location ~ ^/pub/(\w+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 120s;
        }
    }
}
EOF
    nginx -p "$d" -c "$d/nginx.conf" -e "$d/logs/error.log" >"$d/logs/stderr.log" 2>&1 &
    PEER_PID=$!
    OWNED+=("$PEER_PID")
}

# loadgen arguments that depend on the peer and mode: path template, publish API, extras.
peer_args() {
    local peer=$1 mode=$2
    case $peer in
        tack | pushpin)
            local api=$peer
            case $mode in
                stream | sse) echo "--publish $api --path /stream?channel={ch}" ;;
                longpoll) echo "--publish $api --path /response?channel={ch}" ;;
                ws) echo "--publish $api --path /ws?channel={ch}" ;;
            esac
            ;;
        nchan)
            case $mode in
                stream) echo "--publish nchan --te-chunked --path /sub/{ch}" ;;
                sse) echo "--publish nchan --path /ev/{ch}" ;;
                longpoll) echo "--publish nchan --path /lp/{ch}" ;;
                ws) echo "--publish nchan --path /ws/{ch}" ;;
            esac
            ;;
    esac
}

# Waits until one stream hold + publish round trip through the peer delivers (Pushpin answers
# 500/502 for a moment after start).
wait_round_trip() {
    local peer=$1 d=$2 deadline=$((SECONDS + READY_TIMEOUT_S)) n=0 out
    while ((SECONDS < deadline)); do
        kill -0 "$PEER_PID" 2>/dev/null || die "$peer exited during start-up (logs in $d)"
        n=$((n + 1))
        # shellcheck disable=SC2046 # peer_args is a word list
        out=$(timeout 20 "$LOADGEN" --target "127.0.0.1:$SUB_PORT" --publish-addr "127.0.0.1:$PUB_PORT" \
            $(peer_args "$peer" stream) -n 1 -m 1 --channel-prefix "ready$n" --settle-ms 200 \
            --subscribe-timeout-s 3 --drain-timeout-s 3 --idle-ms 1000 --json 2>/dev/null | tail -1) || true
        if [[ $(jq -r '.deliveries // 0' <<<"$out" 2>/dev/null) == 1 ]]; then return 0; fi
        sleep 0.3
    done
    die "$peer: no hold+publish round trip within ${READY_TIMEOUT_S}s (logs in $d)"
}

# ---------------------------------------------------------------- runs
RESULTS=$TMP/results.jsonl
: >"$RESULTS"

# run_one PEER SCENARIO: start the peer, measure, stop it; appends a JSON line to $RESULTS.
run_one() {
    local peer=$1 scen=$2 mode n kind msgs rate_args=() d
    IFS=: read -r mode n kind msgs <<<"$scen"
    msgs=${msgs:-$MESSAGES}
    [[ $kind == paced ]] && rate_args=(--rate "$RATE")
    d=$TMP/$peer-${scen//:/-}
    mkdir -p "$d"
    "start_$peer" "$d"
    wait_round_trip "$peer" "$d"
    local metrics_args=()
    [[ -n $METRICS ]] && metrics_args=(--metrics "$METRICS")
    local cmd
    # shellcheck disable=SC2046,SC2206 # peer_args and LOADGEN_EXTRA are word lists
    cmd=("$LOADGEN" --label "$peer" --target "127.0.0.1:$SUB_PORT" --publish-addr "127.0.0.1:$PUB_PORT"
        $(peer_args "$peer" "$mode") --mode "$mode" -n "$n" -m "$msgs" "${rate_args[@]}" $LOADGEN_EXTRA
        --inflight "$INFLIGHT" --connect-rate "$CONNECT_RATE" --pid-tree "$PEER_PID"
        "${metrics_args[@]}" --subscribe-timeout-s $((RUN_TIMEOUT / 3)) --drain-timeout-s "$DRAIN_TIMEOUT" --json)
    log "$peer $scen: loadgen ${cmd[*]:1}"
    local rc=0
    timeout --kill-after=5 "$RUN_TIMEOUT" "${cmd[@]}" >"$d/loadgen.out" 2>"$d/loadgen.err" || rc=$?
    cat "$d/loadgen.out" >&2
    local json
    json=$(grep '^{' "$d/loadgen.out" | tail -1 || true)
    if [[ -z $json ]]; then
        log "$peer $scen: loadgen failed (rc $rc): $(tail -3 "$d/loadgen.err")"
        json="{\"label\":\"$peer\",\"failed\":true,\"rc\":$rc}"
    fi
    jq -c --arg s "$scen" --arg p "$peer" '. + {scenario: $s, peer: $p}' <<<"$json" >>"$RESULTS"
    stop_pid "$PEER_PID"
    forget_pid "$PEER_PID"
}

want pushpin && start_origin
START_DATE=$(date -u +"%Y-%m-%d %H:%M UTC")
order=($PEERS)
k=0
for scen in $SCENARIOS; do
    if ((k % 2 == 1)); then
        list=()
        for ((i = ${#order[@]} - 1; i >= 0; i--)); do list+=("${order[i]}"); done
    else
        list=("${order[@]}")
    fi
    k=$((k + 1))
    for peer in "${list[@]}"; do run_one "$peer" "$scen"; done
done

# ---------------------------------------------------------------- report
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
MEM_GIB=$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
report() {
    echo "### Fan-out run $START_DATE"
    echo
    echo "- machine: $(nproc) cores, ${MEM_GIB} GiB, kernel $(uname -r), loadavg at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- tack commit $COMMIT${TACK_ARGS:+, TACK_ARGS=\"$TACK_ARGS\"}; Pushpin $(pushpin --version 2>/dev/null | awk '{print $2}') with message_rate/message_hwm unset (stock: 2500/s, 25000); Nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null) on nginx, 2 workers"
    echo "- command: \`PEERS=\"$PEERS\" SCENARIOS=\"$SCENARIOS\" MESSAGES=$MESSAGES RATE=$RATE INFLIGHT=$INFLIGHT CONNECT_RATE=$CONNECT_RATE${LOADGEN_EXTRA:+ LOADGEN_EXTRA=\"$LOADGEN_EXTRA\"} loadtest/fanout.sh\`"
    echo "- paced = $RATE messages/s; burst = each publish POST right after the previous one's answer"
    echo
    echo "| scenario | peer | subscribed (failed) | RSS/conn B | PSS/conn B | CPU µs/delivery | deliveries/s | latency p50/p99 ms | completion p50/p99 ms | missed | dup/reord | closed early | loadgen CPU s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    jq -r 'if .failed then "| \(.scenario) | \(.peer) | loadgen failed (rc \(.rc)) |||||||||||"
        else "| \(.scenario) | \(.peer) | \(.subscribed) (\(.subscribe_failed)) | \(.rss_per_conn_b) | \(.pss_per_conn_b) | \(.cpu_us_per_delivery) | \(.deliveries_per_s) | \(.latency_p50_us / 1000 | . * 10 | round / 10)/\(.latency_p99_us / 1000 | . * 10 | round / 10) | \(.completion_p50_us / 1000 | . * 10 | round / 10)/\(.completion_p99_us / 1000 | . * 10 | round / 10) | \(.missed) | \(.duplicates)/\(.reordered) | \(.closed_early) | \(.loadgen_cpu_s * 100 | round / 100) |" end' "$RESULTS"
    echo
    echo "Ratios (tack ÷ peer; memory and CPU: lower is better for tack, deliveries/s: higher):"
    echo
    echo "| scenario | vs | RSS/conn | CPU/delivery | deliveries/s | completion p99 |"
    echo "|---|---|---|---|---|---|"
    jq -rs '
        def r(a; b): if (a == null or b == null or b == 0) then "-" else ((a / b) * 100 | round / 100 | tostring) end;
        group_by(.scenario)[] as $g
        | ($g | map(select(.peer == "tack" and (.failed | not) and .subscribed > 0)) | first) as $t
        | $g[] | select(.peer != "tack" and (.failed | not)) as $p
        | if $t == null then empty else
          "| \($p.scenario) | \($p.peer) | \(r($t.rss_per_conn_b; $p.rss_per_conn_b)) | \(r($t.cpu_us_per_delivery; $p.cpu_us_per_delivery)) | \(r($t.deliveries_per_s; $p.deliveries_per_s)) | \(r($t.completion_p99_us; $p.completion_p99_us)) |" end' "$RESULTS"
}
echo
report | tee "$TMP/report.md"
if [[ -n $OUT_MD ]]; then { echo; cat "$TMP/report.md"; } >>"$OUT_MD"; fi
if [[ -n $OUT_JSON ]]; then cp "$RESULTS" "$OUT_JSON"; fi
