#!/usr/bin/env bash
# Runs Fabrikam Drone Delivery in distributed mode on this machine: every service its own
# process (the per-service release binaries), the queue on NATS JetStream, packages, drones and
# ingestion's ledger, workflow state, the delivery history and accounts on PostgreSQL (one
# database each), deliveries on Redis. The gateway listens on http://127.0.0.1:8080 as in the
# embedded mode. Ctrl-C stops every process cleanly.
#
# Every service gets one FABRIKAM_IDENTITY_SECRET (the one in the environment, else a random one
# for this run). On the first run the account database gets its first operator token, written to
# ./data/distributed-operator-token (mode 0600; OPERATOR_TOKEN_FILE to change) for the admin API.
#
#   scripts/run-distributed.sh            build, start, wait for readiness, run until Ctrl-C
#   LOG_DIR=/tmp/logs scripts/run-distributed.sh
#
# Settings: FABRIKAM_NATS_URL, FABRIKAM_POSTGRES_URL (server URL without database),
# FABRIKAM_REDIS_URL override the local servers; any service flag can be set through its
# environment variable (see `target/release/fabrikam-<service> --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/backends.sh
for db in fabrikam_package fabrikam_dronescheduler fabrikam_ingestion fabrikam_workflow fabrikam_deliveryhistory \
  fabrikam_account; do ensure_database "$db"; done

# The gateway signs the caller's identity with it and every service checks it; all must share it.
if [ -z "${FABRIKAM_IDENTITY_SECRET:-}" ]; then
  FABRIKAM_IDENTITY_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
fi
export FABRIKAM_IDENTITY_SECRET

echo "== building the service binaries (release)"
cargo build --release --locked --workspace --bins -q

log_dir=${LOG_DIR:-./data/distributed-logs}
mkdir -p "$log_dir"
bin=target/release
pids=()
stop() {
  echo "== stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT INT TERM

start() {
  local service=$1 port=$2
  shift 2
  "$bin/fabrikam-$service" --listen "127.0.0.1:$port" "$@" >>"$log_dir/$service.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/healthz/ready" >/dev/null && { echo "$service ready on 127.0.0.1:$port"; return 0; }
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$service exited; see $log_dir/$service.log"; tail -5 "$log_dir/$service.log"; exit 1; }
    sleep 0.1
  done
  echo "$service not ready after 30 s; see $log_dir/$service.log"
  exit 1
}

account_db="$FABRIKAM_POSTGRES_URL/fabrikam_account"
operator_file=${OPERATOR_TOKEN_FILE:-./data/distributed-operator-token}
if [ ! -s "$operator_file" ]; then
  mkdir -p "$(dirname "$operator_file")"
  # The token is printed once, alone on stdout; it goes straight to an owner-only file.
  if token=$("$bin/fabrikam-account" bootstrap-operator --database-url "$account_db" 2>>"$log_dir/account.log"); then
    (umask 077; printf '%s\n' "$token" >"$operator_file")
    echo "operator token for the admin API written to $operator_file"
  else
    echo "no new operator token: one was made before (see $log_dir/account.log);" \
      "$bin/fabrikam-account bootstrap-operator --force --database-url $account_db replaces it"
  fi
fi

start account 8088 --database-url "$account_db"
start package 8083 --database-url "$FABRIKAM_POSTGRES_URL/fabrikam_package"
start dronescheduler 8084 --database-url "$FABRIKAM_POSTGRES_URL/fabrikam_dronescheduler" --bus-url "$FABRIKAM_NATS_URL"
start delivery 8082 --database-url "$FABRIKAM_REDIS_URL/0?prefix=fabrikam" --bus-url "$FABRIKAM_NATS_URL"
start ingestion 8081 --database-url "$FABRIKAM_POSTGRES_URL/fabrikam_ingestion" --bus-url "$FABRIKAM_NATS_URL"
start workflow 8085 --bus-url "$FABRIKAM_NATS_URL" --store-url "$FABRIKAM_POSTGRES_URL/fabrikam_workflow"
start deliveryhistory 8087 --database-url "$FABRIKAM_POSTGRES_URL/fabrikam_deliveryhistory" --bus-url "$FABRIKAM_NATS_URL"
start gateway 8080

echo "Fabrikam Drone Delivery (distributed) is listening on http://127.0.0.1:8080; logs in $log_dir; Ctrl-C stops it"
wait -n "${pids[@]}" || true
echo "a service exited; see $log_dir"
