#!/usr/bin/env bash
# Formatting and lints, as .ci/run does them: rustfmt's check and clippy with warnings denied.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
