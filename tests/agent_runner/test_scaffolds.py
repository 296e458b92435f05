"""Replies are read into a command, a finish, or a parse failure that says what was wrong."""

from __future__ import annotations

import json

import pytest

from agentmatrix.agent_runner.config import Scaffold
from agentmatrix.agent_runner.scaffolds import parse_text, parse_tool_call, system_message


def test_five_step_json() -> None:
    reply = json.dumps(
        {
            "explanation": "one replica",
            "gaps": "load unknown",
            "findings": "none yet",
            "plan": "look at the load",
            "action": {"type": "command", "command": "kubectl get configmap load -o yaml"},
        }
    )
    decision = parse_text(reply)
    assert decision.kind == "command" and decision.via == "json"
    assert decision.command == "kubectl get configmap load -o yaml"
    assert decision.reasoning == {
        "explanation": "one replica",
        "gaps": "load unknown",
        "findings": "none yet",
        "plan": "look at the load",
    }


def test_five_step_json_in_a_fence_with_prose_around_it() -> None:
    reply = (
        'Here is my step:\n```json\n{"plan": "finish", "action": {"type": "finish", "summary": "ok"}}\n```'
    )
    decision = parse_text(reply)
    assert (decision.kind, decision.summary, decision.reasoning) == ("finish", "ok", {"plan": "finish"})


def test_react_text() -> None:
    decision = parse_text("Thought: check the pods\nCommand: `kubectl get pods -o wide`")
    assert (decision.kind, decision.command, decision.via) == ("command", "kubectl get pods -o wide", "text")
    assert decision.reasoning == {"thought": "check the pods"}


def test_react_command_in_backticks_followed_by_prose() -> None:
    decision = parse_text(
        "Thought: look\nCommand: `kubectl get pods -n web`\nWhen the task is complete, reply Finish."
    )
    assert decision.command == "kubectl get pods -n web"


def test_react_multiline_command_in_a_fence() -> None:
    decision = parse_text("Thought: apply\nAction:\n```bash\nkubectl get deploy \\\n  -o name\n```\n")
    assert decision.command == "kubectl get deploy \\\n  -o name"


@pytest.mark.parametrize(
    "reply", ["Thought: done\nFinish: scaled to 3", "Thought: done\nAction: finish: scaled to 3"]
)
def test_react_finish(reply: str) -> None:
    decision = parse_text(reply)
    assert (decision.kind, decision.summary) == ("finish", "scaled to 3")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("", "the reply was empty"),
        ("I would scale the deployment.", "no action found"),
        ('{"explanation": "x", "action": {"type": "command"}}', "the action has no command"),
        ('{"explanation": "cut off", "action": ', "no action found"),
        ("Thought: hmm\nCommand:   ", "the command is empty"),
    ],
)
def test_unreadable_replies(reply: str, error: str) -> None:
    decision = parse_text(reply)
    assert decision.kind == "invalid"
    assert decision.error is not None and error in decision.error


def test_tool_calls() -> None:
    run = parse_tool_call("run_command", '{"command": "kubectl get pods"}', "checking")
    assert (run.kind, run.command, run.reasoning) == ("command", "kubectl get pods", {"thought": "checking"})
    assert parse_tool_call("finish", '{"summary": "done"}', None).summary == "done"
    assert (
        parse_tool_call("run_command", "{not json", None).error
        == "the arguments of `run_command` are not JSON"
    )
    assert parse_tool_call("delete_cluster", "{}", None).error == "there is no tool named `delete_cluster`"
    assert parse_tool_call("run_command", '{"command": ""}', None).kind == "invalid"


@pytest.mark.parametrize("scaffold", list(Scaffold))
def test_system_message_carries_prompt_namespace_and_format(scaffold: Scaffold) -> None:
    text = system_message(scaffold, "You run the shop.", "ns-7", 45)
    assert text.startswith("You run the shop.")
    assert "`ns-7`" in text and "45 seconds" in text
    expected = {Scaffold.FIVE_STEP: '"gaps"', Scaffold.REACT: "Command:", Scaffold.TOOLS: "`run_command`"}
    assert expected[scaffold] in text
