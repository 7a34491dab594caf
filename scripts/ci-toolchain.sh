#!/usr/bin/env bash
# CI set-up of the Rust toolchain: cargo with rustfmt and clippy (added through rustup where
# they are missing), and the versions in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo --version
rustc --version
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
cargo fmt --version
cargo clippy --version
