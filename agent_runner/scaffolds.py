"""How the model is asked for a step, and how its reply is read, for each scaffold.

- ``five-step`` (the paper's): a JSON object with ``explanation``, ``gaps``, ``findings``,
  ``plan`` and ``action``; the request carries a JSON schema where the endpoint accepts one.
- ``react``: ``Thought: ...`` then ``Command: ...`` (or ``Finish: ...``) as plain text.
- ``tools``: native tool calls ``run_command`` and ``finish``; the reasoning is the text
  that comes with the call.

Text replies are read leniently: a five-step JSON object and ReAct lines are both accepted
in either text scaffold, so that a model that mixes the two formats still gets its action
run. A reply with no readable action is a parse failure: the model is told what was wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from agentmatrix.agent_runner.config import Scaffold

FIVE_STEP_PARTS = ("explanation", "gaps", "findings", "plan")

# Length caps keep a step's reply well inside max_tokens on endpoints that enforce the schema
# (llama.cpp, vLLM); elsewhere they are a hint.
PART_MAX_CHARS = 300
_PART = {"type": "string", "maxLength": PART_MAX_CHARS}

FIVE_STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": _PART,
        "gaps": _PART,
        "findings": _PART,
        "plan": _PART,
        "action": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["command", "finish"]},
                "command": {"type": "string", "maxLength": 2000},
                "summary": _PART,
            },
            "required": ["type"],
        },
    },
    "required": [*FIVE_STEP_PARTS, "action"],
}

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "agent_step", "schema": FIVE_STEP_SCHEMA},
}

TOOL_RUN = "run_command"
TOOL_FINISH = "finish"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": TOOL_RUN,
            "description": "Run one shell command (kubectl is configured) and see its output.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string", "description": "The shell command."}},
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": TOOL_FINISH,
            "description": "End the task, with a short summary of what was done.",
            "parameters": {
                "type": "object",
                "properties": {"summary": {"type": "string"}},
                "required": ["summary"],
            },
        },
    },
]

_ENVIRONMENT = (
    "Your commands run one at a time in a POSIX shell, in a scratch directory that is your "
    "home. kubectl is configured for namespace `{namespace}`. Each command may run for at most "
    "{timeout:.0f} seconds; long output is cut. Run exactly one command per step."
)

_INSTRUCTIONS = {
    Scaffold.FIVE_STEP: (
        "Before every action, think in five parts. Reply with exactly one JSON object and "
        "nothing else:\n"
        '{{"explanation": "the situation as you understand it", '
        '"gaps": "what you do not know yet", '
        '"findings": "what the last outputs told you", '
        '"plan": "your next steps", '
        '"action": {{"type": "command", "command": "<one shell command>"}}}}\n'
        'When the task is complete, use "action": {{"type": "finish", "summary": "<what you did>"}}.\n'
        "Keep each part short: one or two sentences."
    ),
    Scaffold.REACT: (
        "Reply in exactly this format:\n"
        "Thought: <your reasoning>\n"
        "Command: <one shell command>\n"
        "When the task is complete, reply instead:\n"
        "Thought: <your reasoning>\n"
        "Finish: <what you did>\n"
        "Keep the thought short."
    ),
    Scaffold.TOOLS: (
        f"Act only through the tools: call `{TOOL_RUN}` with one shell command, or `{TOOL_FINISH}` "
        "when the task is complete. Explain your reasoning briefly in the message text."
    ),
}


def system_message(scaffold: Scaffold, system_prompt: str, namespace: str, command_timeout: float) -> str:
    environment = _ENVIRONMENT.format(namespace=namespace, timeout=command_timeout)
    return f"{system_prompt.strip()}\n\n{environment}\n\n{_INSTRUCTIONS[scaffold].format()}"


def format_reminder(scaffold: Scaffold) -> str:
    return {
        Scaffold.FIVE_STEP: "Reply with one JSON object with explanation, gaps, findings, plan and action.",
        Scaffold.REACT: "Reply with `Thought:` and then `Command:` (or `Finish:`).",
        Scaffold.TOOLS: f"Call the `{TOOL_RUN}` tool or the `{TOOL_FINISH}` tool.",
    }[scaffold]


@dataclass
class Decision:
    kind: Literal["command", "finish", "invalid"]
    reasoning: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    summary: str | None = None
    error: str | None = None  # why the reply could not be read
    via: Literal["json", "text", "tool"] | None = None


_FENCE = re.compile(r"```[a-zA-Z]*\n?(.*?)```", re.DOTALL)
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(thought|command|action|finish|explanation|gaps|findings|plan)(?:\*\*)?\s*:\s*",
    re.IGNORECASE | re.MULTILINE,
)


def _strip_command(text: str) -> str:
    text = text.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    if text.startswith("`"):
        # `kubectl get pods` followed by prose: the command is what the backticks enclose.
        closing = text.find("`", 1)
        text = (text[1:closing] if closing > 0 else text.strip("`")).strip()
    if text.startswith("$ "):
        text = text[2:]
    return text


def _json_candidate(text: str) -> Any:
    for fenced in _FENCE.findall(text):
        try:
            return json.loads(fenced)
        except ValueError:
            pass
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end <= start:
        return None
    try:
        return json.loads(text[start : end + 1])
    except ValueError:
        return None


def _from_json(data: dict[str, Any]) -> Decision | None:
    reasoning = {k: str(data[k]) for k in (*FIVE_STEP_PARTS, "thought") if isinstance(data.get(k), str)}
    action = data.get("action")
    if isinstance(action, str):
        action = {"type": "command", "command": action}
    if not isinstance(action, dict):
        if isinstance(data.get("command"), str):
            action = {"type": "command", "command": data["command"]}
        else:
            return None
    kind = str(action.get("type", "command")).lower()
    if kind == "finish":
        summary = action.get("summary") or data.get("summary") or ""
        return Decision("finish", reasoning, summary=str(summary), via="json")
    command = action.get("command")
    if not isinstance(command, str) or not _strip_command(command):
        return Decision("invalid", reasoning, error="the action has no command", via="json")
    return Decision("command", reasoning, command=_strip_command(command), via="json")


def _from_labels(text: str) -> Decision | None:
    matches = list(_LABEL.finditer(text))
    if not matches:
        return None
    sections: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        label = match.group(1).lower()
        sections.setdefault(label, text[match.end() : end].strip())
    reasoning = {k: v for k, v in sections.items() if k in (*FIVE_STEP_PARTS, "thought")}
    if "finish" in sections:
        return Decision("finish", reasoning, summary=sections["finish"], via="text")
    label = "command" if "command" in sections else "action" if "action" in sections else None
    if label is None:
        return None
    command = sections[label]
    if command.lower().startswith("finish"):
        return Decision("finish", reasoning, summary=command[len("finish") :].lstrip(" :"), via="text")
    command = _strip_command(command)
    if not command:
        return Decision("invalid", reasoning, error="the command is empty", via="text")
    return Decision("command", reasoning, command=command, via="text")


def parse_text(text: str | None) -> Decision:
    if not text or not text.strip():
        return Decision("invalid", error="the reply was empty")
    data = _json_candidate(text)
    if isinstance(data, dict):
        decision = _from_json(data)
        if decision is not None:
            return decision
    decision = _from_labels(text)
    if decision is not None:
        return decision
    return Decision("invalid", error="no action found in the reply")


def parse_tool_call(name: str, arguments: str, content: str | None) -> Decision:
    reasoning = {"thought": content.strip()} if content and content.strip() else {}
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return Decision("invalid", reasoning, error=f"the arguments of `{name}` are not JSON", via="tool")
    if not isinstance(args, dict):
        return Decision(
            "invalid", reasoning, error=f"the arguments of `{name}` are not an object", via="tool"
        )
    if name == TOOL_FINISH:
        return Decision("finish", reasoning, summary=str(args.get("summary", "")), via="tool")
    if name == TOOL_RUN:
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            return Decision(
                "invalid", reasoning, error="`run_command` was called without a command", via="tool"
            )
        return Decision("command", reasoning, command=_strip_command(command), via="tool")
    return Decision("invalid", reasoning, error=f"there is no tool named `{name}`", via="tool")
