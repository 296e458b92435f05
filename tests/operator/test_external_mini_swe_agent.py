"""A real external agent from the package registries, mini-swe-agent, driven by the local model
through spec.agent.command, side by side with the built-in loop in `agentmatrix compare`.

The agent is installed by examples/mini-swe-agent/install.sh (once, into the tool cache: about
700 MB from PyPI) and run by the operator exactly as examples/external-mini-swe-agent.yaml
says, with its install directory as the only extra path the sandbox shows.

It takes about 13 minutes, so it runs only when asked: set AGENTMATRIX_SLOW_LLM=1, e.g.
`AGENTMATRIX_SLOW_LLM=1 pytest -m llm tests/operator/test_external_mini_swe_agent.py`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.agent_runner import local_model
from agentmatrix.cluster.binaries import cache_dir
from agentmatrix.cluster.controlplane import LocalCluster
from tests.operator.operator_harness import (
    AGENTMATRIX,
    EVALS_NAMESPACE,
    REPO,
    Operator,
    eval_manifest,
    wait_completed,
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.llm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("AGENTMATRIX_SLOW_LLM") != "1", reason="about 13 minutes: set AGENTMATRIX_SLOW_LLM=1"
    ),
]

EXAMPLE = "/opt/agentmatrix/mini-swe-agent"


@pytest.fixture(scope="module")
def mini_swe_agent() -> Path:
    target = cache_dir() / "tools" / "mini-swe-agent"
    subprocess.run(
        ["bash", str(REPO / "examples" / "mini-swe-agent" / "install.sh"), str(target)],
        check=True, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def llm() -> Iterator[local_model.LocalModel]:
    already = local_model.status()
    model = already or local_model.up()
    yield model
    if already is None:
        local_model.down()


def example_spec(name: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text())["spec"]
    spec.update(trials=1, **changes)
    return spec


def test_mini_swe_agent_next_to_the_built_in_loop(
    cluster: LocalCluster,
    operator: Operator,
    llm: local_model.LocalModel,
    mini_swe_agent: Path,
    tmp_path: Path,
) -> None:
    agent = example_spec("external-mini-swe-agent")["agent"]
    agent["command"] = [agent["command"][0].replace(EXAMPLE, str(mini_swe_agent))]
    agent["readOnlyPaths"] = [str(mini_swe_agent)]
    evals = {
        "builtin-loop": example_spec("local-model", maxSteps=4),
        "mini-swe-agent": example_spec("external-mini-swe-agent", agent=agent, maxSteps=4),
    }
    for name, spec in evals.items():
        cluster.kubectl("apply", "-f", "-", input=eval_manifest(name, EVALS_NAMESPACE, spec))
    try:
        bodies = {
            name: wait_completed(cluster, EVALS_NAMESPACE, name, timeout=1800, log=operator.log)
            for name in evals
        }
        for body in bodies.values():
            (trial,) = body["status"]["trials"]
            assert trial["state"] == "Succeeded", trial.get("error")
            assert trial["coverageGaps"] == 0
        assert bodies["mini-swe-agent"]["status"]["model"] == f"mini-swe-agent ({local_model.MODEL_NAME})"

        out = tmp_path / "mini"
        subprocess.run(
            [AGENTMATRIX, "results", "mini-swe-agent", "--dir", str(out), "-n", EVALS_NAMESPACE,
             "--kubeconfig", str(cluster.kubeconfig)],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        lines = [
            json.loads(line)
            for line in (out / "trials" / "baseline-000" / "transcript.jsonl").read_text().splitlines()
        ]
        (output,) = [line for line in lines if line["type"] == "agent_output"]
        assert "mini-swe-agent" in output["output"]  # it really ran
        assert output["model_requests"] >= 1 and output["refused_model_requests"] == 0  # and asked the model

        table = subprocess.run(
            [AGENTMATRIX, "compare", *(f"{EVALS_NAMESPACE}/{name}" for name in evals), "--format", "markdown",
             "--kubeconfig", str(cluster.kubeconfig)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert table.returncode == 0, table.stderr
        assert f"| {local_model.MODEL_NAME} | {EVALS_NAMESPACE}/builtin-loop |" in table.stdout
        assert (
            f"| mini-swe-agent ({local_model.MODEL_NAME}) | {EVALS_NAMESPACE}/mini-swe-agent |"
            in table.stdout
        )
    finally:
        for name in evals:
            cluster.kubectl("delete", "reval", name, "-n", EVALS_NAMESPACE, "--wait=false", check=False)
