"""Each broken endpoint ends the trial with its own reason and a message that says what happened."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agentmatrix.agent_runner import AgentResult, EndReason, ReplayServer, parse_steps, run_agent
from agentmatrix.agent_runner.transcript import read
from tests.agent_runner.agent_fixtures import MakeConfig

pytestmark = pytest.mark.slow

FINISH_AT_ONCE = [{"thought": "nothing to do"}]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    make_config: MakeConfig, dummy_kubeconfig: Path, base_url: str, model: str, **overrides: object
) -> AgentResult:
    config = make_config(
        base_url=base_url,
        model=model,
        kubeconfig=dummy_kubeconfig,
        namespace="default",
        kubectl="/bin/true",
        **overrides,
    )
    result = run_agent(config)
    end = read(config.transcript_path)[-1]
    assert end["type"] == "end" and end["result"]["end_reason"] == result.end_reason.value
    return result


def test_unreachable_endpoint(make_config: MakeConfig, dummy_kubeconfig: Path) -> None:
    port = unused_port()
    result = run(make_config, dummy_kubeconfig, f"http://127.0.0.1:{port}/v1", "any", max_retries=3)
    assert result.end_reason is EndReason.ENDPOINT_UNREACHABLE
    assert f"127.0.0.1:{port}" in result.message and "unreachable" in result.message
    assert result.steps == 0


def test_wrong_api_key(
    make_config: MakeConfig, dummy_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_TEST_KEY", "sk-wrong-key-000000000000000000")
    with ReplayServer(parse_steps(FINISH_AT_ONCE), api_key="sk-right-key-111111111111111111") as server:
        result = run(
            make_config, dummy_kubeconfig, server.base_url, server.model, api_key_env="AGENT_TEST_KEY"
        )
        assert server.requests == []
    assert result.end_reason is EndReason.AUTH_FAILED
    assert "refused the API key" in result.message and "AGENT_TEST_KEY" in result.message
    assert "sk-wrong-key" not in result.message


def test_missing_api_key(make_config: MakeConfig, dummy_kubeconfig: Path) -> None:
    with ReplayServer(parse_steps(FINISH_AT_ONCE), api_key="sk-right-key-111111111111111111") as server:
        result = run(make_config, dummy_kubeconfig, server.base_url, server.model)
    assert result.end_reason is EndReason.AUTH_FAILED
    assert "no key" in result.message


def test_unknown_model(make_config: MakeConfig, dummy_kubeconfig: Path) -> None:
    with ReplayServer(parse_steps(FINISH_AT_ONCE), model="replay") as server:
        result = run(make_config, dummy_kubeconfig, server.base_url, "gpt-imaginary")
    assert result.end_reason is EndReason.MODEL_NOT_FOUND
    assert "'gpt-imaginary'" in result.message and "does not exist" in result.message


def test_server_errors_are_retried_then_end_the_trial(
    make_config: MakeConfig, dummy_kubeconfig: Path
) -> None:
    with ReplayServer(parse_steps([{"status": 503}] * 3)) as server:
        result = run(make_config, dummy_kubeconfig, server.base_url, server.model, max_retries=2)
        attempts = len(server.requests)
    assert attempts == 3, "one request and two retries"
    assert result.end_reason is EndReason.ENDPOINT_ERROR_AFTER_RETRIES
    assert "HTTP 503" in result.message and "after 2 retries" in result.message


def test_rate_limit_recovers_within_the_retries(make_config: MakeConfig, dummy_kubeconfig: Path) -> None:
    with ReplayServer(parse_steps([{"status": 429}, {"thought": "done"}])) as server:
        result = run(make_config, dummy_kubeconfig, server.base_url, server.model, max_retries=2)
    assert result.end_reason is EndReason.FINISHED
    assert result.steps == 1


def test_prompt_over_the_context_window_shrinks_the_memory(
    make_config: MakeConfig, dummy_kubeconfig: Path
) -> None:
    script = [
        {"command": "echo first"},
        {"status": 400, "error": "the request exceeds the available context size, try increasing it"},
        {"command": "echo second"},
        {},
    ]
    with ReplayServer(parse_steps(script)) as server:
        result = run(
            make_config, dummy_kubeconfig, server.base_url, server.model, context_budget_tokens=8_000
        )
        retried = server.requests[2]
    assert result.end_reason is EndReason.FINISHED, result.message
    assert (result.steps, result.commands_run) == (3, 2)
    assert "echo first" in str(retried["messages"]), "the newest step is kept in the smaller memory"


def test_a_request_the_endpoint_rejects_ends_the_trial(
    make_config: MakeConfig, dummy_kubeconfig: Path
) -> None:
    with ReplayServer(parse_steps([{"status": 400, "error": "messages[0].role is invalid"}])) as server:
        result = run(make_config, dummy_kubeconfig, server.base_url, server.model)
    assert result.end_reason is EndReason.ENDPOINT_REJECTED_REQUEST
    assert "HTTP 400: messages[0].role is invalid" in result.message


def test_an_unknown_option_is_dropped_and_the_request_sent_again(
    make_config: MakeConfig, dummy_kubeconfig: Path
) -> None:
    script = [
        {"status": 400, "error": "Unrecognized request argument supplied: seed"},
        {"command": "echo hi"},
        {},
    ]
    with ReplayServer(parse_steps(script)) as server:
        config_overrides = {"seed": 11}
        result = run(make_config, dummy_kubeconfig, server.base_url, server.model, **config_overrides)
        bodies = server.requests
    assert result.end_reason is EndReason.FINISHED
    assert bodies[0]["seed"] == 11 and "seed" not in bodies[1] and "seed" not in bodies[2]
    assert result.commands_run == 1


def test_missing_bubblewrap_is_a_clear_refusal(
    make_config: MakeConfig, dummy_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with ReplayServer(parse_steps([{"command": "id"}])) as server:
        result = run(make_config, dummy_kubeconfig, server.base_url, server.model)
        assert server.requests == [], "nothing is asked of the model when commands cannot be confined"
    assert result.end_reason is EndReason.SANDBOX_UNAVAILABLE
    assert "bubblewrap" in result.message and "never run unconfined" in result.message
