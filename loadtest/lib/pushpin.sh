# Shared by loadtest/fanout.sh and loadtest/passthrough.sh (sourced, not run).
#
# write_pushpin_conf DIR HTTP_PORT PUBLISH_PORT PUSH_IN_PORT PUSH_IN_SUB_PORT COMMAND_PORT
# Writes DIR/pushpin.conf for a private Pushpin 1.36 instance on loopback: its own rundir and
# logdir, every ZeroMQ port moved, zurl run by this instance (see shared/peers.md), per-request
# logging off. message_rate / message_hwm are deliberately unset (the stock file has 2500/s and
# 25000): the benchmarks measure throughput; the caller reports that.
write_pushpin_conf() {
    local dir=$1 http_port=$2 publish_port=$3 push_in=$4 push_in_sub=$5 command=$6
    cat >"$dir/pushpin.conf" <<CONF
[global]
include={libdir}/internal.conf
rundir=$dir/run
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:$http_port
logdir=$dir/log
log_level=1
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure
zurl_bin=zurl

[proxy]
routesfile=routes
debug=false
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
log_from=false
log_user_agent=false
sig_iss=pushpin
sig_key=changeme
updates_check=off
zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in
zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream
zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out

[handler]
push_in_spec=tcp://127.0.0.1:$push_in
push_in_sub_specs=tcp://127.0.0.1:$push_in_sub
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port=$publish_port
stats_spec=ipc://{rundir}/{ipc_prefix}stats
command_spec=tcp://127.0.0.1:$command
CONF
}
