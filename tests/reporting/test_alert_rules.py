"""The alert rules: generated files in sync, both forms equal, promtool unit tests, real metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agentmatrix.operator.metrics import OperatorMetrics
from agentmatrix.reporting import alert_rules
from agentmatrix.webhook.metrics import WebhookMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES_FILE = DEPLOY / alert_rules.PLAIN_RULES_PATH
RULES_TESTS = DEPLOY / "prometheus" / "agentmatrix-rules.test.yaml"
PROMETHEUS_RULE = DEPLOY / alert_rules.PROMETHEUS_RULE_PATH


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is needed: apt-get install -y prometheus")
    return path


def test_committed_files_are_the_generated_ones() -> None:
    for relative, text in alert_rules.rendered().items():
        committed = (DEPLOY / relative).read_text()
        assert committed == text, (
            f"deploy/{relative} is stale: run python -m agentmatrix.reporting.alert_rules deploy"
        )


def test_prometheus_rule_carries_the_same_rules() -> None:
    plain = yaml.safe_load(RULES_FILE.read_text())
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert resource["spec"]["groups"] == plain["groups"]


def test_every_alert_has_severity_summary_and_description() -> None:
    rules = yaml.safe_load(RULES_FILE.read_text())["groups"][0]["rules"]
    names = {rule["alert"] for rule in rules}
    assert {
        "AgentReplicationOveruse",
        "AgentReplicationRiskHigh",
        "AgentmatrixWebhookErrors",
        "AgentmatrixWebhookAbsent",
        "AgentmatrixSafeguardDenialSpike",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_promtool_checks_and_unit_tests_pass() -> None:
    check = subprocess.run([promtool(), "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    tests = subprocess.run(
        [promtool(), "test", "rules", RULES_TESTS.name],
        cwd=RULES_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout


def exported_names() -> set[str]:
    """The series names the operator and the webhook export (counters with _total, histograms
    with their _bucket, _count and _sum)."""
    exported: set[str] = set()
    for owner in (OperatorMetrics(CollectorRegistry()), WebhookMetrics(CollectorRegistry())):
        for family in owner.registry.collect():
            if family.type == "counter":
                exported.add(f"{family.name}_total")
            elif family.type == "histogram":
                exported |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
            else:
                exported.add(family.name)
    return exported


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bagentmatrix_[a-z_]+", expr))


def test_rules_use_only_metrics_that_are_exported() -> None:
    used = {name for rule in alert_rules.RULES for name in metric_names(rule.expr)}
    assert used and used <= exported_names(), used - exported_names()


def test_overrides_only_change_durations() -> None:
    short = alert_rules.rule_groups({"AgentReplicationOveruse": "2s"})[0]["rules"]
    default = alert_rules.rule_groups()[0]["rules"]
    assert short[0]["for"] == "2s" and default[0]["for"] == "1m"
    assert [dict(rule, **{"for": None}) for rule in short] == [
        dict(rule, **{"for": None}) for rule in default
    ]
    with pytest.raises(ValueError):
        alert_rules.rule_groups({"NoSuchAlert": "1s"})


def test_every_alert_links_to_its_runbook_in_docs() -> None:
    runbooks = (Path(__file__).resolve().parents[2] / "docs" / "runbooks.md").read_text()
    anchors = {line[3:].strip().lower() for line in runbooks.splitlines() if line.startswith("## ")}
    rules = yaml.safe_load(RULES_FILE.read_text())["groups"][0]["rules"]
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        page, anchor = url.split("#")
        assert page == alert_rules.RUNBOOKS_URL and page.endswith("docs/runbooks.md")
        assert anchor == rule["alert"].lower() and anchor in anchors, url
