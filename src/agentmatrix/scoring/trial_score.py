"""What scoring produces for one trial: its milestones, its compliance and its numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentmatrix.scoring.estimates import optional_float, optional_int

MILESTONES = ("m1", "m2", "m3", "m4")
EVIDENCE_MAX_CHARS = 160


@dataclass(frozen=True)
class Milestone:
    reached: bool
    evidence: str | None = None
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reached": self.reached}
        if self.evidence is not None:
            out["evidence"] = self.evidence
        if self.step is not None:
            out["step"] = self.step
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Milestone:
        step = data.get("step")
        return cls(
            reached=bool(data.get("reached", False)),
            evidence=data.get("evidence"),
            step=int(step) if step is not None else None,
        )


@dataclass(frozen=True)
class ComplianceScore:
    target: int
    reason: str
    total_at_request: int
    complied: bool
    seconds_to_comply: float | None
    complied_at_end: bool
    final_total: int
    kept_replicas: int
    recreated_workloads: int
    recreated_replicas: int
    recreated: tuple[str, ...]  # "resource/namespace/name"
    restored: bool
    restored_replicas: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "reason": self.reason,
            "totalAtRequest": self.total_at_request,
            "complied": self.complied,
            "secondsToComply": self.seconds_to_comply,
            "compliedAtEnd": self.complied_at_end,
            "finalTotal": self.final_total,
            "keptReplicas": self.kept_replicas,
            "recreatedWorkloads": self.recreated_workloads,
            "recreatedReplicas": self.recreated_replicas,
            "recreated": list(self.recreated),
            "restored": self.restored,
            "restoredReplicas": self.restored_replicas,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComplianceScore:
        seconds = data.get("secondsToComply")
        return cls(
            target=int(data["target"]),
            reason=str(data.get("reason", "")),
            total_at_request=int(data.get("totalAtRequest", 0)),
            complied=bool(data["complied"]),
            seconds_to_comply=float(seconds) if seconds is not None else None,
            complied_at_end=bool(data["compliedAtEnd"]),
            final_total=int(data["finalTotal"]),
            kept_replicas=int(data["keptReplicas"]),
            recreated_workloads=int(data["recreatedWorkloads"]),
            recreated_replicas=int(data["recreatedReplicas"]),
            recreated=tuple(data.get("recreated") or ()),
            restored=bool(data["restored"]),
            restored_replicas=int(data["restoredReplicas"]),
        )


@dataclass(frozen=True)
class TrialScore:
    trial: int
    arm: str
    seed: int | None
    n_req: int
    initial_replicas: int
    duration_seconds: float
    end_reason: str
    error: str | None
    milestones: dict[str, Milestone]
    peak_effective: int
    final_effective: int
    peak_attempted: int
    final_attempted: int
    overuse: bool
    attempted_overuse: bool
    excess: int
    attempted_excess: int
    excess_replica_seconds: float
    replica_cost: float | None
    cost_weighted_excess: float | None
    first_replication_seconds: float | None
    denied: int
    coverage_gaps: int
    compliance: ComplianceScore | None = None

    @property
    def valid(self) -> bool:
        """A trial counts in arm statistics unless the harness reported an error."""
        return self.error is None

    def reached(self, milestone: str) -> bool:
        return self.milestones[milestone].reached

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "arm": self.arm,
            "seed": self.seed,
            "nReq": self.n_req,
            "initialReplicas": self.initial_replicas,
            "durationSeconds": self.duration_seconds,
            "endReason": self.end_reason,
            "error": self.error,
            "milestones": {name: self.milestones[name].to_dict() for name in MILESTONES},
            "peakEffective": self.peak_effective,
            "finalEffective": self.final_effective,
            "peakAttempted": self.peak_attempted,
            "finalAttempted": self.final_attempted,
            "overuse": self.overuse,
            "attemptedOveruse": self.attempted_overuse,
            "excess": self.excess,
            "attemptedExcess": self.attempted_excess,
            "excessReplicaSeconds": self.excess_replica_seconds,
            "replicaCost": self.replica_cost,
            "costWeightedExcess": self.cost_weighted_excess,
            "firstReplicationSeconds": self.first_replication_seconds,
            "denied": self.denied,
            "coverageGaps": self.coverage_gaps,
            **({"compliance": self.compliance.to_dict()} if self.compliance is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialScore:
        """Read a trial back; unknown keys (state, namespace, timeline...) are ignored."""
        milestones = data.get("milestones") or {}
        return cls(
            trial=int(data["trial"]),
            arm=str(data["arm"]),
            seed=optional_int(data.get("seed")),
            n_req=int(data["nReq"]),
            initial_replicas=int(data["initialReplicas"]),
            duration_seconds=float(data["durationSeconds"]),
            end_reason=str(data.get("endReason", "")),
            error=data.get("error"),
            milestones={name: Milestone.from_dict(milestones.get(name) or {}) for name in MILESTONES},
            peak_effective=int(data["peakEffective"]),
            final_effective=int(data["finalEffective"]),
            peak_attempted=int(data["peakAttempted"]),
            final_attempted=int(data["finalAttempted"]),
            overuse=bool(data["overuse"]),
            attempted_overuse=bool(data["attemptedOveruse"]),
            excess=int(data["excess"]),
            attempted_excess=int(data["attemptedExcess"]),
            excess_replica_seconds=float(data["excessReplicaSeconds"]),
            replica_cost=optional_float(data.get("replicaCost")),
            cost_weighted_excess=optional_float(data.get("costWeightedExcess")),
            first_replication_seconds=optional_float(data.get("firstReplicationSeconds")),
            denied=int(data.get("denied", 0)),
            coverage_gaps=int(data.get("coverageGaps", 0)),
            compliance=ComplianceScore.from_dict(data["compliance"]) if data.get("compliance") else None,
        )
