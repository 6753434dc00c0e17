#!/usr/bin/env bash
# Pass-through benchmark: plain HTTP/1.1 requests through tack, nginx proxy_pass and Pushpin to
# one shared nginx backend, measured with wrk. See loadtest/README.md ("Pass-through benchmark").
#
# Usage: loadtest/passthrough.sh
# Environment (all optional):
#   ONLY="direct nginx pushpin tack"  proxies to run, in this order (direct = backend, no proxy)
#   CONNS=100 DURATION=10s THREADS=1  wrk parameters of the measured run
#   WARMUP=2s                         wrk warm-up run per proxy (same CONNS/THREADS), not recorded
#   REPEATS=1                         rounds; every other round runs the proxies in reverse order,
#                                     the table shows the median over rounds
#   TACK_BIN=target/release/tack      tack binary (built with cargo unless NO_BUILD=1)
#   TACK_ARGS=""                      extra arguments appended to tack's command line
#   NGINX_WORKERS=2                   worker_processes of the nginx proxy (one per core)
#   OUT_JSON=path                     also write the one-line JSON summary to this file
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/pushpin.sh
source "$ROOT/loadtest/lib/pushpin.sh"
# shellcheck source-path=SCRIPTDIR source=lib/proc.sh
source "$ROOT/loadtest/lib/proc.sh"
ONLY=${ONLY:-"direct nginx pushpin tack"}
CONNS=${CONNS:-100}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2s}
REPEATS=${REPEATS:-1}
TACK_BIN=${TACK_BIN:-$ROOT/target/release/tack}
TACK_ARGS=${TACK_ARGS:-}
NGINX_WORKERS=${NGINX_WORKERS:-2}
OUT_JSON=${OUT_JSON:-}
READY_TIMEOUT_S=30

log() { printf '[passthrough] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
want() { [[ " $ONLY " == *" $1 "* ]]; }

for p in $ONLY; do
    case $p in direct | nginx | pushpin | tack) ;; *) die "unknown proxy '$p' in ONLY" ;; esac
done

# ---------------------------------------------------------------- dependencies
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
if want pushpin; then command -v pushpin >/dev/null || missing+=(pushpin); fi
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

if want tack && [[ ${NO_BUILD:-0} != 1 ]]; then
    log "building tack (release)"
    (cd "$ROOT" && cargo build --release -p tack)
fi
if want tack && [[ ! -x $TACK_BIN ]]; then die "tack binary not found at $TACK_BIN"; fi

# ---------------------------------------------------------------- processes we own
TMP=$(mktemp -d -t passthrough.XXXXXX)
chmod 755 "$TMP" # nginx workers drop to an unprivileged user and must reach their files
OWNED=() # pids started by this script and not reaped yet; the cleanup trap stops exactly these




trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on (outside the ephemeral range, so wrk's sockets cannot take it).

# HTTP status of GET / on 127.0.0.1:$1 (empty if no answer within 2 s).
http_status() {
    local line=""
    {
        exec 3<>"/dev/tcp/127.0.0.1/$1" &&
            printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 &&
            IFS= read -r -t 2 line <&3
        exec 3<&-
    } 2>/dev/null || true
    line=${line%$'\r'}
    echo "${line#* }" | cut -d' ' -f1
}

# Waits until GET / through port $1 answers 200 (process $2 must stay alive).
wait_200() {
    local port=$1 pid=$2 name=$3 deadline=$((SECONDS + READY_TIMEOUT_S)) st=""
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up (logs in $TMP)"
        st=$(http_status "$port")
        [[ $st == 200 ]] && return 0
        sleep 0.1
    done
    die "$name: no 200 on port $port within ${READY_TIMEOUT_S}s (last status '${st}')"
}

# CPU seconds (user+sys) of a pid and its live descendants.
tree_cpu_ticks() {
    local total=0 p f
    for p in "$1" $(descendants "$1"); do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) } # fields after "(comm) "; utime and stime are fields 14, 15 => 12th, 13th here
        set -- $f
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}
tree_rss_kib() {
    local total=0 p r
    for p in "$1" $(descendants "$1"); do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        total=$((total + ${r:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# User+sys seconds of the children this shell has reaped, from a saved `times` output (second
# line). `times` itself must run in the main shell: a subshell starts with zero child usage.
children_cpu_s() {
    awk 'NR == 2 {
        s = 0
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] }
        printf "%.3f", s }' "$1"
}

# ---------------------------------------------------------------- servers
BACKEND_PORT=$(free_port)
BACKEND_PID=""

start_backend() {
    local d=$TMP/backend
    mkdir -p "$d/logs"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location / {
            default_type text/plain;
            return 200 "hello\n";
        }
    }
}
EOF
    nginx -p "$d" -c "$d/nginx.conf" -e "$d/logs/error.log" >"$d/logs/stderr.log" 2>&1 &
    BACKEND_PID=$!
    OWNED+=("$BACKEND_PID")
    wait_200 "$BACKEND_PORT" "$BACKEND_PID" "backend nginx"
}

# Each start_* sets PROXY_PID and PROXY_PORT.
PROXY_PID=""
PROXY_PORT=""

start_direct() {
    PROXY_PID=$BACKEND_PID
    PROXY_PORT=$BACKEND_PORT
}

start_nginx() {
    local d=$TMP/nginx-proxy
    mkdir -p "$d/logs"
    PROXY_PORT=$(free_port)
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT reuseport;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    nginx -p "$d" -c "$d/nginx.conf" -e "$d/logs/error.log" >"$d/logs/stderr.log" 2>&1 &
    PROXY_PID=$!
    OWNED+=("$PROXY_PID")
    wait_200 "$PROXY_PORT" "$PROXY_PID" "nginx proxy"
}

start_pushpin() {
    local d=$TMP/pushpin
    mkdir -p "$d/run" "$d/log"
    PROXY_PORT=$(free_port)
    local push_in push_in_sub push_http command
    push_in=$(free_port)
    push_in_sub=$(free_port)
    push_http=$(free_port)
    command=$(free_port)
    echo "* 127.0.0.1:$BACKEND_PORT" >"$d/routes"
    # message_rate / message_hwm are left unset: they only cap publish deliveries, which this
    # benchmark does not exercise.
    write_pushpin_conf "$d" "$PROXY_PORT" "$push_http" "$push_in" "$push_in_sub" "$command"
    pushpin --config "$d/pushpin.conf" >"$d/log/stdout.log" 2>&1 &
    PROXY_PID=$!
    OWNED+=("$PROXY_PID")
    wait_200 "$PROXY_PORT" "$PROXY_PID" "pushpin"
}

start_tack() {
    local d=$TMP/tack publish_port
    mkdir -p "$d"
    PROXY_PORT=$(free_port)
    publish_port=$(free_port)
    # shellcheck disable=SC2086 # TACK_ARGS is a word list on purpose
    "$TACK_BIN" --port "127.0.0.1:$PROXY_PORT" --route "* 127.0.0.1:$BACKEND_PORT" \
        --publish-port "127.0.0.1:$publish_port" $TACK_ARGS >"$d/stdout.log" 2>"$d/stderr.log" &
    PROXY_PID=$!
    OWNED+=("$PROXY_PID")
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until grep -q "tack ready" "$d/stderr.log"; do
        kill -0 "$PROXY_PID" 2>/dev/null || { cat "$d/stderr.log" >&2; die "tack exited during start-up"; }
        ((SECONDS < deadline)) || { cat "$d/stderr.log" >&2; die "no 'tack ready' within ${READY_TIMEOUT_S}s"; }
        sleep 0.05
    done
    wait_200 "$PROXY_PORT" "$PROXY_PID" "tack"
}

stop_proxy() {
    local name=$1
    if [[ $name != direct ]]; then
        stop_pid "$PROXY_PID"
        forget_pid "$PROXY_PID"
    fi
    PROXY_PID=""
}

# ---------------------------------------------------------------- measuring
# wrk latency value ("812.00us", "1.23ms", "1.01s") -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# Runs one proxy: start, warm up, measure, stop. Appends "name rps p99_ms errors cpu_s rss_kib"
# to $TMP/results.
run_one() {
    local name=$1 url out cpu0 cpu1 rps p99 errors non2xx sock_err
    "start_$name"
    url="http://127.0.0.1:$PROXY_PORT/"
    log "$name: warm-up $WARMUP on $url"
    wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "$url" >/dev/null
    cpu0=$(tree_cpu_ticks "$PROXY_PID")
    out=$TMP/wrk-$name-$ROUND.txt
    log "$name: wrk -t$THREADS -c$CONNS -d$DURATION --latency"
    # wrk runs in the background so that an interrupt reaches the cleanup trap at once; its CPU
    # time is the change in the shell's reaped-children times around the wait.
    local wrk_pid wrk_rc=0
    times >"$out.t0"
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out" &
    wrk_pid=$!
    OWNED+=("$wrk_pid")
    wait "$wrk_pid" || wrk_rc=$?
    times >"$out.t1"
    forget_pid "$wrk_pid"
    ((wrk_rc == 0)) || die "wrk failed on $name: $(cat "$out")"
    cpu1=$(tree_cpu_ticks "$PROXY_PID")
    local rss
    rss=$(tree_rss_kib "$PROXY_PID")
    stop_proxy "$name"

    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p99=$(awk '/^ +99(\.000)?%/ {print $2}' "$out")
    [[ -n $rps && -n $p99 ]] || { cat "$out" >&2; die "could not parse wrk output for $name"; }
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sock_err=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out")
    errors=$((${non2xx:-0} + ${sock_err:-0}))
    local cpu_s wrk_cpu
    cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / t}')
    wrk_cpu=$(awk -v a="$(children_cpu_s "$out.t0")" -v b="$(children_cpu_s "$out.t1")" 'BEGIN {printf "%.2f", b - a}')
    echo "$name $rps $(to_ms "$p99") $errors $cpu_s $rss $wrk_cpu" >>"$TMP/results"
    log "$name: $rps req/s, p99 $p99, errors $errors, proxy cpu ${cpu_s}s, wrk cpu ${wrk_cpu}s"
}

start_backend
log "backend nginx (1 worker) on 127.0.0.1:$BACKEND_PORT"
: >"$TMP/results"
order=($ONLY)
for ((ROUND = 1; ROUND <= REPEATS; ROUND++)); do
    if ((ROUND % 2 == 0)); then
        rev=()
        for ((i = ${#order[@]} - 1; i >= 0; i--)); do rev+=("${order[i]}"); done
        run_list=("${rev[@]}")
    else
        run_list=("${order[@]}")
    fi
    for name in "${run_list[@]}"; do run_one "$name"; done
done
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
# Median per proxy over rounds (req/s and p99 independently), max errors, median CPU and RSS.
summary=$(awk -v order="$ONLY" '
    function median(s,   a, n, i, j, t) {
        n = split(s, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { rps[$1] = rps[$1] " " $2; p99[$1] = p99[$1] " " $3; if (!($1 in err) || $4 + 0 > err[$1] + 0) err[$1] = $4
      cpu[$1] = cpu[$1] " " $5; rss[$1] = rss[$1] " " $6; wcpu[$1] = wcpu[$1] " " $7; runs[$1]++ }
    END {
        n = split(order, names, " ")
        for (i = 1; i <= n; i++) { k = names[i]
            printf "%s %.2f %.3f %d %.2f %d %.2f %d\n", k, median(rps[k]), median(p99[k]), err[k], median(cpu[k]), median(rss[k]), median(wcpu[k]), runs[k] }
    }' "$TMP/results")

nginx_rps=$(awk '$1 == "nginx" {print $2}' <<<"$summary")
echo
printf 'pass-through: wrk -t%s -c%s -d%s (warm-up %s), %s round(s), loadavg %s, %s\n' \
    "$THREADS" "$CONNS" "$DURATION" "$WARMUP" "$REPEATS" "$LOADAVG" "$(nproc) cores"
printf '%-8s %12s %10s %10s %8s %10s %10s %9s\n' proxy req/s p99_ms vs_nginx errors proxy_cpu_s rss_mib wrk_cpu_s
json_rows=""
while read -r name rps p99 errors cpu rss wcpu runs; do
    if [[ -n $nginx_rps ]]; then
        ratio=$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN {printf "%.3f", a / b}')
    else
        ratio="-"
    fi
    rss_mib=$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')
    printf '%-8s %12s %10s %10s %8s %10s %10s %9s\n' "$name" "$rps" "$p99" "$ratio" "$errors" "$cpu" "$rss_mib" "$wcpu"
    [[ $ratio == - ]] && ratio=null
    json_rows="$json_rows${json_rows:+,}\"$name\":{\"rps\":$rps,\"p99_ms\":$p99,\"ratio_vs_nginx\":$ratio,\"errors\":$errors,\"proxy_cpu_s\":$cpu,\"rss_kib\":$rss,\"wrk_cpu_s\":$wcpu,\"runs\":$runs}"
done <<<"$summary"
json="{\"bench\":\"passthrough\",\"threads\":$THREADS,\"conns\":$CONNS,\"duration\":\"$DURATION\",\"warmup\":\"$WARMUP\",\"repeats\":$REPEATS,\"cores\":$(nproc),\"loadavg\":\"$LOADAVG\",\"results\":{$json_rows}}"
echo "$json"
if [[ -n $OUT_JSON ]]; then echo "$json" >"$OUT_JSON"; fi
