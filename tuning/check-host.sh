#!/usr/bin/env bash
# check-host.sh — check this host's kernel and limit settings for running tack with a target
# number of client connections. Prints, for each setting, the current value, the recommended
# one and OK / CHANGE (INFO lines are advice only). Changes nothing unless --apply is given.
#
#   tuning/check-host.sh [--connections N] [--pid PID] [--unit NAME] [--apply]
#
#   --connections N  target number of client connections on this machine (default 100000)
#   --pid PID        read the open-file and memlock limits of a running tack instead of this
#                    shell's (limits are per process)
#   --unit NAME      systemd unit to check LimitNOFILE of (default tack.service, if it exists)
#   --apply          write the recommended sysctls now (sysctl -w; needs root) and THP mode;
#                    limits cannot be changed for running processes: it prints what to set
#
# Exit status: 0 all OK, 1 changes recommended (or --apply could not make them), 2 usage.
# The sizing behind every recommendation is explained in tuning/README.md.
# Testing hook: CHECK_HOST_SYSCTL_ROOT=DIR reads and writes sysctls as files under DIR instead
# of /proc/sys (e.g. DIR/net/core/somaxconn), so --apply can be tried without touching the host.

set -euo pipefail

connections=100000
apply=0
pid=""
unit="tack.service"

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --connections) [ $# -ge 2 ] || { usage >&2; exit 2; }; connections="$2"; shift 2 ;;
        --connections=*) connections="${1#*=}"; shift ;;
        --pid) [ $# -ge 2 ] || { usage >&2; exit 2; }; pid="$2"; shift 2 ;;
        --pid=*) pid="${1#*=}"; shift ;;
        --unit) [ $# -ge 2 ] || { usage >&2; exit 2; }; unit="$2"; shift 2 ;;
        --unit=*) unit="${1#*=}"; shift ;;
        --apply) apply=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "check-host.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$connections" in
    ''|*[!0-9]*) echo "check-host.sh: --connections needs a positive integer" >&2; exit 2 ;;
esac
if [ "$connections" -lt 1 ] || [ "$connections" -gt 100000000 ]; then
    echo "check-host.sh: --connections must be 1..100000000" >&2
    exit 2
fi
if [ -n "$pid" ] && [ ! -r "/proc/$pid/limits" ]; then
    echo "check-host.sh: cannot read /proc/$pid/limits" >&2
    exit 2
fi

N=$connections
sysroot="${CHECK_HOST_SYSCTL_ROOT:-/proc/sys}"
changes=0      # settings that still need a change
failed=0       # --apply writes that failed
sysctl_todo=() # "key=value" pairs recommended
limits_todo=0

# ------------------------------------------------------------------------------------------
# Helpers

# Value of a sysctl read from /proc/sys (works without root and without the sysctl binary);
# tabs and repeated spaces become single spaces. Prints "n/a" if the key does not exist.
sysctl_get() {
    local f="$sysroot/${1//.//}"
    if [ -r "$f" ]; then
        tr -s ' \t' '  ' < "$f"
    else
        echo "n/a"
    fi
}

sysctl_set() {
    local key="$1" value="$2"
    if [ "$sysroot" = /proc/sys ] && command -v sysctl > /dev/null 2>&1; then
        sysctl -q -w "$key=$value" > /dev/null 2>&1
    else
        (printf '%s\n' "$value" > "$sysroot/${key//.//}") 2> /dev/null
    fi
}

row() { # setting current recommended status
    printf '%-34s %-24s %-26s %s\n' "$1" "$2" "$3" "$4"
}

note() {
    printf '    %s\n' "$@"
}

# A sysctl that must be at least $2. $3 = note printed when it is too low.
check_min() {
    local key="$1" want="$2" why="$3" cur
    cur=$(sysctl_get "$key")
    if [ "$cur" = "n/a" ]; then
        row "$key" "n/a" ">= $want" "INFO"
        note "not present on this kernel"
        return
    fi
    if [ "$cur" -ge "$want" ]; then
        row "$key" "$cur" ">= $want" "OK"
    else
        try_apply "$key" "$cur" "$want" ">= $want" "$why"
    fi
}

# Report a sysctl as CHANGE, or apply it with --apply.
try_apply() {
    local key="$1" cur="$2" value="$3" shown="$4" why="$5"
    sysctl_todo+=("$key = $value")
    if [ "$apply" -eq 1 ]; then
        if sysctl_set "$key" "$value"; then
            row "$key" "$cur" "$shown" "APPLIED ($(sysctl_get "$key"))"
        else
            row "$key" "$cur" "$shown" "CHANGE (apply failed: root?)"
            failed=$((failed + 1))
            changes=$((changes + 1))
        fi
    else
        row "$key" "$cur" "$shown" "CHANGE"
        changes=$((changes + 1))
    fi
    [ -z "$why" ] || note "$why"
}

# Smallest power of two >= $1.
pow2_ceil() {
    local v=1
    while [ "$v" -lt "$1" ]; do v=$((v * 2)); done
    echo "$v"
}

human_kib() { # KiB -> "x.y GiB" or "x MiB"
    local kib="$1"
    if [ "$kib" -ge 1048576 ]; then
        awk -v k="$kib" 'BEGIN { printf "%.1f GiB", k / 1048576 }'
    else
        awk -v k="$kib" 'BEGIN { printf "%.0f MiB", k / 1024 }'
    fi
}

# ------------------------------------------------------------------------------------------
# Targets derived from N (see tuning/README.md, "Sizing guide")

cores=$(getconf _NPROCESSORS_ONLN 2> /dev/null || echo 1)
# fds: one per client connection, + 10 % for the backend sockets of proxied requests, + 1,024
# for pooled idle backend connections, + 80 per shard (its listeners, io_uring, doorbell, pool).
need_fds=$((N + N / 10 + 1024 + cores * 80))
nr_open_rec=$(pow2_ceil "$need_fds")
[ "$nr_open_rec" -ge 1048576 ] || nr_open_rec=1048576
file_max_rec=$((2 * need_fds))
[ "$file_max_rec" -ge 1048576 ] || file_max_rec=1048576
if [ "$N" -lt 50000 ]; then syn_rec=4096
elif [ "$N" -lt 500000 ]; then syn_rec=16384
else syn_rec=65536
fi
if [ "$N" -lt 10000 ]; then netdev_rec=1000
elif [ "$N" -lt 100000 ]; then netdev_rec=4096
else netdev_rec=16384
fi
# RAM: 1.9 KiB tack + 3.8 KiB kernel per idle held stream (measured; 6 KiB rounded up), + 8 KiB
# per connection of kernel buffers for a burst to slow readers (tcp_mem below), + 512 MiB for
# the rest (16 KiB per connection in all, with room for WebSockets at 2.4 KiB).
ram_idle_kib=$((N * 6))
ram_need_kib=$((N * 16 + 524288))
# tcp_mem (pages): pressure at 1 page per connection, hard limit 2 pages per connection.
tcp_mem_rec=("$N" $((N * 3 / 2)) $((N * 2)))

echo "tack host check for $N connections ($cores cores, kernel $(uname -r))"
if [ -n "$pid" ]; then
    echo "limits read from pid $pid"
else
    echo "limits read from this shell (use --pid to check a running tack)"
fi
echo
row "SETTING" "CURRENT" "RECOMMENDED" "STATUS"

# ------------------------------------------------------------------------------------------
# Open files

if [ -n "$pid" ]; then
    read -r nofile_soft nofile_hard < <(awk '/^Max open files/ { print $4, $5 }' "/proc/$pid/limits")
    read -r memlock_soft < <(awk '/^Max locked memory/ { print $4 }' "/proc/$pid/limits")
    if [ "$memlock_soft" != "unlimited" ]; then memlock_soft=$((memlock_soft / 1024)); fi
else
    nofile_soft=$(ulimit -Sn)
    nofile_hard=$(ulimit -Hn)
    memlock_soft=$(ulimit -Sl)
fi

nofile_ok() { [ "$1" = "unlimited" ] || [ "$1" -ge "$need_fds" ]; }
for pair in "nofile (soft):$nofile_soft" "nofile (hard):$nofile_hard"; do
    name="${pair%%:*}"
    cur="${pair#*:}"
    if nofile_ok "$cur"; then
        row "$name" "$cur" ">= $need_fds" "OK"
    else
        row "$name" "$cur" ">= $need_fds" "CHANGE"
        changes=$((changes + 1))
        limits_todo=1
    fi
done
if [ "$limits_todo" -eq 1 ]; then
    note "limits.conf / systemd LimitNOFILE (see below); a running process keeps its limit"
fi

nr_open=$(sysctl_get fs.nr_open)
if [ "$nr_open" = "n/a" ]; then
    row fs.nr_open "n/a" ">= $need_fds" "INFO"
elif [ "$nr_open" -ge "$need_fds" ]; then
    row "fs.nr_open" "$nr_open" ">= $need_fds" "OK"
else
    try_apply fs.nr_open "$nr_open" "$nr_open_rec" "$nr_open_rec" \
        "ceiling for any process's nofile: must be raised before LimitNOFILE can be"
fi
check_min fs.file-max "$file_max_rec" "system-wide open files (tack + everything else)"

if [ "$unit" != "" ] && command -v systemctl > /dev/null 2>&1 \
    && systemctl cat "$unit" > /dev/null 2>&1; then
    unit_nofile=$(systemctl show -p LimitNOFILE --value "$unit" 2> /dev/null || echo "?")
    if [ "$unit_nofile" = "infinity" ] || { [[ "$unit_nofile" =~ ^[0-9]+$ ]] \
        && [ "$unit_nofile" -ge "$need_fds" ]; }; then
        row "$unit LimitNOFILE" "$unit_nofile" ">= $need_fds" "OK"
    else
        row "$unit LimitNOFILE" "$unit_nofile" ">= $need_fds" "CHANGE"
        changes=$((changes + 1))
        limits_todo=1
    fi
else
    row "systemd LimitNOFILE" "(no unit $unit)" ">= $need_fds" "INFO"
fi

# ------------------------------------------------------------------------------------------
# Accepting connections

check_min net.core.somaxconn 4096 \
    "tack listens with backlog 4096; the kernel clamps it to somaxconn"
check_min net.ipv4.tcp_migrate_req 1 \
    "a restart on the same ports moves queued connections to the new tack instead of resetting them"
check_min net.ipv4.tcp_max_syn_backlog "$syn_rec" \
    "half-open connections per listener during a (re)connect storm"
check_min net.core.netdev_max_backlog "$netdev_rec" \
    "per-CPU queue of received packets (loopback traffic uses it too)"

# ------------------------------------------------------------------------------------------
# Ephemeral ports (tack -> backends, load generators)

range=$(sysctl_get net.ipv4.ip_local_port_range)
if [ "$range" = "n/a" ]; then
    row net.ipv4.ip_local_port_range "n/a" "10000 65535" "INFO"
else
    read -r lo hi <<< "$range"
    width=$((hi - lo + 1))
    if [ "$width" -ge 50000 ]; then
        row net.ipv4.ip_local_port_range "$lo $hi" ">= 50000 ports" "OK"
    else
        try_apply net.ipv4.ip_local_port_range "$lo $hi" "10000 65535" "10000 65535" \
            "$width ports per (source addr, backend addr:port); reserve listening ports in ip_local_reserved_ports"
    fi
fi

tw=$(sysctl_get net.ipv4.tcp_tw_reuse)
if [ "$tw" = "1" ]; then
    row net.ipv4.tcp_tw_reuse "$tw" "1" "OK"
elif [ "$tw" = "n/a" ]; then
    row net.ipv4.tcp_tw_reuse "n/a" "1" "INFO"
else
    try_apply net.ipv4.tcp_tw_reuse "$tw" 1 1 \
        "reuse TIME_WAIT ports for new backend connections (2 = loopback only)"
fi

# ------------------------------------------------------------------------------------------
# TCP memory

rmem=$(sysctl_get net.ipv4.tcp_rmem)
wmem=$(sysctl_get net.ipv4.tcp_wmem)
read -r _ rmem_def rmem_max <<< "$rmem"
read -r _ wmem_def wmem_max <<< "$wmem"
if [ "$rmem" = "n/a" ] || [ "$wmem" = "n/a" ]; then
    row "net.ipv4.tcp_rmem / tcp_wmem" "n/a" "-" "INFO"
elif [ "$N" -ge 100000 ]; then
    if [ "$rmem_def" -le 16384 ]; then
        row net.ipv4.tcp_rmem "$rmem" "default <= 16384" "OK"
    else
        try_apply net.ipv4.tcp_rmem "$rmem" "4096 16384 $rmem_max" "4096 16384 $rmem_max" \
            "initial receive buffer: bounds what an idle-looking client can park per socket"
    fi
    if [ "$wmem_def" -le 8192 ]; then
        row net.ipv4.tcp_wmem "$wmem" "default <= 8192" "OK"
    else
        try_apply net.ipv4.tcp_wmem "$wmem" "4096 8192 $wmem_max" "4096 8192 $wmem_max" \
            "initial send buffer: a burst to a slow reader waits in tack's queue (shared payloads) instead"
    fi
else
    row net.ipv4.tcp_rmem "$rmem" "(default fine)" "OK"
    row net.ipv4.tcp_wmem "$wmem" "(default fine)" "OK"
fi

tcp_mem=$(sysctl_get net.ipv4.tcp_mem)
read -r m_low m_press m_high <<< "$tcp_mem"
if [ "$tcp_mem" = "n/a" ]; then
    row net.ipv4.tcp_mem "n/a" "max >= ${tcp_mem_rec[2]} pages" "INFO"
elif [ "$m_high" -ge "${tcp_mem_rec[2]}" ] && [ "$m_press" -ge "${tcp_mem_rec[1]}" ]; then
    row net.ipv4.tcp_mem "$tcp_mem" "max >= ${tcp_mem_rec[2]} pages" "OK"
else
    new_low=$m_low; new_press=$m_press; new_high=$m_high
    [ "$new_low" -ge "${tcp_mem_rec[0]}" ] || new_low=${tcp_mem_rec[0]}
    [ "$new_press" -ge "${tcp_mem_rec[1]}" ] || new_press=${tcp_mem_rec[1]}
    [ "$new_high" -ge "${tcp_mem_rec[2]}" ] || new_high=${tcp_mem_rec[2]}
    try_apply net.ipv4.tcp_mem "$tcp_mem" "$new_low $new_press $new_high" \
        "$new_low $new_press $new_high" \
        "pages of socket buffers for all TCP; a socket with any data queued is charged >= 1 page"
fi

# ------------------------------------------------------------------------------------------
# io_uring

uring=$(sysctl_get kernel.io_uring_disabled)
case "$uring" in
    0) row kernel.io_uring_disabled 0 0 "OK" ;;
    n/a) row kernel.io_uring_disabled "n/a" "0" "OK"
         note "no such sysctl (kernel < 6.6): io_uring is enabled" ;;
    *) try_apply kernel.io_uring_disabled "$uring" 0 0 \
           "1 = only root / kernel.io_uring_group, 2 = off: tack falls back to epoll (logged)" ;;
esac

kver=$(uname -r)
kmaj=${kver%%.*}
kmin=${kver#*.}
kmin=${kmin%%[!0-9]*}
if [ "$kmaj" -gt 5 ] || { [ "$kmaj" -eq 5 ] && [ "$kmin" -ge 12 ]; }; then
    row "memlock (soft, KiB)" "$memlock_soft" "(not used: memcg)" "OK"
else
    if [ "$memlock_soft" = "unlimited" ] || [ "$memlock_soft" -ge 65536 ]; then
        row "memlock (soft, KiB)" "$memlock_soft" ">= 65536" "OK"
    else
        row "memlock (soft, KiB)" "$memlock_soft" ">= 65536" "CHANGE"
        note "kernel < 5.12 charges io_uring rings to RLIMIT_MEMLOCK (~100 KiB per shard at 1024 entries)"
        changes=$((changes + 1))
        limits_todo=1
    fi
fi

# ------------------------------------------------------------------------------------------
# Memory and CPU

thp_file=/sys/kernel/mm/transparent_hugepage/enabled
if [ -r "$thp_file" ]; then
    thp=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$thp_file")
    if [ "$thp" = "always" ]; then
        if [ "$apply" -eq 1 ] && echo madvise > "$thp_file" 2> /dev/null; then
            row "transparent_hugepage" "$thp" "madvise" "APPLIED"
        else
            row "transparent_hugepage" "$thp" "madvise" "CHANGE"
            changes=$((changes + 1))
            [ "$apply" -eq 0 ] || failed=$((failed + 1))
        fi
        note "echo madvise > $thp_file (persist: kernel parameter transparent_hugepage=madvise)"
    else
        row "transparent_hugepage" "$thp" "madvise or never" "OK"
    fi
fi

mem_total=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
if [ "$mem_total" -ge "$ram_need_kib" ]; then
    row "RAM" "$(human_kib "$mem_total")" ">= $(human_kib "$ram_need_kib")" "OK"
else
    row "RAM" "$(human_kib "$mem_total")" ">= $(human_kib "$ram_need_kib")" "CHANGE"
    changes=$((changes + 1))
fi
note "idle holds: ~$(human_kib "$ram_idle_kib") (1.9 KiB tack + 3.8 KiB kernel each, rounded up)," \
    "+ 8 KiB each of kernel buffers during a burst to slow readers"

per_shard=$(( (N + cores - 1) / cores ))
cmax=$(( (N * 5 / 4 + cores - 1) / cores ))
row "shards (= cores)" "$cores" "connections_max >= $cmax" "INFO"
note "~$per_shard connections per shard; set [tack] connections_max = $cmax (+25 %) in the tuning file"

# ------------------------------------------------------------------------------------------
# Summary

echo
if [ "${#sysctl_todo[@]}" -gt 0 ]; then
    if [ "$apply" -eq 1 ]; then
        echo "Applied for this boot only. To persist, put these in /etc/sysctl.d/90-tack.conf"
        echo "(template: tuning/sysctl.conf) and run 'sysctl --system':"
    else
        echo "Sysctls to set (run with --apply as root, or put them in /etc/sysctl.d/90-tack.conf):"
    fi
    printf '    %s\n' "${sysctl_todo[@]}"
fi
if [ "$limits_todo" -eq 1 ]; then
    echo "Limits (cannot be changed for running processes; start tack again after setting):"
    echo "    /etc/security/limits.d/90-tack.conf (template: tuning/limits.conf):"
    echo "        tack  soft  nofile  $need_fds"
    echo "        tack  hard  nofile  $need_fds"
    echo "    systemd unit ([Service] section): LimitNOFILE=$need_fds"
    if [ "$nr_open" != "n/a" ] && [ "$nr_open" -lt "$need_fds" ]; then
        echo "    (fs.nr_open must be >= $need_fds first)"
    fi
fi
if [ "$changes" -eq 0 ]; then
    echo "All OK for $N connections."
    exit 0
fi
if [ "$apply" -eq 1 ] && [ "$failed" -gt 0 ]; then
    echo "$failed setting(s) could not be applied."
fi
echo "$changes setting(s) to change for $N connections."
exit 1
