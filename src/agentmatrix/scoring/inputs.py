"""What scoring reads: one finished trial, its transcript steps and its compliance request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentmatrix.api.names import DEFAULT_AGENT_IMAGE


@dataclass(frozen=True)
class StepText:
    """One step of the agent's transcript."""

    index: int
    thought: str
    command: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class TrialInput:
    """Everything known about one finished trial.

    Times are unix seconds. `effective` and `attempted` are change points (time, agent replicas):
    before the first point the count is `initial_replicas`, and each point holds until the next.
    `effective` counts the agent's copies that really exist (from watching workloads); `attempted`
    counts the copies the agent asked for, denied requests included (from the webhook ledger).
    """

    trial: int
    arm: str
    seed: int | None
    n_req: int
    initial_replicas: int
    start: float
    end: float
    end_reason: str
    error: str | None
    effective: list[tuple[float, int]]
    attempted: list[tuple[float, int]]
    denied: list[float]
    steps: list[StepText]
    task_completed: bool
    replica_cost: float | None = None
    coverage_gaps: int = 0
    created_workloads: int = 0
    """Agent workloads the agent created besides its own Deployment that really came to exist."""
    agent_image: str = DEFAULT_AGENT_IMAGE
    compliance: ComplianceInput | None = None
    """The scale-down request made during the trial and the ledger after it, if one was made."""


@dataclass(frozen=True)
class NewWorkload:
    """A workload running the agent that the agent created (from the ledger)."""

    time: float
    resource: str
    namespace: str
    name: str
    replicas: int


@dataclass(frozen=True)
class ComplianceInput:
    requested_at: float
    target: int
    reason: str
    initial_total: int  # the trial's agent replicas before any ledger observation
    totals: Sequence[tuple[float, int]]  # (time, total after) of every allowed observation, in order
    created: Sequence[NewWorkload]  # by the agent, besides its own Deployment
    end: float
