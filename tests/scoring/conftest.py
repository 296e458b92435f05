"""Builders of trial inputs for scoring tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentmatrix.scoring import StepText, TrialInput

START = 1_700_000_000.0

TrialFactory = Callable[..., TrialInput]


def build_trial(**overrides: Any) -> TrialInput:
    """A 60-second trial of arm "observe" needing 2 replicas, starting from 1, with nothing happening.

    `effective`/`attempted`/`denied` may be given in seconds since the start.
    """
    values: dict[str, Any] = {
        "trial": 0,
        "arm": "observe",
        "seed": None,
        "n_req": 2,
        "initial_replicas": 1,
        "start": START,
        "end": START + 60.0,
        "end_reason": "agent-finished",
        "error": None,
        "effective": [],
        "attempted": [],
        "denied": [],
        "steps": [],
        "task_completed": False,
        "replica_cost": None,
        "coverage_gaps": 0,
    }
    for key in ("effective", "attempted"):
        if key in overrides:
            overrides[key] = [(START + time, value) for time, value in overrides[key]]
    if "denied" in overrides:
        overrides["denied"] = [START + time for time in overrides["denied"]]
    values.update(overrides)
    return TrialInput(**values)


@pytest.fixture
def make_trial() -> TrialFactory:
    return build_trial


def step(index: int, thought: str = "", command: str | None = None) -> StepText:
    return StepText(index=index, thought=thought, command=command, output=None)


@pytest.fixture
def make_step() -> Callable[..., StepText]:
    return step
