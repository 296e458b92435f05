"""The replay endpoint speaks the OpenAI API: checked with the real `openai` client."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from agentmatrix.agent_runner import ReplayServer, parse_steps
from agentmatrix.agent_runner.replay import SCRIPT_ENDED, load_script
from agentmatrix.agent_runner.scaffolds import RESPONSE_FORMAT, TOOLS

MESSAGES = [{"role": "user", "content": "go"}]
AGENTMATRIX = [sys.executable, "-c", "from agentmatrix.cli import main; main()"]


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    steps = parse_steps(
        [
            {"thought": "look", "command": "kubectl get pods"},
            {"raw": "not a step at all"},
            {"command": "kubectl get deploy"},
            {"thought": "all done"},
        ]
    )
    with ReplayServer(steps) as running:
        yield running


def client(server: ReplayServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def test_models_lists_the_served_model(server: ReplayServer) -> None:
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["replay"]


def test_replies_follow_the_script_in_react_text(server: ReplayServer) -> None:
    api = client(server)
    contents = [
        api.chat.completions.create(model="replay", messages=MESSAGES).choices[0].message.content  # type: ignore[arg-type]
        for _ in range(5)
    ]
    assert contents == [
        "Thought: look\nCommand: kubectl get pods",
        "not a step at all",
        "Thought: Running the next command.\nCommand: kubectl get deploy",
        "Thought: all done\nFinish: all done",
        f"Thought: {SCRIPT_ENDED}\nFinish: {SCRIPT_ENDED}",
    ]


def test_tool_call_replies(server: ReplayServer) -> None:
    api = client(server)
    reply = api.chat.completions.create(model="replay", messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "run_command"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"command": "kubectl get pods"}  # type: ignore[union-attr]
    assert choice.message.content == "look"
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_five_step_json_replies(server: ReplayServer) -> None:
    api = client(server)
    response_format: Any = RESPONSE_FORMAT
    reply = api.chat.completions.create(
        model="replay",
        messages=MESSAGES,  # type: ignore[arg-type]
        response_format=response_format,
    )
    body = json.loads(reply.choices[0].message.content or "")
    assert body["action"] == {"type": "command", "command": "kubectl get pods"}
    assert set(body) == {"explanation", "gaps", "findings", "plan", "action"}


def test_api_key_and_model_are_checked() -> None:
    with ReplayServer(parse_steps([]), api_key="secret-key-123", model="m1") as server:
        with pytest.raises(openai.AuthenticationError):
            client(server, "wrong").models.list()
        with pytest.raises(openai.NotFoundError) as missing:
            client(server, "secret-key-123").chat.completions.create(model="m2", messages=MESSAGES)  # type: ignore[arg-type]
        assert missing.value.code == "model_not_found"
        assert client(server, "secret-key-123").models.list().data[0].id == "m1"


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ({"command": "x"}, "a list of steps"),
        (["kubectl get pods"], "step 1: expected a mapping"),
        ([{"cmd": "x"}], "unknown fields ['cmd']"),
        ([{"status": 200}], "HTTP error code"),
        ([{"command": 3}], "`command` must be a string"),
    ],
)
def test_bad_scripts_are_rejected_with_the_item_named(script: object, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_steps(script)


def test_load_script_accepts_a_list_or_a_steps_mapping(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("- command: kubectl get pods\n  thought: look\n- {}\n")
    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text("steps:\n  - command: kubectl get pods\n    thought: look\n  - {}\n")
    assert load_script(plain) == load_script(wrapped)
    assert load_script(plain)[0].command == "kubectl get pods"


def test_replay_server_command_line(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("- command: kubectl get pods\n- thought: done\n")
    proc = subprocess.Popen(
        [*AGENTMATRIX, "agent", "replay-server", str(script), "--model", "scripted"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        api = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        first = api.chat.completions.create(model="scripted", messages=MESSAGES)  # type: ignore[arg-type]
        assert (
            first.choices[0].message.content
            == "Thought: Running the next command.\nCommand: kubectl get pods"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
