"""The Grafana dashboard in deploy/grafana: every query is PromQL that promtool parses, and every
metric it shows is one agentmatrix exports (against a live scrape in
tests/operator/test_alerts_end_to_end.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.reporting.test_alert_rules import DEPLOY, exported_names, metric_names, promtool

DASHBOARD = DEPLOY / "grafana" / "agentmatrix-dashboard.json"
# What Grafana puts in place of the dashboard's variables when "All" is selected.
VARIABLES = {"$eval_namespace": ".*", "$eval": ".*"}


def queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, variables substituted, by where it is."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found[f"panel {panel['id']} ({panel['title']}) {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert selector, variable["query"]
            found[f"variable {variable['name']}"] = selector.group(1)
    for where, expr in found.items():
        for name, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
            expr = expr.replace(name, value)
        found[where] = expr
    return found


def check_rules(expressions: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = [
        {"record": f"agentmatrix_dashboard:query_{i}", "expr": expr} for i, expr in enumerate(expressions)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, width=4096))
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)


def test_every_query_parses(tmp_path: Path) -> None:
    found = queries()
    assert len(found) >= 10
    checked = check_rules(list(found.values()), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(found)} rules found" in checked.stdout
    broken = check_rules(["sum by (arm (agentmatrix_risk_score)"], tmp_path)  # the check can fail
    assert broken.returncode != 0


def test_every_metric_is_exported() -> None:
    used = set().union(*(metric_names(expr) for expr in queries().values()))
    assert used <= exported_names(), used - exported_names()
    # the dashboard shows every family the two processes export
    shown = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in used}
    families = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in exported_names()}
    assert families <= shown, families - shown
