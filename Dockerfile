# tack container image: a release build in a Rust image, run from a slim Debian as a non-root
# user. Build and run:
#   docker build -t tack .
#   docker run --rm -p 7999:7999 -p 5561:5561 -p 9100:9100 tack
#   docker run --rm -v /srv/tack:/etc/tack:ro -p 7999:7999 tack     # your own config
# Reload: `docker kill --signal=HUP <container>`, or edit the mounted routes file.
# Stop: `docker stop` sends SIGTERM and waits 10 s, longer than the default drain_timeout_ms
# (5 s); raise --stop-timeout with drain_timeout_ms.
# io_uring: Docker's default seccomp profile refuses it, and tack then runs on epoll (logged at
# start); allow the io_uring calls in a custom profile to get it back.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tack --bin tack \
 && install -m 0755 target/release/tack /usr/local/bin/tack \
 && tack --check-config --config packaging/docker/pushpin.conf

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin tack
COPY --from=build /usr/local/bin/tack /usr/local/bin/tack
COPY packaging/docker/pushpin.conf packaging/docker/routes /etc/tack/
USER 10001:10001
# clients, publish API, Prometheus metrics
EXPOSE 7999 5561 9100
STOPSIGNAL SIGTERM
# The metrics endpoint answers 200 once every shard serves (bash's /dev/tcp: no curl needed).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9100 && printf 'GET /metrics HTTP/1.1\\r\\nHost: health\\r\\n\\r\\n' >&3 && head -c 12 <&3 | grep -q ' 200'"]
ENTRYPOINT ["/usr/local/bin/tack"]
CMD ["--config", "/etc/tack/pushpin.conf"]
