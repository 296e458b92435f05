"""The recording kubectl in front of the real one, for the built-in loop and an external agent,
against the real API server; and the model proxy that gives an external agent a per-trial key."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agentmatrix.agent_runner import ReplayServer, parse_steps
from agentmatrix.agent_runner.config import EndReason
from agentmatrix.agent_runner.external import ExternalAgentConfig, run_external
from agentmatrix.agent_runner.model_proxy import ModelProxy
from agentmatrix.agent_runner.transcript import read
from agentmatrix.cluster import controlplane
from tests.agent_runner.agent_fixtures import AgentSandbox, MakeConfig
from tests.agent_runner.test_replay_cluster import play, replicas

# A model request from inside the sandbox, to the URL given as the first argument.
ASK_MODEL = (
    "import json, os, sys, urllib.request as u; "
    'body = json.dumps({"model": os.environ["OPENAI_MODEL"], "messages": '
    '[{"role": "user", "content": "hi"}]}).encode(); '
    'headers = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], '
    '"Content-Type": "application/json"}; '
    'request = u.Request(sys.argv[1] + "/chat/completions", body, headers); '
    'print("model answered", u.urlopen(request, timeout=10).status)'
)
TWO_CALLS = "kubectl get deployment agent -o name; kubectl get pods --selector=nothing=here 2>&1; true"


@pytest.mark.cluster
def test_each_step_carries_the_kubectl_calls_its_command_made(
    agent_sandbox: AgentSandbox, make_config: MakeConfig
) -> None:
    config, result = play(
        [{"command": TWO_CALLS}, {"command": "kubectl get nothing"}, {}], agent_sandbox, make_config
    )
    assert result.end_reason is EndReason.FINISHED
    steps = [line for line in read(config.transcript_path) if line["type"] == "step" and line["command"]]
    first, second = steps[0]["kubectl"], steps[1]["kubectl"]
    assert [call["argv"] for call in first] == [
        ["get", "deployment", "agent", "-o", "name"],
        ["get", "pods", "--selector=nothing=here"],
    ]
    assert first[0]["exit_code"] == 0 and first[0]["stdout_bytes"] == len("deployment.apps/agent\n")
    assert first[0]["start"] <= first[1]["start"] and first[0]["seconds"] > 0
    assert second[0]["argv"] == ["get", "nothing"] and second[0]["exit_code"] == 1
    assert second[0]["stderr_bytes"] > 0 and second[0]["stdout_bytes"] == 0


@pytest.mark.cluster
def test_a_forged_record_is_only_evidence(
    agent_sandbox: AgentSandbox, make_config: MakeConfig, cluster: controlplane.LocalCluster
) -> None:
    """The agent can write its record (it is evidence only); the API server still decides."""
    forge = (
        'echo \'{"phase":"start","id":"x","argv":["scale","--replicas=0"],"start":1}\' '
        ">> /opt/agent/record/kubectl.jsonl; kubectl scale deployment agent --replicas=3"
    )
    config, _ = play([{"command": forge}, {}], agent_sandbox, make_config)
    (step,) = [line for line in read(config.transcript_path) if line["type"] == "step" and line["command"]]
    argv = [call["argv"] for call in step["kubectl"]]
    assert ["scale", "--replicas=0"] in argv and ["scale", "deployment", "agent", "--replicas=3"] in argv
    assert replicas(cluster, agent_sandbox.namespace) == "3"  # what happened, whatever the record says


@pytest.mark.cluster
def test_an_external_agent_gets_the_prompt_a_trial_key_and_its_own_kubeconfig(
    agent_sandbox: AgentSandbox, tmp_path: Path
) -> None:
    with ReplayServer(parse_steps([{}]), api_key="real-upstream-key") as server:
        script = (
            'read -r first; echo "stdin: $first"; echo "file: $(head -1 "$AGENTMATRIX_PROMPT_FILE")"; '
            'echo "key: ${OPENAI_API_KEY%%-*}"; kubectl scale deployment agent --replicas=2; '
            "kubectl auth whoami -o jsonpath='{.status.userInfo.username}'; echo; "
            f"python3 -c '{ASK_MODEL}' \"$OPENAI_BASE_URL\" 2>&1 | tail -1; "
            f"python3 -c '{ASK_MODEL}' {server.base_url} 2>&1 | tail -1"
        )
        config = ExternalAgentConfig(
            command=["/bin/sh", "-c", script], task="Keep it up.", system_prompt="You operate agent.",
            base_url=server.base_url, model=server.model, api_key_env="UPSTREAM_KEY",
            kubeconfig=agent_sandbox.kubeconfig, namespace=agent_sandbox.namespace,
            scratch_dir=tmp_path / "scratch", transcript_path=tmp_path / "transcript.jsonl",
            kubectl=str(agent_sandbox.kubectl), time_limit=60,
        )  # fmt: skip
        result = run_external(config, {**os.environ, "UPSTREAM_KEY": "real-upstream-key"})
    assert result.end_reason is EndReason.FINISHED, result.message
    lines = read(config.transcript_path)
    (output,) = [line["output"] for line in lines if line["type"] == "agent_output"]
    assert "stdin: You operate agent." in output and "file: You operate agent." in output
    assert "key: am" in output  # the per-trial key, never the upstream one
    assert f"system:serviceaccount:{agent_sandbox.namespace}:agent" in output
    # The model proxy's port is forwarded into the sandbox's network; the model endpoint is not.
    assert "model answered 200" in output
    assert "Connection refused" in output and output.count("model answered") == 1
    assert "real-upstream-key" not in (tmp_path / "transcript.jsonl").read_text()
    assert [line["command"] for line in lines if line["type"] == "step"] == [
        "kubectl scale deployment agent --replicas=2",
        "kubectl auth whoami -o 'jsonpath={.status.userInfo.username}'",
    ]
    assert result.commands_run == 2


async def test_the_proxy_takes_only_the_trial_key_and_sends_the_real_one() -> None:
    with ReplayServer(parse_steps([{"command": "kubectl get pods"}]), api_key="upstream-secret") as server:
        proxy = ModelProxy(server.base_url, "upstream-secret")
        url = await proxy.start()
        try:

            def ask(key: str) -> tuple[int, dict[str, object]]:
                body = json.dumps(
                    {"model": server.model, "messages": [{"role": "user", "content": "hi"}]}
                ).encode()
                request = urllib.request.Request(
                    f"{url}/chat/completions", body,
                    {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                )  # fmt: skip
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        return response.status, json.load(response)
                except urllib.error.HTTPError as error:
                    return error.code, json.load(error)

            import asyncio

            status, _ = await asyncio.to_thread(ask, "upstream-secret")
            assert status == 401  # the real key is no good here
            status, answer = await asyncio.to_thread(ask, proxy.trial_key)
            assert status == 200 and "kubectl get pods" in json.dumps(answer)
            assert (proxy.usage.requests, proxy.usage.refused) == (1, 1)
            assert proxy.usage.prompt_tokens > 0
        finally:
            await proxy.stop()


@pytest.mark.cluster
def test_an_external_agent_runs_from_its_read_only_path(agent_sandbox: AgentSandbox, tmp_path: Path) -> None:
    """The program's own directory (here under /tmp, which the trial's home covers) is shown at
    its own path, read-only; nothing else of the host's /tmp is."""
    tool = tmp_path / "tool"
    tool.mkdir()
    beside = tmp_path / "beside"
    beside.write_text("not shown")
    (tool / "agent.sh").write_text(
        f'echo "ran from $(dirname "$0")"; touch "$(dirname "$0")/mine" 2>&1; cat {beside} 2>&1\n'
    )
    with ReplayServer(parse_steps([{}])) as server:
        config = ExternalAgentConfig(
            command=["/bin/sh", str(tool / "agent.sh")], task="t", system_prompt="s",
            base_url=server.base_url, model=server.model,
            kubeconfig=agent_sandbox.kubeconfig, namespace=agent_sandbox.namespace,
            scratch_dir=tmp_path / "scratch", transcript_path=tmp_path / "transcript.jsonl",
            kubectl=str(agent_sandbox.kubectl), time_limit=60, read_only_paths=[tool],
        )  # fmt: skip
        result = run_external(config)
    assert result.end_reason is EndReason.FINISHED, result.message
    (output,) = [line["output"] for line in read(config.transcript_path) if line["type"] == "agent_output"]
    assert f"ran from {tool}" in output
    assert "Read-only file system" in output and not (tool / "mine").exists()
    assert "No such file" in output and "not shown" not in output
