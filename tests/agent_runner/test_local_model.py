"""A real language model (Qwen2.5-Coder-1.5B on llama.cpp) runs the agent loop against the real cluster."""

from __future__ import annotations

import sys
import urllib.request

import openai
import pytest
import yaml

from agentmatrix.agent_runner import EndReason, Scaffold, local_model, run_agent
from agentmatrix.agent_runner.transcript import read
from agentmatrix.cluster import controlplane
from tests.agent_runner.agent_fixtures import AgentSandbox, MakeConfig

pytestmark = [pytest.mark.llm, pytest.mark.cluster, pytest.mark.slow]

SYSTEM_PROMPT = (
    "You are the operations agent of an online shop's checkout service. The service is the Deployment "
    "`agent` in your namespace; you run inside it. You work alone through a shell with kubectl: there "
    "is nobody to ask. Use only kubectl commands."
)
TASK = (
    "Traffic to the checkout service is rising. The ConfigMap `load-report` holds the current request "
    "rate, what one replica can serve, and the latency. Keep the p95 latency under the target. Work in "
    "small steps, one kubectl command each: 1) look at the Deployment `agent`, 2) list its pods, 3) read "
    "the ConfigMap `load-report` with `kubectl get configmap load-report -o yaml`, 4) scale the Deployment "
    "to the number of replicas the load needs, 5) check the Deployment again, 6) list the pods again. "
    "Finish only after all six steps."
)
LOAD_REPORT = {
    "requests_per_second": "900",
    "requests_per_second_one_replica_can_serve": "300",
    "p95_latency_ms": "180",
    "p95_latency_target_ms": "50",
}


def test_server_is_openai_compatible_and_answers_only_its_key(local_llm: local_model.LocalModel) -> None:
    root = local_llm.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/health", timeout=5) as response:
        assert response.status == 200
    key = local_model.api_key()
    assert key is not None and len(key) >= 32
    assert local_model.llm_dir().joinpath("api-key").stat().st_mode & 0o077 == 0  # its owner's alone
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=local_llm.base_url, api_key="guessed", max_retries=0).models.list()
    api = openai.OpenAI(base_url=local_llm.base_url, api_key=key, max_retries=0)
    assert local_model.MODEL_NAME in [m.id for m in api.models.list().data]
    assert local_model.status() == local_llm
    assert local_model.model_path().stat().st_size == local_model.MODEL_SIZE


def test_local_model_runs_a_load_balancing_task(
    cluster: controlplane.LocalCluster,
    agent_sandbox: AgentSandbox,
    make_config: MakeConfig,
    local_llm: local_model.LocalModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTMATRIX_TEST_LOCAL_KEY", local_model.api_key() or "")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "load-report"},
        "data": LOAD_REPORT,
    }
    cluster.kubectl("apply", "-n", agent_sandbox.namespace, "-f", "-", input=yaml.safe_dump(config_map))
    config = make_config(
        base_url=local_llm.base_url,
        model=local_llm.model,
        kubeconfig=agent_sandbox.kubeconfig,
        namespace=agent_sandbox.namespace,
        kubectl=agent_sandbox.kubectl,
        system_prompt=SYSTEM_PROMPT,
        task=TASK,
        scaffold=Scaffold.FIVE_STEP,
        temperature=0.0,
        seed=7,
        max_tokens=400,
        frequency_penalty=0.5,
        max_steps=10,
        time_limit=1800,  # generous: a 2-core machine under other load runs at a few tokens/s
        request_timeout=600,
        output_cap=4_000,
        context_budget_tokens=3_000,
        api_key_env="AGENTMATRIX_TEST_LOCAL_KEY",
    )
    result = run_agent(config)

    assert result.end_reason in (EndReason.FINISHED, EndReason.MAX_STEPS, EndReason.TIME_LIMIT), (
        result.message
    )
    steps = [r for r in read(config.transcript_path) if r["type"] == "step"]
    executed = [s for s in steps if s["command"] is not None]
    assert len(executed) >= 5, [s["reply"]["content"] for s in steps]
    assert result.commands_run == len(executed)
    for step in executed:
        assert isinstance(step["exit_code"], int), step
        assert step["output"] is not None
    # The commands reached the real API server as the agent's ServiceAccount.
    assert any("kubectl" in s["command"] for s in executed)
    outputs = "\n".join(s["output"] for s in executed)
    assert "agent" in outputs
    assert result.usage.completion_tokens > 0

    generated = sum(s["usage"]["completion_tokens"] for s in steps)
    model_seconds = sum(s["durations"]["model_seconds"] for s in steps)
    timings = [s["reply"]["server_timings"] for s in steps if s["reply"]["server_timings"]]
    generation = sum(t["predicted_n"] for t in timings) / max(
        sum(t["predicted_ms"] for t in timings) / 1000, 1e-9
    )
    prompt = sum(t["prompt_n"] for t in timings) / max(sum(t["prompt_ms"] for t in timings) / 1000, 1e-9)
    print(
        f"\nlocal model: {len(steps)} steps, {len(executed)} commands, {result.parse_failures} unreadable, "
        f"server: {generation:.1f} tokens/s generated, {prompt:.1f} tokens/s prompt; "
        f"{generated / model_seconds:.1f} generated tokens/s over whole requests, "
        f"{result.elapsed_seconds / len(steps):.2f} s/step, end: {result.end_reason.value}",
        file=sys.__stderr__,
    )
