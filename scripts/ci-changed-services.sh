#!/usr/bin/env bash
# The services a change touches, as a JSON list for the per-service CI matrix:
#   scripts/ci-changed-services.sh BASE      services changed between BASE and HEAD
#   scripts/ci-changed-services.sh           every service
#   scripts/ci-changed-services.sh --self-test
# services/<name>/** touches that service; the shared crates, the workspace manifests, the
# Dockerfile and the build script touch every service; anything else (docs, deploy/, tools/,
# the all-in-one binary) none. An unknown BASE (a new branch: 0000000…) means every service.
# In GitHub Actions the list also goes to $GITHUB_OUTPUT as services=[...].
set -euo pipefail
cd "$(dirname "$0")/.."

all_services() { ls services; }

# Reads changed paths on stdin, prints the services they touch, sorted, one per line.
affected() {
  local path all=false
  local -A hit=()
  while IFS= read -r path; do
    case $path in
      services/*/*) hit[$(cut -d/ -f2 <<<"$path")]=1 ;;
      crates/*|Cargo.toml|Cargo.lock|Dockerfile|.dockerignore|scripts/build-service.sh|rust-toolchain*|.cargo/*) all=true ;;
    esac
  done
  if $all; then
    all_services
  else
    for path in "${!hit[@]}"; do
      if [ -f "services/$path/Cargo.toml" ]; then echo "$path"; fi
    done | sort
  fi
}

as_json() { python3 -c 'import json, sys; print(json.dumps([l.strip() for l in sys.stdin if l.strip()]))'; }

if [ "${1:-}" = "--self-test" ]; then
  check() { # check EXPECTED PATH...
    local expected=$1 got
    shift
    got=$(printf '%s\n' "$@" | affected | as_json)
    if [ "$got" != "$expected" ]; then
      echo "ci-changed-services: for $* expected $expected, got $got" >&2
      exit 1
    fi
  }
  every=$(all_services | as_json)
  check '["delivery"]' services/delivery/src/api.rs README.md
  check '["delivery", "package"]' services/package/Cargo.toml services/delivery/src/lib.rs services/delivery/tests/x.rs
  check '["deliveryhistory"]' services/deliveryhistory/src/api.rs
  check '["delivery", "deliveryhistory"]' services/deliveryhistory/migrations/postgres/x.sql services/delivery/src/events.rs
  check "$every" crates/platform/src/bus/nats.rs
  check "$every" Cargo.lock
  check "$every" Dockerfile services/gateway/src/lib.rs
  check '[]' README.md deploy/k8s/base/gateway.yaml tools/loadgen/src/main.rs
  check '[]' services/no-such-service/src/lib.rs
  echo "ci-changed-services: self-test passed"
  exit 0
fi

base=${1:-}
if [ -z "$base" ] || [[ $base =~ ^0+$ ]] || ! git rev-parse --verify -q "$base^{commit}" >/dev/null; then
  list=$(all_services | as_json)
else
  list=$(git diff --name-only "$base" HEAD | affected | as_json)
fi
echo "$list"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "services=$list" >>"$GITHUB_OUTPUT"
fi
