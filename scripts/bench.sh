#!/usr/bin/env bash
# The standard benchmark: builds in release mode, then `loadgen bench` measures a bare HTTP
# baseline and the embedded system (ingest only, end to end) and writes BENCHMARKS.md.
# With --distributed it also measures the distributed mode (one process per service on NATS
# JetStream, PostgreSQL and Redis, started by scripts/backends.sh when not running).
# `--only distributed` (or any comma-separated list of baseline, ingest, end-to-end, distributed)
# runs just those scenarios. Extra arguments go to `loadgen bench` (see `target/release/loadgen bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
# --distributed and --only …distributed… need the backends and a database for the run.
case " $* " in
  *distributed*)
    source scripts/backends.sh
    ensure_database fabrikam_bench
    export FABRIKAM_POSTGRES_URL="$FABRIKAM_POSTGRES_URL/fabrikam_bench"
    ;;
esac
cargo build --release --locked -p fabrikam -p loadgen
exec target/release/loadgen bench --system target/release/fabrikam "$@"
