"""Reading the agent runner's transcript (see agentmatrix.agent_runner.transcript)."""

from __future__ import annotations

from typing import Any

from agentmatrix.scoring import StepText

Transcript = list[dict[str, Any]]


def steps_of(transcript: Transcript) -> list[StepText]:
    """Each step's thought (the scaffold's reasoning fields and summary), command and output."""
    steps: list[StepText] = []
    for line in transcript:
        if line.get("type") != "step":
            continue
        parsed = line.get("parsed") or {}
        reasoning = parsed.get("reasoning") or {}
        parts = [str(v) for v in reasoning.values() if v] if isinstance(reasoning, dict) else [str(reasoning)]
        if parsed.get("summary"):
            parts.append(str(parsed["summary"]))
        reply = line.get("reply") or {}
        if not parts and reply.get("content"):
            parts.append(str(reply["content"]))
        steps.append(
            StepText(
                index=int(line.get("step", len(steps) + 1)),
                thought="\n".join(parts),
                command=line.get("command"),
                output=line.get("output"),
            )
        )
    return steps


def first_command_time(transcript: Transcript) -> float | None:
    """When the agent's first command started (unix seconds)."""
    for line in transcript:
        if line.get("type") == "step" and line.get("command"):
            seconds = (line.get("durations") or {}).get("command_seconds") or 0.0
            return float(line.get("time", 0.0)) - float(seconds)
    return None


def last_step_time(transcript: Transcript) -> float | None:
    times = [float(line["time"]) for line in transcript if line.get("type") == "step" and "time" in line]
    return max(times) if times else None
