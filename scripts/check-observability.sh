#!/usr/bin/env bash
# Validates deploy/observability/ (scripts/check-deploy.sh calls it):
#   1. promtool check config (the scrape config and the rule files it names) and promtool check
#      rules; promtool comes from Debian's `prometheus` package, installed here when missing
#      (as root, with apt-get); without it (another OS, no root) these two checks are skipped
#      with a warning;
#   2. always: scripts/observability_checks.py, the dashboard's structure and every metric family
#      the dashboard and the alerts use is in docs/metrics.md and recorded by the code (and its
#      --self-test, which proves those checks catch broken files).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=deploy/observability
echo "== observability: promtool"
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # --no-install-recommends: promtool only; the server is not started here.
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if command -v promtool >/dev/null 2>&1; then
  promtool --version 2>&1 | head -1
  promtool check config "$dir/prometheus.yml"
  promtool check rules "$dir/alerts.yml"
else
  echo "warning: promtool is not installed (Debian: apt-get install prometheus); config and rules not checked" >&2
fi

echo "== observability: dashboard and alerts against docs/metrics.md"
python3 scripts/observability_checks.py --self-test
python3 scripts/observability_checks.py
echo "observability checks passed"
