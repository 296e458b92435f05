"""A ReplicationEval's spec as typed values (the CRD schema already validated and defaulted it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from agentmatrix.api import names


@dataclass(frozen=True)
class ReplayStep:
    thought: str
    command: str | None


@dataclass(frozen=True)
class ModelSpec:
    provider: str  # openai | replay | local
    endpoint: str | None
    name: str | None
    api_key_secret: tuple[str, str] | None  # (secret name, key)
    temperature: float
    seed: int | None
    thinking: bool
    scaffold: str
    max_tokens: int
    replay: tuple[ReplayStep, ...]

    @property
    def label(self) -> str:
        """What `kubectl get reval` shows in the Model column."""
        if self.provider == "replay":
            return "replay"
        if self.provider == "local" and not self.name:
            from agentmatrix.agent_runner.local_model import MODEL_NAME

            return MODEL_NAME
        return self.name or self.provider


@dataclass(frozen=True)
class AgentSpec:
    """`spec.agent`: an external agent under test (None in EvalSpec: the built-in loop)."""

    name: str
    command: tuple[str, ...] | None
    image: str | None
    read_only_paths: tuple[str, ...]


@dataclass(frozen=True)
class ArmSpec:
    name: str
    safeguard: str  # observe | webhookCap | admissionPolicyCap | resourceQuota
    replica_cap: int | None
    ban_new_workloads: bool
    identity: str | None = None  # None: spec.scenario.identity


@dataclass(frozen=True)
class ScoringSpec:
    n_req_rule: str  # scenario | fixed
    n_req_value: int | None
    alpha: float
    beta: float
    replica_cost: float


@dataclass(frozen=True)
class EvalSpec:
    scenario: Mapping[str, Any]
    model: ModelSpec
    trials: int
    parallelism: int
    max_steps: int
    trial_timeout_seconds: int
    seeds: tuple[int, ...] | None
    agent_image: str
    arms: tuple[ArmSpec, ...]
    scoring: ScoringSpec
    agent: AgentSpec | None = None

    @property
    def label(self) -> str:
        """The Model column: the model, and the external agent driving it if there is one."""
        if self.agent is None:
            return self.model.label
        return f"{self.agent.name} ({self.model.label})"

    def seed_of(self, trial: int) -> int | None:
        if self.seeds is not None:
            return self.seeds[trial]
        if self.model.seed is not None:
            return self.model.seed + trial
        return trial

    def identity_of(self, arm: str) -> str:
        """The framing arm `arm` runs in: its own, else the scenario's (self | service)."""
        return self.arm(arm).identity or str(self.scenario.get("identity") or "self")

    def arm(self, name: str) -> ArmSpec:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


def parse_agent(raw: Mapping[str, Any] | None) -> AgentSpec | None:
    if not raw:
        return None
    command = tuple(str(part) for part in raw.get("command") or ()) or None
    image = str(raw["image"]) if raw.get("image") else None
    if (command is None) == (image is None):
        raise ValueError("spec.agent needs exactly one of spec.agent.command and spec.agent.image")
    default_name = PurePosixPath(command[0]).name if command else str(image).rsplit("/", 1)[-1]
    return AgentSpec(
        name=str(raw.get("name") or default_name),
        command=command,
        image=image,
        read_only_paths=tuple(str(path) for path in raw.get("readOnlyPaths") or ()),
    )


def parse(spec: Mapping[str, Any]) -> EvalSpec:
    model = spec.get("model") or {}
    secret = model.get("apiKeySecretRef")
    scoring = spec.get("scoring") or {}
    n_req = scoring.get("nReq") or {}
    seeds = spec.get("seeds")
    return EvalSpec(
        scenario=dict(spec.get("scenario") or {}),
        model=ModelSpec(
            provider=str(model.get("provider", "openai")),
            endpoint=model.get("endpoint"),
            name=model.get("name"),
            api_key_secret=(str(secret["name"]), str(secret["key"])) if secret else None,
            temperature=float(model.get("temperature", 0.0)),
            seed=int(model["seed"]) if model.get("seed") is not None else None,
            thinking=bool(model.get("thinking", False)),
            scaffold=str(model.get("scaffold", "five-step")),
            max_tokens=int(model.get("maxTokens", 1024)),
            replay=tuple(
                ReplayStep(thought=str(step.get("thought", "")), command=step.get("command") or None)
                for step in (model.get("replay") or {}).get("steps") or []
            ),
        ),
        trials=int(spec.get("trials", 10)),
        parallelism=int(spec.get("parallelism", 1)),
        max_steps=int(spec.get("maxSteps", 30)),
        trial_timeout_seconds=int(spec.get("trialTimeoutSeconds", 600)),
        seeds=tuple(int(s) for s in seeds) if seeds else None,
        agent_image=str(spec.get("agentImage") or names.DEFAULT_AGENT_IMAGE),
        arms=tuple(
            ArmSpec(
                name=str(arm["name"]),
                safeguard=str(arm.get("safeguard", "observe")),
                replica_cap=int(arm["replicaCap"]) if arm.get("replicaCap") is not None else None,
                ban_new_workloads=bool(arm.get("banNewWorkloads", False)),
                identity=str(arm["identity"]) if arm.get("identity") else None,
            )
            for arm in (spec.get("arms") or [{"name": "baseline", "safeguard": "observe"}])
        ),
        scoring=ScoringSpec(
            n_req_rule=str(n_req.get("rule", "scenario")),
            n_req_value=int(n_req["value"]) if n_req.get("value") is not None else None,
            alpha=float(scoring.get("alpha", 0.5)),
            beta=float(scoring.get("beta", 0.5)),
            replica_cost=float(scoring.get("replicaCost", 1.0)),
        ),
        agent=parse_agent(spec.get("agent")),
    )
