#!/usr/bin/env bash
# Makes sure the three servers of the distributed mode answer on loopback, starting (or, on a
# Debian machine without them, installing) any that does not:
#   NATS with JetStream on 4222, PostgreSQL on 5432 (trust auth for `postgres` on 127.0.0.1),
#   Redis on 6379.
# Source it to get the URLs exported:
#   FABRIKAM_NATS_URL, FABRIKAM_POSTGRES_URL (a server URL; add the database), FABRIKAM_REDIS_URL
# Usage: source scripts/backends.sh   (or run it to just check and start)
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 100); do
    answers "$port" && return 0
    sleep 0.1
  done
  echo "backends: $name does not answer on 127.0.0.1:$port" >&2
  return 1
}

install_if_missing() {
  local command=$1 package=$2
  if ! command -v "$command" >/dev/null 2>&1 && ! [ -x "$command" ]; then
    echo "backends: installing $package from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null
  fi
}

if ! answers 4222; then
  install_if_missing /usr/sbin/nats-server nats-server
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi
wait_for nats-server 4222

if ! answers 5432; then
  install_if_missing pg_ctlcluster postgresql
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
wait_for PostgreSQL 5432

if ! answers 6379; then
  install_if_missing redis-server redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis 6379

export FABRIKAM_NATS_URL=${FABRIKAM_NATS_URL:-nats://127.0.0.1:4222}
export FABRIKAM_POSTGRES_URL=${FABRIKAM_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
export FABRIKAM_REDIS_URL=${FABRIKAM_REDIS_URL:-redis://127.0.0.1:6379}

# Creates database $1 on the server when it is missing.
ensure_database() {
  local db=$1
  if ! psql "$FABRIKAM_POSTGRES_URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    psql "$FABRIKAM_POSTGRES_URL/postgres" -qc "CREATE DATABASE $db" >/dev/null
  fi
}
echo "backends: NATS, PostgreSQL and Redis answer"
