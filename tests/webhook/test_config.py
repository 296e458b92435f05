"""The generated configuration, as `agentmatrix webhook config` prints it."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.webhook.webhook_process import AGENTMATRIX


def generate(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [AGENTMATRIX, "webhook", "config", *args], capture_output=True, text=True, check=True
    )
    assert "&id" not in out.stdout  # plain YAML, no anchors
    return list(yaml.safe_load_all(out.stdout))


def test_observe_fails_open_fast_and_names_every_scale_subresource(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    (config,) = generate("--mode", "observe", "--url", "https://127.0.0.1:9443", "--ca-file", str(ca))
    hooks = config["webhooks"]
    assert [h["name"] for h in hooks] == [
        "sandbox.agentmatrix.dev",
        "enforce.sandbox.agentmatrix.dev",
        "elsewhere.agentmatrix.dev",
    ]
    observing = [hooks[0], hooks[2]]
    for hook in observing:
        assert (hook["failurePolicy"], hook["timeoutSeconds"], hook["sideEffects"]) == (
            "Ignore",
            2,
            "NoneOnDryRun",
        )
    # Sandboxes of enforcing arms are labelled so; their entry fails closed even in observe mode.
    enforcing = hooks[1]
    assert enforcing["failurePolicy"] == "Fail"
    assert {"key": "agentmatrix.dev/mode", "operator": "In", "values": ["enforce"]} in enforcing[
        "namespaceSelector"
    ]["matchExpressions"]
    assert {"key": "agentmatrix.dev/mode", "operator": "NotIn", "values": ["enforce"]} in hooks[0][
        "namespaceSelector"
    ]["matchExpressions"]
    for hook in hooks:
        assert hook["clientConfig"]["url"] == "https://127.0.0.1:9443/validate"
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca.read_bytes()
        resources = {(g, r) for rule in hook["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        for scaled in ("deployments/scale", "replicasets/scale", "statefulsets/scale"):
            assert ("apps", scaled) in resources
        assert ("", "replicationcontrollers/scale") in resources
        excluded = hook["namespaceSelector"]["matchExpressions"][-1]
        assert excluded["operator"] == "NotIn" and {"kube-system", "agentmatrix-system"} <= set(
            excluded["values"]
        )


def test_enforce_fails_closed_and_supports_cert_manager() -> None:
    (config,) = generate("--mode", "enforce", "--cert-manager", "agentmatrix-system/agentmatrix-webhook")
    assert config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "agentmatrix-system/agentmatrix-webhook"
    }
    hook = config["webhooks"][0]
    assert hook["failurePolicy"] == "Fail"
    assert hook["clientConfig"]["service"] == {
        "namespace": "agentmatrix-system",
        "name": "agentmatrix-webhook",
        "path": "/validate",
        "port": 443,
    }


def test_policy_variant_is_a_policy_and_its_binding() -> None:
    policy, binding = generate("--policy")
    assert (policy["kind"], binding["kind"]) == (
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    )
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_a_webhook_of_some_evals_is_sent_only_their_sandboxes() -> None:
    (config,) = generate("--evals-namespace", "team-b", "--evals-namespace", "team-a")
    owned = {"key": "agentmatrix.dev/eval-namespace", "operator": "In", "values": ["team-a", "team-b"]}
    sandbox, enforce, elsewhere = config["webhooks"]
    assert owned in sandbox["namespaceSelector"]["matchExpressions"]
    assert owned in enforce["namespaceSelector"]["matchExpressions"]
    # Outside sandboxes the namespace says nothing of the eval: the webhook checks the agent's own.
    assert owned not in elsewhere["namespaceSelector"]["matchExpressions"]
    (everyone,) = generate()
    assert all(owned not in hook["namespaceSelector"]["matchExpressions"] for hook in everyone["webhooks"])
