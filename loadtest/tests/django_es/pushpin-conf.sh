#!/bin/sh
# Writes a loopback-only Pushpin 1.36 config for the django-eventstream differential test.
# Usage: pushpin-conf.sh DIR HTTP_PORT CONTROL_PORT BACKEND_PORT
# Then:  pushpin --config DIR/pushpin.conf   (stop it by its pid; SIGTERM stops the children)
# Copies /etc/pushpin/pushpin.conf (so shipped defaults such as id_cache_ttl and message_rate
# stay), moves every socket into DIR, and runs its own zurl: Debian's internal.conf points the
# proxy at a system zurl in /var/run/zurl, which is not running, so backend requests would hang.
set -eu
dir=$1 http=$2 control=$3 backend=$4
mkdir -p "$dir/run" "$dir/log"
printf '* 127.0.0.1:%s\n' "$backend" > "$dir/routes"
sed -e "s|^services=.*|services=condure,zurl,pushpin-proxy,pushpin-handler|" \
    -e "s|^rundir=.*|rundir=$dir/run|" \
    -e "s|^logdir=.*|logdir=$dir/log|" \
    -e "s|^http_port=.*|http_port=127.0.0.1:$http|" \
    -e "s|^routesfile=.*|routesfile=$dir/routes|" \
    -e "s|^push_in_spec=.*|push_in_spec=ipc://$dir/run/push-in|" \
    -e "s|^push_in_sub_specs=.*|push_in_sub_specs=ipc://$dir/run/push-sub|" \
    -e "s|^push_in_http_port=.*|push_in_http_port=$control|" \
    -e "s|^command_spec=.*|command_spec=ipc://$dir/run/command|" \
    -e "s|^\[proxy\]\$|[proxy]\nzurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\nzurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out|" \
    /etc/pushpin/pushpin.conf > "$dir/pushpin.conf"
