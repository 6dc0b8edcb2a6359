#!/usr/bin/env bash
# What the tests need outside Python: Redis (the real-worker test on Redis), PostgreSQL when
# DATABASE_URL points at it, and Debian's chromium for the browser tests. Starts or installs each only if missing.
set -euo pipefail
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if [[ "${DATABASE_URL:-}" == postgres* ]] && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  shopt -s nullglob
  for version in /etc/postgresql/*/; do  # one cluster per installed version; any may be the one on 5432
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
  done
fi
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Wait for each, and say so when one never comes: a suite run against a service that is down fails in
# hundreds of places that do not name it.
wait_for() {
  local name=$1; shift
  for _ in $(seq 30); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "scripts/services.sh: $name did not come up within 30 s ($*)" >&2
  exit 1
}
wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
if [[ "${DATABASE_URL:-}" == postgres* ]]; then
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q
fi
