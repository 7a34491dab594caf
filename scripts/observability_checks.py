#!/usr/bin/env python3
"""Structural checks of deploy/observability/ (scripts/check-observability.sh runs them).

- The Grafana dashboard is well-formed: a title and uid, a `datasource` variable, every panel
  with a type, an id unique in the dashboard and a grid position inside 24 columns, every
  non-row panel with at least one target, every target with a PromQL expression.
- Every metric family a dashboard expression or an alert rule uses is listed in docs/metrics.md
  (histogram series `_bucket`, `_sum` and `_count` count as their family), except families that
  come from outside the services (kube-state-metrics).
- Every family docs/metrics.md lists is used by the services' code (a name the code never
  records would be a documented series that no scrape can show).

tests/metrics.rs closes the loop: every family docs/metrics.md lists (except those marked
*on event*) appears in a /metrics scrape of the running system.

    scripts/observability_checks.py [--self-test]
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/observability/grafana-dashboard.json"
ALERTS = ROOT / "deploy/observability/alerts.yml"
DOC = ROOT / "docs/metrics.md"
# Families scraped from exporters other than the services.
EXTERNAL = {"kube_pod_container_status_restarts_total"}

PROMQL_WORDS = {
    # functions
    "abs", "absent", "avg_over_time", "ceil", "changes", "clamp_max", "clamp_min", "count_over_time", "delta",
    "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "idelta", "increase", "irate", "label_replace",
    "ln", "max_over_time", "min_over_time", "predict_linear", "rate", "resets", "round", "scalar", "sort",
    "sort_desc", "sqrt", "sum_over_time", "time", "timestamp", "vector", "quantile_over_time",
    # aggregations and keywords
    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
    "inf", "nan", "le",
}


def documented_families(doc_text):
    """Names in the first column of docs/metrics.md's table."""
    return set(re.findall(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|", doc_text, re.MULTILINE))


def metric_names(expr):
    """Metric names an expression selects: identifiers that are not PromQL words, label names
    (inside braces or by/without lists), strings or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # ranges
    expr = re.sub(r"\$\w+", " ", expr)  # Grafana variables
    names = set()
    for name in re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])", expr):
        if name.lower() not in PROMQL_WORDS:
            names.add(name)
    # a name directly followed by `(` is a function; a metric followed by `{` or `[` was kept
    return names


def family(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def dashboard_problems(dashboard):
    problems = []
    for key in ("title", "uid", "panels"):
        if key not in dashboard:
            problems.append(f"dashboard: no {key}")
    variables = [v.get("name") for v in dashboard.get("templating", {}).get("list", [])]
    if "datasource" not in variables:
        problems.append("dashboard: no `datasource` variable")
    ids = set()
    rows = 0
    for panel in dashboard.get("panels", []):
        where = f"panel {panel.get('id')} ({panel.get('title')!r})"
        if "type" not in panel or "title" not in panel:
            problems.append(f"{where}: no type or title")
        if panel.get("id") in ids:
            problems.append(f"{where}: id used twice")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            problems.append(f"{where}: gridPos needs integer h, w, x, y")
        elif grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: wider than 24 columns")
        if panel.get("type") == "row":
            rows += 1
            continue
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        for target in targets:
            if not str(target.get("expr", "")).strip():
                problems.append(f"{where}: a target without expr")
    if rows == 0:
        problems.append("dashboard: no rows")
    return problems


def expressions(dashboard, alerts_text):
    exprs = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets") or []:
            exprs.append((f"panel {panel.get('title')!r}", target.get("expr", "")))
    # alerts.yml: each `expr:` (inline or a `|` block)
    lines = alerts_text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*(?:-\s+)?)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, rest = len(match.group(1)), match.group(2).strip()
        if rest in ("|", ">", "|-", ">-"):
            block = []
            for more in lines[i + 1 :]:
                if more.strip() and len(more) - len(more.lstrip()) <= indent:
                    break
                block.append(more.strip())
            rest = " ".join(block)
        exprs.append((f"alerts.yml line {i + 1}", rest))
    return exprs


def code_names():
    """Metric names the Rust code records (string literals in counter!/gauge!/histogram! calls,
    and the `process_*` and counter names written as plain literals)."""
    out = subprocess.run(
        ["grep", "-rhoE", '"[a-z_]+(_total|_seconds|_bytes|_messages|_fds|_state|_in_flight|workflows|drones)"',
         "--include=*.rs", "crates", "services", "src"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout
    return {line.strip('"') for line in out.split()} | {"drones"}


def check(dashboard, alerts_text, doc_text, in_code):
    problems = dashboard_problems(dashboard)
    documented = documented_families(doc_text)
    if not documented:
        problems.append("docs/metrics.md: no table of metric families")
    for where, expr in expressions(dashboard, alerts_text):
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric in {expr!r}")
        for name in names:
            if family(name) not in documented and name not in EXTERNAL:
                problems.append(f"{where}: {name} is not in docs/metrics.md")
    for name in sorted(documented - in_code):
        problems.append(f"docs/metrics.md: {name} is recorded nowhere in the code")
    return problems


def self_test():
    doc = "| name | type |\n|---|---|\n| `a_total` | counter |\n| `lat_seconds` | histogram |\n"
    good = {"title": "t", "uid": "u", "templating": {"list": [{"name": "datasource"}]}, "panels": [
        {"type": "row", "title": "r", "id": 1, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}},
        {"type": "timeseries", "title": "p", "id": 2, "gridPos": {"h": 8, "w": 8, "x": 0, "y": 1},
         "targets": [{"expr": 'histogram_quantile(0.95, sum by (le) (rate(lat_seconds_bucket{service="x"}[$__rate_interval])))'},
                     {"expr": 'sum by (status_class) (rate(a_total[5m]))'}]}]}
    alerts = "groups:\n  - rules:\n      - expr: |\n          sum(rate(a_total[5m]))\n            > 1\n"
    assert check(good, alerts, doc, {"a_total", "lat_seconds"}) == [], check(good, alerts, doc, {"a_total", "lat_seconds"})
    assert metric_names('sum by (service) (rate(x_total{a="b"}[5m])) / on (q) group_left y') == {"x_total", "y"}
    bad = json.loads(json.dumps(good))
    bad["panels"][1]["targets"][0]["expr"] = "rate(undocumented_total[5m])"
    bad["panels"][1]["gridPos"]["x"] = 20
    bad["panels"].append(dict(bad["panels"][1], targets=[]))
    problems = check(bad, alerts.replace("a_total", "b_total"), doc, {"a_total"})
    wanted = ["undocumented_total is not in", "wider than 24", "id used twice", "no targets",
              "b_total is not in", "lat_seconds is recorded nowhere"]
    for want in wanted:
        assert any(want in p for p in problems), (want, problems)
    print("observability checks: self-test passed")


def main():
    if "--self-test" in sys.argv[1:]:
        self_test()
        return 0
    dashboard = json.loads(DASHBOARD.read_text())
    problems = check(dashboard, ALERTS.read_text(), DOC.read_text(), code_names())
    for problem in problems:
        print(f"observability: {problem}", file=sys.stderr)
    if problems:
        return 1
    documented = documented_families(DOC.read_text())
    print(f"observability: dashboard ({len(dashboard['panels'])} panels) and alerts use only the "
          f"{len(documented)} documented families")
    return 0


if __name__ == "__main__":
    sys.exit(main())
