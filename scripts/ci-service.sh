#!/usr/bin/env bash
# One service's CI job (the per-service, path-filtered job of .github/workflows/ci.yml): its
# crate's tests, then its release binary through scripts/build-service.sh, the same build step
# the container image runs, with the stripped binary's size in the log.
#   scripts/ci-service.sh SERVICE
set -euo pipefail
cd "$(dirname "$0")/.."
service=${1:?usage: $0 SERVICE}
[ -f "services/$service/Cargo.toml" ] || { echo "ci-service: no service $service" >&2; exit 2; }
echo "== $service: tests"
cargo test --locked -p "$service"
echo "== $service: release binary (the image's build step)"
scripts/build-service.sh "$service" "target/image/$service"
