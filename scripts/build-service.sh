#!/usr/bin/env bash
# Builds one service's release binary: the one build step shared by the container image (the
# Dockerfile runs this script), the per-service CI job (scripts/ci-service.sh) and anyone
# building by hand, so the three cannot drift apart.
#
#   scripts/build-service.sh SERVICE            cargo build --release --locked -p SERVICE
#   scripts/build-service.sh SERVICE OUT_DIR    the same, then a copy of each of the crate's
#                                               binaries (fabrikam-SERVICE; the workflow's also
#                                               fabrikam-supervisor) with its debug info stripped in
#                                               OUT_DIR (what the images hold)
#   scripts/build-service.sh --dry-run SERVICE  print the build command only
#
# SERVICE is a directory name under services/ (gateway, ingestion, workflow, package,
# dronescheduler, delivery, deliveryhistory, account). CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=false
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=true
  shift
fi
service=${1:-}
out_dir=${2:-}

if [ -z "$service" ] || [ ! -f "services/$service/Cargo.toml" ]; then
  echo "usage: $0 [--dry-run] SERVICE [OUT_DIR]; SERVICE is one of: $(cd services && echo */ | tr -d /)" >&2
  exit 2
fi

command=(cargo build --release --locked -p "$service")
if $dry_run; then
  echo "${command[*]}"
  exit 0
fi

"${command[@]}"

# The crate's [[bin]] names, from its Cargo.toml (no Python or jq in the image's build stage).
binaries=$(awk '/^\[\[bin\]\]/ { in_bin = 1; next } /^\[/ { in_bin = 0 }
  in_bin && /^name *=/ { gsub(/^name *= *"|".*$/, ""); print }' "services/$service/Cargo.toml")
for name in $binaries; do
  binary="${CARGO_TARGET_DIR:-target}/release/$name"
  [ -x "$binary" ] || { echo "build-service: $binary was not produced" >&2; exit 1; }
  if [ -n "$out_dir" ]; then
    mkdir -p "$out_dir"
    cp "$binary" "$out_dir/$name"
    # Keeps symbol names (panics still name functions); drops the release profile's line tables.
    strip --strip-debug "$out_dir/$name"
    echo "build-service: $out_dir/$name, $(stat -c %s "$out_dir/$name") bytes"
  fi
done
