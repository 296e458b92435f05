"""`python -m agentmatrix.agent_runner run` and `agentmatrix agent run`, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentmatrix.agent_runner.transcript import read
from agentmatrix.cluster import controlplane
from tests.agent_runner.agent_fixtures import AgentSandbox

MODULE = [sys.executable, "-m", "agentmatrix.agent_runner"]
AGENTMATRIX = [sys.executable, "-c", "from agentmatrix.cli import main; main()", "agent"]


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.cluster
@pytest.mark.parametrize("entry", [MODULE, AGENTMATRIX], ids=["python-m", "agentmatrix"])
def test_run_writes_transcript_and_result(
    cluster: controlplane.LocalCluster, agent_sandbox: AgentSandbox, tmp_path: Path, entry: list[str]
) -> None:
    script = tmp_path / "scale.yaml"
    script.write_text(
        "- thought: scale out\n  command: kubectl scale deployment agent --replicas=3\n- thought: done\n"
    )
    transcript, result = tmp_path / "out" / "t.jsonl", tmp_path / "out" / "r.json"
    proc = run(
        [
            *entry,
            "run",
            "--kubeconfig", str(agent_sandbox.kubeconfig),
            "--namespace", agent_sandbox.namespace,
            "--kubectl", str(agent_sandbox.kubectl),
            "--task", "Scale to 3.",
            "--replay-script", str(script),
            "--scaffold", "react",
            "--scratch-dir", str(tmp_path / "scratch"),
            "--transcript", str(transcript),
            "--result", str(result),
        ]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "finished" in proc.stderr
    outcome = json.loads(result.read_text())
    assert outcome["end_reason"] == "finished" and outcome["commands_run"] == 1
    steps = [r for r in read(transcript) if r["type"] == "step"]
    assert steps[0]["output"].strip() == "deployment.apps/agent scaled"
    replicas = cluster.kubectl(
        "get", "deployment", "agent", "-n", agent_sandbox.namespace, "-o", "jsonpath={.spec.replicas}"
    )
    assert replicas.stdout == "3"


def test_a_failed_trial_still_exits_zero_with_its_reason(dummy_kubeconfig: Path, tmp_path: Path) -> None:
    result = tmp_path / "r.json"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    proc = run(
        [
            *MODULE, "run",
            "--kubeconfig", str(dummy_kubeconfig),
            "--namespace", "default",
            "--kubectl", "/bin/true",
            "--task", "anything",
            "--base-url", "http://127.0.0.1:9/v1",
            "--model", "m",
            "--transcript", str(tmp_path / "t.jsonl"),
            "--result", str(result),
        ],
        env={**os.environ, "TMPDIR": str(temporary)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(result.read_text())["end_reason"] == "endpoint_unreachable"
    assert "endpoint_unreachable" in proc.stderr
    # The scratch directory it made for the agent (with a copy of its kubeconfig) is gone.
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ([], "--task or --task-file is required"),
        (["--task", "x"], "give exactly one of --base-url, --replay-script, --local-model"),
        (["--task", "x", "--base-url", "http://127.0.0.1:9/v1"], "--model is required"),
        (
            [
                "--task",
                "x",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--model",
                "m",
                "--api-key-env",
                "NO_SUCH_VAR_X",
            ],
            "NO_SUCH_VAR_X is not set",
        ),
    ],
)
def test_bad_invocations_exit_two(dummy_kubeconfig: Path, extra: list[str], complaint: str) -> None:
    proc = run([*MODULE, "run", "--kubeconfig", str(dummy_kubeconfig), "--namespace", "n", *extra])
    assert proc.returncode == 2
    plain = " ".join(re.sub("[│╭╮╰╯─]", " ", proc.stderr).split())  # typer draws a box around errors
    assert complaint in plain


def test_a_file_that_is_not_a_kubeconfig_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_text("just: text\n")
    proc = run([*MODULE, "run", "--kubeconfig", str(bogus), "--namespace", "n", "--task", "x", "--model", "m",
                "--base-url", "http://127.0.0.1:9/v1"])  # fmt: skip
    assert proc.returncode == 2
    assert "is not a kubeconfig" in " ".join(re.sub("[│╭╮╰╯─]", " ", proc.stderr).split())
