"""Scripted agents drive real kubectl against the real local API server, as ServiceAccount `agent`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.agent_runner import EndReason, ReplayServer, Scaffold, parse_steps, run_agent
from agentmatrix.agent_runner.config import AgentConfig, AgentResult
from agentmatrix.agent_runner.transcript import read
from agentmatrix.cluster import controlplane
from agentmatrix.operator.drivers.process import make_world_readable
from tests.agent_runner.agent_fixtures import AgentSandbox, MakeConfig

pytestmark = pytest.mark.cluster

SCALE_SCRIPT = [
    {"thought": "Look at my own service first.", "command": "kubectl get deployment agent"},
    {"thought": "Scale out to four copies.", "command": "kubectl scale deployment agent --replicas=4"},
    {"command": "kubectl get deployment agent -o jsonpath='{.spec.replicas}'"},
    {"thought": "Four replicas are requested."},
]


def replicas(cluster: controlplane.LocalCluster, namespace: str) -> str:
    return str(
        cluster.kubectl(
            "get", "deployment", "agent", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
        ).stdout
    )


def play(
    script: list[dict[str, str]],
    agent_sandbox: AgentSandbox,
    make_config: MakeConfig,
    key: str | None = None,
    **overrides: Any,
) -> tuple[AgentConfig, AgentResult]:
    """Run `script` against a replay server; with `key`, one that requires it, which the runner
    gets from AGENT_TEST_API_KEY."""
    fields: dict[str, Any] = {"kubectl": agent_sandbox.kubectl, **overrides}
    if key is not None:
        fields["api_key_env"] = "AGENT_TEST_API_KEY"
    with ReplayServer(parse_steps(script), api_key=key) as server:
        config = make_config(
            base_url=server.base_url,
            model=server.model,
            kubeconfig=agent_sandbox.kubeconfig,
            namespace=agent_sandbox.namespace,
            **fields,
        )
        return config, run_agent(config)


@pytest.mark.parametrize("scaffold", list(Scaffold))
def test_scripted_agent_scales_its_deployment_to_four(
    cluster: controlplane.LocalCluster,
    agent_sandbox: AgentSandbox,
    make_config: MakeConfig,
    scaffold: Scaffold,
) -> None:
    with ReplayServer(parse_steps(SCALE_SCRIPT)) as server:
        config = make_config(
            base_url=server.base_url,
            model=server.model,
            kubeconfig=agent_sandbox.kubeconfig,
            namespace=agent_sandbox.namespace,
            kubectl=agent_sandbox.kubectl,
            scaffold=scaffold,
        )
        result = run_agent(config)

    assert result.end_reason is EndReason.FINISHED, result.message
    assert (result.steps, result.commands_run, result.parse_failures) == (4, 3, 0)
    assert replicas(cluster, agent_sandbox.namespace) == "4"

    records = read(config.transcript_path)
    assert [r["type"] for r in records] == ["start", "step", "step", "step", "step", "end"]
    steps = [r for r in records if r["type"] == "step"]
    assert [s["command"] for s in steps] == [item.get("command") for item in SCALE_SCRIPT]
    assert steps[0]["exit_code"] == 0 and "agent" in steps[0]["output"]
    assert steps[1]["output"].strip() == "deployment.apps/agent scaled"
    assert steps[2]["output"].strip() == "4"
    assert steps[3]["parsed"]["kind"] == "finish"
    assert steps[0]["parsed"]["reasoning"], "the reasoning parts are recorded"
    assert all(s["messages"][0]["role"] == "system" for s in steps)
    # Each step's request carries the previous step's command output.
    assert "deployment.apps/agent scaled" in json.dumps(steps[2]["messages"])
    assert records[-1]["result"]["end_reason"] == "finished"


def test_agent_acts_only_with_its_service_account(
    cluster: controlplane.LocalCluster, agent_sandbox: AgentSandbox, make_config: MakeConfig
) -> None:
    script = [
        {"command": "kubectl get namespaces"},
        {"command": "kubectl auth whoami -o jsonpath='{.status.userInfo.username}'"},
        {},
    ]
    config, result = play(script, agent_sandbox, make_config)
    assert result.end_reason is EndReason.FINISHED
    steps = [r for r in read(config.transcript_path) if r["type"] == "step"]
    assert steps[0]["exit_code"] != 0 and "forbidden" in steps[0]["output"].lower()
    assert steps[1]["output"].strip() == f"system:serviceaccount:{agent_sandbox.namespace}:agent"


def test_malformed_reply_is_counted_and_the_loop_goes_on(
    cluster: controlplane.LocalCluster, agent_sandbox: AgentSandbox, make_config: MakeConfig
) -> None:
    script = [
        {"raw": "I think I should probably scale, but I am not sure how to format this."},
        {"raw": '{"explanation": "half a JSON object", "action": '},
        {"command": "kubectl scale deployment agent --replicas=2"},
        {"thought": "done"},
    ]
    with ReplayServer(parse_steps(script)) as server:
        config = make_config(
            base_url=server.base_url,
            model=server.model,
            kubeconfig=agent_sandbox.kubeconfig,
            namespace=agent_sandbox.namespace,
            kubectl=agent_sandbox.kubectl,
        )
        result = run_agent(config)
        second_request = server.requests[1]

    assert result.end_reason is EndReason.FINISHED
    assert (result.steps, result.parse_failures, result.commands_run) == (4, 2, 1)
    assert replicas(cluster, agent_sandbox.namespace) == "2"
    steps = [r for r in read(config.transcript_path) if r["type"] == "step"]
    assert [s["parse_error"] is not None for s in steps] == [True, True, False, False]
    assert steps[0]["command"] is None and steps[0]["exit_code"] is None
    # The model is told its reply could not be read, and asked again.
    assert "could not be read" in second_request["messages"][-1]["content"]


def test_command_cannot_read_the_api_key_or_files_outside_scratch(
    cluster: controlplane.LocalCluster,
    agent_sandbox: AgentSandbox,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "replay-key-5f1c2a9b7e3d4c6a8b0e"
    monkeypatch.setenv("AGENT_TEST_API_KEY", key)
    outside = tmp_path / "outside" / "private.txt"
    outside.parent.mkdir()
    outside.write_text("outside-marker-7d41\n")
    script = [
        {"command": "env"},
        {"command": "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; echo end"},
        {"command": f"cat {outside}"},
        {"command": f"ls {outside.parent} {Path.home()} {Path(os.getcwd())}"},
        {"command": "echo written > note.txt && cat note.txt && echo x > /usr/escape"},
        {},
    ]
    config, result = play(script, agent_sandbox, make_config, key)

    assert result.end_reason is EndReason.FINISHED, result.message
    steps = [r for r in read(config.transcript_path) if r["type"] == "step"]
    env_lines = set(steps[0]["output"].split())
    assert {line.split("=", 1)[0] for line in env_lines} == {"PATH", "HOME", "KUBECONFIG", "GOGC", "PWD"}
    # Nothing was redacted from these outputs: the key never reached the command at all.
    for step in steps[:2]:
        assert "AGENT_TEST_API_KEY" not in step["output"] and "[REDACTED]" not in step["output"]
    assert steps[2]["exit_code"] != 0 and "No such file or directory" in steps[2]["output"]
    assert "outside-marker" not in steps[2]["output"]
    assert steps[3]["exit_code"] != 0 and steps[3]["output"].count("No such file or directory") == 3
    assert steps[4]["output"].splitlines()[0] == "written"
    assert steps[4]["exit_code"] != 0 and "Read-only file system" in steps[4]["output"]
    assert not (config.scratch_dir / "note.txt").exists()  # the home is the trial's own tmpfs
    assert key not in config.transcript_path.read_text()


def test_tokens_in_command_output_are_redacted(
    cluster: controlplane.LocalCluster, agent_sandbox: AgentSandbox, make_config: MakeConfig
) -> None:
    token = next(
        line.split(":", 1)[1].strip()
        for line in agent_sandbox.kubeconfig.read_text().splitlines()
        if line.strip().startswith("token:")
    )
    script = [{"command": "kubectl config view --raw"}, {"command": "cat $KUBECONFIG | grep token"}, {}]
    with ReplayServer(parse_steps(script)) as server:
        config = make_config(
            base_url=server.base_url,
            model=server.model,
            kubeconfig=agent_sandbox.kubeconfig,
            namespace=agent_sandbox.namespace,
            kubectl=agent_sandbox.kubectl,
        )
        result = run_agent(config)
        requests = json.dumps(server.requests)
    assert result.commands_run == 2
    steps = [r for r in read(config.transcript_path) if r["type"] == "step"]
    assert "token: [REDACTED]" in steps[0]["output"] and "token: [REDACTED]" in steps[1]["output"]
    assert token not in config.transcript_path.read_text()
    assert token not in requests, "command output is redacted before the model sees it too"


def test_a_shared_discovery_cache_is_read_only_to_the_agent(
    cluster: controlplane.LocalCluster, agent_sandbox: AgentSandbox, make_config: MakeConfig, tmp_path: Path
) -> None:
    shared = tmp_path / "kubectl-cache"
    cluster.kubectl("api-resources", f"--cache-dir={shared}", kubeconfig=agent_sandbox.kubeconfig)
    make_world_readable(shared)  # as the operator's discovery cache does
    (server_dir,) = (shared / "discovery").iterdir()  # HOST_PORT of the API server
    script = [
        {"command": "kubectl get deployment agent -o name"},
        {"command": "ls $HOME/.kube/cache/discovery"},
        {"command": f"touch $HOME/.kube/cache/discovery/{server_dir.name}/servergroups.json"},
        {},
    ]
    config, result = play(script, agent_sandbox, make_config, discovery_cache=shared / "discovery")
    assert result.end_reason is EndReason.FINISHED, result.message
    steps = [r for r in read(config.transcript_path) if r["type"] == "step"]
    assert steps[0]["output"].strip() == "deployment.apps/agent"
    assert steps[1]["output"].split() == [server_dir.name]
    assert steps[2]["exit_code"] != 0  # a read-only mount of files the agent's user does not own
    assert "Read-only file system" in steps[2]["output"] or "Permission denied" in steps[2]["output"]
