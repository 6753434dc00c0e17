# Process and port helpers shared by loadtest/fanout.sh and loadtest/passthrough.sh (sourced,
# not run). The sourcing script defines log and die, and sets TMP (its temp dir) and OWNED (the
# pids it started and has not reaped); its cleanup trap stops exactly those.

# Installs Debian packages, with one apt-get update and retry if the first attempt fails.
apt_install() {
    local pkgs=("$@")
    log "installing ${pkgs[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >/dev/null; then
        log "install failed; running apt-get update once and retrying"
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >/dev/null
    fi
}

# Forgets a pid once it has been reaped, so that it is never signalled again.
forget_pid() {
    local keep=() p
    for p in "${OWNED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    OWNED=("${keep[@]}")
}

# All descendants of a pid (children first found through /proc).
descendants() {
    local kids k
    kids=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
    for k in $kids; do
        echo "$k"
        descendants "$k"
    done
}

# Stops one server we started: SIGTERM to it, then after a grace period SIGKILL to it and to
# any descendant still alive (collected before the signal, since they get reparented).
stop_pid() {
    local pid=$1 tree i
    kill -0 "$pid" 2>/dev/null || return 0
    tree=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for i in $(seq 20); do
        local alive=""
        for t in $tree; do kill -0 "$t" 2>/dev/null && alive="$alive $t"; done
        [[ -z $alive ]] && break
        sleep 0.1
    done
    for t in $tree; do kill -KILL "$t" 2>/dev/null || true; done
}

# The EXIT trap: stop every pid still owned, remove (or keep, KEEP_TMP=1) the temp dir.
cleanup() {
    local rc=$?
    for pid in "${OWNED[@]}"; do stop_pid "$pid"; done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}

# A loopback port nobody listens on (outside the ephemeral range, so wrk's sockets cannot
# take it), never handed out twice by this script.
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return
        fi
    done
    die "no free port found"
}
