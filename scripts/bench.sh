#!/usr/bin/env bash
# The standard benchmark: builds in release mode, then `loadgen bench` measures a bare HTTP
# baseline and the embedded system (ingest only, end to end) and writes BENCHMARKS.md.
# Extra arguments go to `loadgen bench` (see `target/release/loadgen bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p fabrikam -p loadgen
exec target/release/loadgen bench --system target/release/fabrikam "$@"
