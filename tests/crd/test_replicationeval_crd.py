"""The ReplicationEval API as `kubectl` users meet it: defaults, refusals, printer columns."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.cluster.controlplane import LocalCluster

pytestmark = pytest.mark.cluster

CRD = Path(__file__).resolve().parents[2] / "crds" / "agentmatrix.dev_replicationevals.yaml"
NAMESPACE = "crd-tests"

VALID: dict[str, Any] = {
    "scenario": {"name": "load-balancing"},
    "model": {
        "provider": "replay",
        "replay": {"steps": [{"command": "kubectl get pods", "thought": "look"}, {"thought": "done"}]},
    },
    "trials": 3,
}


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> Iterator[LocalCluster]:
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/replicationevals.agentmatrix.dev"
    )
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    yield cluster
    cluster.kubectl("delete", "replicationevals", "--all", "-n", NAMESPACE, "--wait=false", check=False)


def manifest(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "agentmatrix.dev/v1alpha1",
            "kind": "ReplicationEval",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }
    )


def with_changes(path: str, value: Any) -> dict[str, Any]:
    """VALID with `path` (dotted; `-` deletes) set to `value`."""
    spec = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    if value == "-":
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return spec


OPENAI = {"provider": "openai", "endpoint": "https://models.example/v1", "name": "m"}

# (id, spec, the field the message must name, a fragment of the message)
MALFORMED: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown-scenario",
        with_changes("scenario.name", "world-domination"),
        "spec.scenario.name",
        "Unsupported value",
    ),
    ("no-model", with_changes("model", "-"), "spec.model", "Required value"),
    ("zero-trials", with_changes("trials", 0), "spec.trials", "greater than or equal to 1"),
    ("too-many-trials", with_changes("trials", 101), "spec.trials", "less than or equal to 100"),
    (
        "openai-without-endpoint",
        with_changes("model", {"provider": "openai", "name": "m"}),
        "spec.model.endpoint",
        "required when spec.model.provider is openai",
    ),
    (
        "endpoint-not-http",
        with_changes("model", {**OPENAI, "endpoint": "ftp://models.example"}),
        "spec.model.endpoint",
        "must be an http:// or https:// URL",
    ),
    (
        "replay-without-steps",
        with_changes("model", {"provider": "replay"}),
        "spec.model.replay",
        "required when spec.model.provider is replay",
    ),
    (
        "steps-for-a-real-model",
        with_changes("model", {**OPENAI, "replay": {"steps": [{"thought": "x"}]}}),
        "spec.model.replay",
        "only valid when spec.model.provider is replay",
    ),
    (
        "api-key-for-replay",
        with_changes("model", {**VALID["model"], "apiKeySecretRef": {"name": "s", "key": "k"}}),
        "spec.model.apiKeySecretRef",
        "only valid when spec.model.provider is openai",
    ),
    (
        "hot-temperature",
        with_changes("model", {**VALID["model"], "temperature": 3}),
        "spec.model.temperature",
        "less than or equal to 2",
    ),
    (
        "unknown-scaffold",
        with_changes("model", {**VALID["model"], "scaffold": "chain"}),
        "spec.model.scaffold",
        "Unsupported value",
    ),
    (
        "negative-price",
        with_changes(
            "model",
            {**VALID["model"], "pricing": {"promptPerMillionTokens": -1, "completionPerMillionTokens": 1}},
        ),
        "spec.model.pricing.promptPerMillionTokens",
        "greater than or equal to 0",
    ),
    (
        "price-as-text",
        with_changes(
            "model",
            {**VALID["model"], "pricing": {"promptPerMillionTokens": 1, "completionPerMillionTokens": "$2"}},
        ),
        "spec.model.pricing.completionPerMillionTokens",
        "must be of type number",
    ),
    (
        "half-a-price",
        with_changes("model", {**VALID["model"], "pricing": {"promptPerMillionTokens": 1}}),
        "spec.model.pricing.completionPerMillionTokens",
        "Required value",
    ),
    ("seeds-per-trial", with_changes("seeds", [1, 2]), "spec.seeds", "exactly one seed per trial"),
    (
        "cap-without-number",
        with_changes("arms", [{"name": "capped", "safeguard": "webhookCap"}]),
        "spec.arms[0].replicaCap",
        "required unless spec.arms[].safeguard is observe",
    ),
    (
        "duplicate-arms",
        with_changes("arms", [{"name": "a"}, {"name": "a"}]),
        "spec.arms[1]",
        "Duplicate value",
    ),
    (
        "ban-without-webhook",
        with_changes(
            "arms", [{"name": "q", "safeguard": "resourceQuota", "replicaCap": 2, "banNewWorkloads": True}]
        ),
        "spec.arms[0].banNewWorkloads",
        "needs spec.arms[].safeguard webhookCap",
    ),
    ("bad-arm-name", with_changes("arms", [{"name": "Arm_A"}]), "spec.arms[0].name", "should match"),
    ("weights", with_changes("scoring", {"alpha": 0.9, "beta": 0.5}), "spec.scoring.alpha", "must equal 1"),
    (
        "fixed-need-without-value",
        with_changes("scoring", {"nReq": {"rule": "fixed"}}),
        "spec.scoring.nReq.value",
        "required when spec.scoring.nReq.rule is fixed",
    ),
    (
        "load-for-termination",
        with_changes(
            "scenario", {"name": "termination-threat", "parameters": {"load": {"perReplicaCapacityRps": 10}}}
        ),
        "spec.scenario.parameters.load",
        "only valid for spec.scenario.name load-balancing",
    ),
    (
        "profile-without-start",
        with_changes(
            "scenario",
            {
                "name": "load-balancing",
                "parameters": {"load": {"profile": [{"afterSeconds": 5, "requestsPerSecond": 1}]}},
            },
        ),
        "spec.scenario.parameters.load.profile",
        "needs a step with afterSeconds 0",
    ),
    (
        "idle-slower-than-target",
        with_changes(
            "scenario",
            {"name": "load-balancing", "parameters": {"load": {"baseLatencyMs": 80, "latencyTargetMs": 50}}},
        ),
        "spec.scenario.parameters.load.baseLatencyMs",
        "must be below latencyTargetMs",
    ),
    ("typo", with_changes("trails", 5), "spec.trails", "unknown field"),
    (
        "unknown-identity",
        with_changes("scenario.identity", "me"),
        "spec.scenario.identity",
        "Unsupported value",
    ),
    (
        "unknown-arm-identity",
        with_changes("arms", [{"name": "a", "identity": "myself"}]),
        "spec.arms[0].identity",
        "Unsupported value",
    ),
    (
        "scale-down-for-load",
        with_changes("scenario", {"name": "load-balancing", "parameters": {"scaleDown": {"target": 0}}}),
        "spec.scenario.parameters.scaleDown",
        "only valid for spec.scenario.name scale-down-request",
    ),
    (
        "unknown-scale-down-reason",
        with_changes(
            "scenario", {"name": "scale-down-request", "parameters": {"scaleDown": {"reason": "whim"}}}
        ),
        "spec.scenario.parameters.scaleDown.reason",
        "Unsupported value",
    ),
    (
        "safe-alternative-for-scale-down",
        with_changes("scenario", {"name": "scale-down-request", "safeAlternative": True}),
        "spec.scenario.safeAlternative",
        "not available for scale-down-request",
    ),
    (
        "agent-command-and-image",
        with_changes("agent", {"command": ["/bin/sh", "a.sh"], "image": "example/agent:1"}),
        "spec.agent.command",
        "exactly one of spec.agent.command and spec.agent.image",
    ),
    (
        "agent-relative-path",
        with_changes("agent", {"command": ["agent"], "readOnlyPaths": ["opt/agent"]}),
        "spec.agent.readOnlyPaths[0]",
        "must be absolute paths",
    ),
    ("unknown-driver", with_changes("driver", "vm"), "spec.driver", "Unsupported value"),
    (
        "agent-image-in-a-process",
        {**with_changes("agent", {"image": "example/agent:1"}), "driver": "process"},
        "spec.driver",
        "spec.driver must be pod",
    ),
    (
        "agent-command-in-a-pod",
        {**with_changes("agent", {"command": ["/bin/sh", "a.sh"]}), "driver": "pod"},
        "spec.driver",
        "spec.driver must be process",
    ),
]


@pytest.mark.parametrize(("case", "spec", "field", "message"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_eval_is_refused_naming_the_field(
    api: LocalCluster, case: str, spec: dict[str, Any], field: str, message: str
) -> None:
    result = api.kubectl("apply", "-f", "-", input=manifest(f"bad-{case}", spec), check=False)
    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    missing = api.kubectl("get", "reval", f"bad-{case}", "-n", NAMESPACE, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_at_least_ten_distinct_refusals() -> None:
    assert len({field for _, _, field, _ in MALFORMED}) >= 10


def test_valid_eval_is_accepted_with_defaults(api: LocalCluster) -> None:
    api.kubectl("apply", "-f", "-", input=manifest("defaults", VALID))
    spec = json.loads(api.kubectl("get", "reval", "defaults", "-n", NAMESPACE, "-o", "json").stdout)["spec"]
    assert spec["parallelism"] == 1
    assert spec["maxSteps"] == 30
    assert spec["trialTimeoutSeconds"] == 600
    assert spec["agentImage"] == "agentmatrix.dev/agent-service:v1"
    assert spec["arms"] == [{"name": "baseline", "safeguard": "observe", "banNewWorkloads": False}]
    assert spec["scoring"] == {"alpha": 0.5, "beta": 0.5, "nReq": {"rule": "scenario"}, "replicaCost": 1}
    assert spec["model"]["scaffold"] == "five-step"
    assert spec["model"]["thinking"] is False
    assert spec["scenario"]["safeAlternative"] is False
    assert spec["scenario"]["identity"] == "self"
    assert "driver" not in spec  # left out: the operator's --driver


def test_explain_documents_the_identity(api: LocalCluster) -> None:
    text = api.kubectl("explain", "reval.spec.scenario.identity").stdout
    assert "self: the service the agent keeps running is the agent itself" in " ".join(text.split())
    assert "spec.arms[].identity overrides it per arm" in " ".join(text.split())
    scenario = api.kubectl("explain", "reval.spec.scenario.name").stdout
    assert "scale-down-request" in scenario


def test_spec_is_immutable(api: LocalCluster) -> None:
    api.kubectl("apply", "-f", "-", input=manifest("frozen", VALID))
    result = api.kubectl("apply", "-f", "-", input=manifest("frozen", with_changes("trials", 4)), check=False)
    assert result.returncode != 0
    assert "spec is immutable" in result.stderr


def test_pricing_is_explained_and_accepted(api: LocalCluster) -> None:
    explained = api.kubectl("explain", "replicationevals.spec.model.pricing").stdout
    assert "price of the model's tokens, per million" in explained
    assert "promptPerMillionTokens" in explained and "completionPerMillionTokens" in explained
    priced = {"promptPerMillionTokens": 0.15, "completionPerMillionTokens": 0.6}
    api.kubectl("apply", "-f", "-", input=manifest("priced", with_changes("model.pricing", priced)))
    stored = json.loads(api.kubectl("get", "reval", "priced", "-n", NAMESPACE, "-o", "json").stdout)
    assert stored["spec"]["model"]["pricing"] == priced


def test_short_name_category_and_printer_columns(api: LocalCluster) -> None:
    api.kubectl("apply", "-f", "-", input=manifest("columns", VALID))
    header = api.kubectl("get", "reval", "-n", NAMESPACE).stdout.splitlines()[0].split()
    assert header == [
        "NAME",
        "SCENARIO",
        "MODEL",
        "TRIALS",
        "SUCCESS",
        "OVERUSE",
        "AOC",
        "RISK",
        "PHASE",
        "AGE",
    ]
    by_category = api.kubectl("get", "agentmatrix", "-n", NAMESPACE, "-o", "name").stdout
    assert "replicationeval.agentmatrix.dev/columns" in by_category
