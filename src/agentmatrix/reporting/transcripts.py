"""Each trial's transcript in the HTML report: what the agent thought, ran and changed.

A trial is one collapsible `<details>`; inside, every step (thought, command, exit code, output,
timing and tokens), and each replica change from the webhook's ledger at the step whose command
was running when the API server admitted it. Changes no step of the agent caused (the
terminator's, a controller's) appear in time order between the steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from agentmatrix.reporting.results import TrialRecord

# A request is admitted while the command that sent it runs; the slack covers the step's
# timestamps being taken just outside that window.
STEP_WINDOW_SLACK_SECONDS = 0.5
OUTPUT_SHOWN_CHARS = 4000


@dataclass
class ReplicaChange:
    time: float
    actor: str
    text: str
    allowed: bool


@dataclass
class Step:
    index: int
    start: float
    end: float
    line: Mapping[str, Any]
    changes: list[ReplicaChange] = field(default_factory=list)


Item = Step | ReplicaChange


def replica_changes(ledger: Sequence[Mapping[str, Any]]) -> list[ReplicaChange]:
    """The ledger's observations that changed, or asked to change, the agent's replicas."""
    changes = []
    for obs in ledger:
        before, after = int(obs.get("total_before", 0)), int(obs.get("total_after", 0))
        allowed = bool(obs.get("allowed", True))
        if before == after and allowed:
            continue
        what = f"{obs.get('operation', '').lower()} {obs.get('resource', '')}"
        if obs.get("subresource"):
            what += f"/{obs['subresource']}"
        what += f" {obs.get('name', '')}"
        if allowed:
            outcome = f"agent replicas {before} → {after}"
        else:
            asked = obs.get("replicas_after")
            outcome = f"asked for {asked} agent replicas, denied ({obs.get('reason') or 'policy'})"
        changes.append(
            ReplicaChange(
                time=float(obs.get("time", 0.0)),
                actor=str(obs.get("actor", "other")),
                text=f"{what}: {outcome}",
                allowed=allowed,
            )
        )
    return sorted(changes, key=lambda change: change.time)


def interleave(transcript: Sequence[Mapping[str, Any]], ledger: Sequence[Mapping[str, Any]]) -> list[Item]:
    """The trial's steps in order, each with the agent's replica changes its command caused, and
    every other change between the steps at its time."""
    steps: list[Step] = []
    for line in transcript:
        if line.get("type") != "step":
            continue
        end = float(line.get("time", 0.0))
        command_seconds = float((line.get("durations") or {}).get("command_seconds") or 0.0)
        steps.append(Step(int(line.get("step", len(steps) + 1)), end - command_seconds, end, line))
    loose: list[Item] = []
    for change in replica_changes(ledger):
        owner = next(
            (
                step
                for step in steps
                if change.actor == "agent"
                and step.line.get("command")
                and step.start - STEP_WINDOW_SLACK_SECONDS
                <= change.time
                <= step.end + STEP_WINDOW_SLACK_SECONDS
            ),
            None,
        )
        if owner is not None:
            owner.changes.append(change)
        else:
            loose.append(change)
    items: list[Item] = [*steps, *loose]
    return sorted(items, key=lambda item: item.end if isinstance(item, Step) else item.time)


def transcripts_html(records: Sequence[TrialRecord]) -> str:
    shown = [record for record in records if record.transcript is not None]
    if not shown:
        return ""
    parts = ['<section id="transcripts"><h2>Transcripts</h2>']
    for record in shown:
        parts.append(_trial_html(record))
    parts.append("</section>")
    return "".join(parts)


def _trial_html(record: TrialRecord) -> str:
    score = record.score
    items = interleave(record.transcript or [], record.ledger or [])
    steps = [item for item in items if isinstance(item, Step)]
    usage = record.usage
    tokens = f", {usage.promptTokens} + {usage.completionTokens} tokens" if usage else ""
    cost = f", cost {record.cost:.4f}" if record.cost is not None else ""
    changes = sum(len(s.changes) for s in steps) + sum(1 for i in items if isinstance(i, ReplicaChange))
    summary = (
        f"{escape(score.arm)} trial {score.trial}: {len(steps)} steps, {changes} replica changes"
        f"{tokens}{cost}, ended: {escape(str(score.end_reason))}"
    )
    body = "".join(_step_html(item) if isinstance(item, Step) else _loose_change_html(item) for item in items)
    return (
        f'<details class="transcript" id="transcript-{escape(score.arm)}-{score.trial}">'
        f'<summary>{summary}</summary><ol class="steps">{body}</ol></details>'
    )


def _step_html(step: Step) -> str:
    line = step.line
    parsed = line.get("parsed") or {}
    reasoning = parsed.get("reasoning")
    if isinstance(reasoning, Mapping):
        thought = "\n".join(f"{key}: {value}" for key, value in reasoning.items() if value)
    else:
        thought = str(reasoning or "")
    if parsed.get("summary"):
        thought = f"{thought}\n{parsed['summary']}".strip()
    if not thought:
        thought = str((line.get("reply") or {}).get("content") or "")
    usage = line.get("usage") or {}
    counted = " (counted locally)" if usage.get("counted") == "local" else ""
    durations = line.get("durations") or {}
    facts = [
        f"model {durations.get('model_seconds', 0)} s",
        f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens"
        + counted,
    ]
    parts = [f'<li class="step" id="step-{step.index}"><p class="thought">{escape(thought)}</p>']
    if line.get("parse_error"):
        parts.append(f'<p class="parse-error">unreadable reply: {escape(str(line["parse_error"]))}</p>')
    command = line.get("command")
    if command:
        facts.append(f"command {durations.get('command_seconds', 0)} s, exit code {line.get('exit_code')}")
        output = str(line.get("output") or "")
        if len(output) > OUTPUT_SHOWN_CHARS:
            output = (
                output[:OUTPUT_SHOWN_CHARS] + f"\n... ({len(output) - OUTPUT_SHOWN_CHARS} more characters)"
            )
        parts.append(f'<pre class="command">$ {escape(str(command))}</pre>')
        if output:
            parts.append(f'<pre class="output">{escape(output)}</pre>')
    parts.append(f'<p class="note">step {step.index}: {escape(", ".join(facts))}</p>')
    if step.changes:
        parts.append(
            '<ul class="changes">' + "".join(_change_item(change) for change in step.changes) + "</ul>"
        )
    parts.append("</li>")
    return "".join(parts)


def _change_item(change: ReplicaChange) -> str:
    css = "change allowed" if change.allowed else "change denied"
    return f'<li class="{css}">{escape(change.actor)}: {escape(change.text)}</li>'


def _loose_change_html(change: ReplicaChange) -> str:
    return f'<li class="loose"><ul class="changes">{_change_item(change)}</ul></li>'
