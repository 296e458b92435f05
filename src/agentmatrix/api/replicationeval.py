"""The ReplicationEval resource as typed models: the one source of its fields, defaults and words.

The CRD (crds/agentmatrix.dev_replicationevals.yaml) states the same fields to the API server,
with the bounds and cross-field rules it enforces there; `tests/api/test_contract.py` checks the
two field by field, both ways (names, types, enums, defaults, which fields are required). Adding
a spec field is one line here plus its property in the CRD (see docs/architecture.md).

Python names are snake_case; the API's camelCase names are their aliases. `extra="forbid"`:
a manifest with a misspelt field is refused with the field's path, not silently pruned.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from agentmatrix.api import names
from agentmatrix.api.vocabulary import (
    ConditionStatus,
    DriverName,
    EvalPhase,
    Identity,
    NReqRule,
    Provider,
    Safeguard,
    Scaffold,
    ScaleDownReason,
    ScenarioName,
    TerminationAction,
)


class ApiObject(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")

    def to_api(self) -> dict[str, Any]:
        """The object as the API server holds it: camelCase names, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- spec ---------------------------------------------------------------------------------------
class LoadStep(ApiObject):
    after_seconds: int
    requests_per_second: int


class LoadParameters(ApiObject):
    per_replica_capacity_rps: int | None = None
    latency_target_ms: int | None = None
    base_latency_ms: int | None = None
    profile: tuple[LoadStep, ...] | None = None


class TerminationParameters(ApiObject):
    notice_seconds: float | None = None
    interval_seconds: float | None = None
    action: TerminationAction | None = None


class ScaleDownParameters(ApiObject):
    target: int | None = None
    reason: ScaleDownReason | None = None
    request_after_seconds: float | None = None


class ScenarioParameters(ApiObject):
    """Left out: the scenario's documented default (agentmatrix.scenarios)."""

    initial_replicas: int | None = None
    tick_seconds: float | None = None
    max_granted_replicas: int | None = None
    load: LoadParameters | None = None
    termination: TerminationParameters | None = None
    scale_down: ScaleDownParameters | None = None


class ScenarioSpec(ApiObject):
    name: ScenarioName
    identity: Identity = "self"
    safe_alternative: bool = False
    resource_constraint_wording: bool = False
    parameters: ScenarioParameters = ScenarioParameters()


class SecretKeyRef(ApiObject):
    name: str
    key: str


class ReplayStep(ApiObject):
    command: str | None = None
    thought: str | None = None


class ReplayScript(ApiObject):
    steps: tuple[ReplayStep, ...]


class ModelPricing(ApiObject):
    """Price per million tokens, in one currency of the user's choice."""

    prompt_per_million_tokens: float
    completion_per_million_tokens: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return round(
            (prompt_tokens * self.prompt_per_million_tokens
             + completion_tokens * self.completion_per_million_tokens) / 1e6,
            6,
        )  # fmt: skip


class ModelSpec(ApiObject):
    provider: Provider
    endpoint: str | None = None
    name: str | None = None
    api_key_secret_ref: SecretKeyRef | None = None
    temperature: float = 0.0
    seed: int | None = None
    thinking: bool = False
    scaffold: Scaffold = "five-step"
    max_tokens: int = 1024
    pricing: ModelPricing | None = None
    replay: ReplayScript | None = None


class ArmSpec(ApiObject):
    name: str
    safeguard: Safeguard = "observe"
    replica_cap: int | None = None
    ban_new_workloads: bool = False
    identity: Identity | None = None  # None: spec.scenario.identity


class AgentSpec(ApiObject):
    """`spec.agent`: an external agent under test instead of the built-in loop."""

    name: str | None = None
    command: tuple[str, ...] | None = None
    image: str | None = None
    read_only_paths: tuple[str, ...] | None = None

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.command:
            return PurePosixPath(self.command[0]).name
        return str(self.image).rsplit("/", 1)[-1]


class NReqSpec(ApiObject):
    rule: NReqRule = "scenario"
    value: int | None = None


class ScoringSpec(ApiObject):
    n_req: NReqSpec = NReqSpec()
    alpha: float = 0.5
    beta: float = 0.5
    replica_cost: float = 1.0


class EvalSpec(ApiObject):
    scenario: ScenarioSpec
    model: ModelSpec
    trials: int = 10
    parallelism: int = 1
    max_steps: int = 30
    trial_timeout_seconds: int = 600
    seeds: tuple[int, ...] | None = None
    agent_image: str = names.DEFAULT_AGENT_IMAGE
    arms: tuple[ArmSpec, ...] = (ArmSpec(name="baseline"),)
    scoring: ScoringSpec = ScoringSpec()
    agent: AgentSpec | None = None
    driver: DriverName | None = None  # None: the operator's own choice (`operator run --driver`)

    def identity_of(self, arm: str) -> Identity:
        """The framing arm `arm` runs in: its own, else the scenario's."""
        return self.arm(arm).identity or self.scenario.identity

    def seed_of(self, trial: int) -> int | None:
        if self.seeds is not None:
            return self.seeds[trial]
        if self.model.seed is not None:
            return self.model.seed + trial
        return trial

    def arm(self, name: str) -> ArmSpec:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


# --- status -------------------------------------------------------------------------------------
class Condition(ApiObject):
    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    last_transition_time: str | None = None


class Summary(ApiObject):
    """The riskiest arm's headline figures (the printer columns); scoring adds more figures."""

    model_config = ConfigDict(extra="allow")

    arm: str | None = None
    replication_success: float | None = None
    overuse_rate: float | None = None
    aoc: float | None = None
    risk_score: float | None = None
    trials_done: int | None = None
    trials_total: int | None = None


class EvalStatus(ApiObject):
    """What the operator writes. Trial entries, arm scores and comparisons are the scoring
    library's documents (docs/metrics.md, "Status contract"), kept here as they are."""

    model_config = ConfigDict(extra="allow")

    phase: EvalPhase | None = None
    observed_generation: int | None = None
    model: str | None = None
    progress: str | None = None
    trials_done: int | None = None
    trials_total: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    n_req: int | None = None
    n_req_rule: str | None = None
    summary: Summary | None = None
    conditions: tuple[Condition, ...] | None = None
    trials: tuple[dict[str, Any], ...] | None = None
    arms: tuple[dict[str, Any], ...] | None = None
    comparisons: tuple[dict[str, Any], ...] | None = None
