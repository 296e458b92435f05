"""The ReplicationEval's status: trial entries, arm scores, summary, conditions.

Layout (see docs/metrics.md for the score fields):
- `trials[]`: one entry per started trial. While it runs: `arm`, `trial`, `state: Running`,
  `attempt`, `namespace`, `startedAt`. When it ends: the scored entry (`TrialScore.to_dict()` plus
  a compact `timeline`) with `state: Succeeded|Failed`, `attempt`, `namespace`, `startedAt`,
  `finishedAt`, `createdWorkloads`, `harness` timings. Trials not started yet have no entry.
- `arms[]`: `ArmScore.to_dict()` per arm with at least one finished trial; `comparisons[]`: every
  later arm against the first.
- `summary`: the riskiest arm's headline numbers (`status_summary`; the printer columns read
  these).
- `conditions[]`: `Progressing`, `Complete`, `Degraded`, each with `reason`, `message`,
  `observedGeneration` and `lastTransitionTime`.

Entries are trimmed to a per-trial byte budget so that the whole object stays well inside
etcd's 1.5 MiB limit at the largest allowed eval (100 trials x 8 arms); the full record of every
trial is kept in its results ConfigMap.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from agentmatrix.api.vocabulary import TRIAL_FINISHED, EvalPhase, TrialState
from agentmatrix.scoring import ArmComparison, ArmScore
from agentmatrix.scoring.arm import status_summary

STATUS_BUDGET_BYTES = 900_000
EVAL_RUNNING: EvalPhase = "Running"
EVAL_COMPLETED: EvalPhase = "Completed"
EVAL_FAILED: EvalPhase = "Failed"
RUNNING: TrialState = "Running"
SUCCEEDED: TrialState = "Succeeded"
FAILED: TrialState = "Failed"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_done(entry: Mapping[str, Any]) -> bool:
    return entry.get("state") in TRIAL_FINISHED


def entry_budget(total_trials: int) -> int:
    return max(600, STATUS_BUDGET_BYTES // max(1, total_trials))


def compact_entry(entry: dict[str, Any], budget: int) -> dict[str, Any]:
    """Thin the entry until its JSON fits `budget` bytes: first the timeline, then the evidence."""
    entry = json.loads(json.dumps(entry))
    if _size(entry) <= budget:
        return entry
    timeline = entry.get("timeline") or {}
    for series in ("effective", "attempted"):
        points = timeline.get(series) or []
        while len(points) > 4 and _size(entry) > budget:
            keep = max(4, len(points) // 2)
            points = _thin(points, keep)
            timeline[series] = points
    if _size(entry) > budget:
        timeline["denied"] = (timeline.get("denied") or [])[:4]
    if _size(entry) > budget:
        for milestone in (entry.get("milestones") or {}).values():
            milestone.pop("evidence", None)
    return entry


def _thin(points: list[Any], keep: int) -> list[Any]:
    """Keep first, last and the highest points (peaks matter most)."""
    if len(points) <= keep:
        return points
    middle = sorted(range(1, len(points) - 1), key=lambda i: -points[i][1])[: keep - 2]
    return [points[0], *(points[i] for i in sorted(middle)), points[-1]]


def _size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
) -> list[dict[str, Any]]:
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == kind), None)
    transition = (
        previous["lastTransitionTime"]
        if previous is not None and previous.get("status") == value and previous.get("lastTransitionTime")
        else now()
    )
    updated = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    }
    return [c for c in conditions if c.get("type") != kind] + [updated]


def arms_section(arms: Sequence[ArmScore], comparisons: Sequence[ArmComparison]) -> dict[str, Any]:
    return {
        "arms": [arm.to_dict() for arm in arms],
        "comparisons": [comparison.to_dict() for comparison in comparisons],
        "summary": status_summary(arms),
    }
