#!/usr/bin/env bash
# Checks the packaging where the tools exist: the systemd unit with `systemd-analyze verify`
# (against a freshly built tack), and the Docker image (build, health, SIGHUP reload, stop)
# when a Docker daemon answers. A missing tool is reported loudly and skipped (exit 0); a
# failed check exits non-zero. The same checks run in `cargo test` (loadtest/tests/e2e/packaging.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p tack --bin tack
bin=$PWD/target/release/tack
"$bin" --check-config --config packaging/docker/pushpin.conf

if command -v systemd-analyze >/dev/null; then
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  sed "s|/usr/bin/tack|$bin|g" packaging/tack.service >"$dir/tack.service"
  out=$(systemd-analyze verify "$dir/tack.service" 2>&1)
  if [ -n "$out" ]; then
    echo "systemd-analyze verify: $out" >&2
    exit 1
  fi
  echo "systemd unit: verified"
  systemd-analyze security --offline=true "$dir/tack.service" 2>/dev/null | tail -1 || true
else
  echo "*** SKIPPED: systemd-analyze not found (apt-get install systemd) ***" >&2
fi

if ! docker info >/dev/null 2>&1; then
  echo "*** SKIPPED: no working Docker here (docker info failed): the image was not built ***" >&2
  exit 0
fi
tag=tack:check
name=tack-check-$$
docker build -t "$tag" .
docker run -d --name "$name" -p 127.0.0.1::7999 "$tag" >/dev/null
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 60); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] && break
  sleep 1
done
[ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] || { docker logs "$name"; exit 1; }
[ "$(docker exec "$name" id -u)" = 10001 ] || { echo "container runs as root" >&2; exit 1; }
docker kill --signal=HUP "$name" >/dev/null
sleep 1
docker logs "$name" 2>&1 | grep -q "config reloaded" || { docker logs "$name"; exit 1; }
docker stop "$name" >/dev/null
[ "$(docker inspect -f '{{.State.ExitCode}}' "$name")" = 0 ] || { docker logs "$name"; exit 1; }
echo "docker image: built, healthy, reloaded, stopped cleanly"
