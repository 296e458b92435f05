"""The webhook's vocabulary: who asked, what was asked, and the observation recorded for it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from agentmatrix.api import names


class Actor(enum.StrEnum):
    """Who sent a request, from the API server's `userInfo`."""

    AGENT = "agent"
    TERMINATOR = "terminator"
    CONTROLLER = "controller"
    OTHER = "other"


class Mode(enum.StrEnum):
    OBSERVE = "observe"
    ENFORCE = "enforce"


TERMINATOR_SERVICE_ACCOUNT = "terminator"
_SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_CONTROLLER_USERS = frozenset({"system:kube-controller-manager", "system:kube-scheduler"})


def classify_user(username: str) -> tuple[Actor, str | None]:
    """The actor behind a username, and the namespace of its ServiceAccount (if it is one)."""
    if username.startswith(_SERVICE_ACCOUNT_PREFIX):
        namespace, _, account = username[len(_SERVICE_ACCOUNT_PREFIX) :].partition(":")
        if namespace == "kube-system":
            return Actor.CONTROLLER, namespace
        if account == names.AGENT_SERVICE_ACCOUNT:
            return Actor.AGENT, namespace
        if account == TERMINATOR_SERVICE_ACCOUNT:
            return Actor.TERMINATOR, namespace
        return Actor.OTHER, namespace
    if username in _CONTROLLER_USERS:
        return Actor.CONTROLLER, None
    return Actor.OTHER, None


@dataclass(frozen=True, slots=True)
class TrialPolicy:
    """A trial's policy, read from its sandbox namespace's annotations."""

    namespace: str
    mode: Mode = Mode.OBSERVE
    replica_cap: int | None = None
    ban_new_workloads: bool = False
    agent_image: str = names.DEFAULT_AGENT_IMAGE

    @classmethod
    def from_annotations(cls, namespace: str, annotations: dict[str, str] | None) -> TrialPolicy:
        """Tolerant by design: a malformed annotation falls back to the safe reading (observe, no cap)."""
        annotations = annotations or {}
        mode = Mode.ENFORCE if annotations.get(names.ANNOTATION_MODE) == Mode.ENFORCE else Mode.OBSERVE
        cap_text = annotations.get(names.ANNOTATION_REPLICA_CAP, "").strip()
        cap = int(cap_text) if cap_text.isdigit() else None
        ban = annotations.get(names.ANNOTATION_BAN_NEW_WORKLOADS, "").strip().lower() == "true"
        image = annotations.get(names.ANNOTATION_AGENT_IMAGE) or names.DEFAULT_AGENT_IMAGE
        return cls(namespace, mode, cap, ban, image)

    @classmethod
    def from_option(cls, text: str) -> TrialPolicy:
        """`NAMESPACE[:enforce][:cap=N][:ban]` (the webhook's `--sandbox` option)."""
        namespace, *settings = text.split(":")
        if not namespace:
            raise ValueError(f"{text!r}: the namespace is missing")
        mode, cap, ban = Mode.OBSERVE, None, False
        for setting in settings:
            if setting == "enforce":
                mode = Mode.ENFORCE
            elif setting == "ban":
                ban = True
            elif setting.startswith("cap=") and setting[4:].isdigit():
                cap = int(setting[4:])
            else:
                raise ValueError(f"{text!r}: {setting!r} is not enforce, cap=N or ban")
        return cls(namespace, mode, cap, ban)


class WorkloadKey(NamedTuple):
    """One object in the cluster: its resource (plural, e.g. `deployments`), namespace and name.

    A tuple, so that hashing it (on every lookup of the hot path) costs next to nothing.
    """

    resource: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.resource}/{self.name} in {self.namespace}"


@dataclass(frozen=True, slots=True)
class Observation:
    """One admission request, as recorded in the ledger.

    `replicas_before`/`replicas_after` are the agent replicas the object itself asks for (0 when
    it does not run the agent); `counted` is false for objects whose replicas their controller
    already accounts for (a Deployment's ReplicaSets, a ReplicaSet's pods, a CronJob's Jobs).
    `total_before`/`total_after` are the agent's replicas across the whole trial.
    """

    uid: str
    time: float
    trial_namespace: str
    namespace: str
    name: str
    operation: str
    resource: str
    subresource: str
    kind: str
    username: str
    actor: Actor
    runs_agent: bool
    counted: bool
    replicas_before: int
    replicas_after: int
    total_before: int
    total_after: int
    allowed: bool
    reason: str
    mode: Mode
    max_replicas: int | None = None
    schedule: str | None = None
    seq: int = 0  # order of commit in the ledger; 0 until committed

    @property
    def delta(self) -> int:
        return self.replicas_after - self.replicas_before

    @property
    def key(self) -> WorkloadKey:
        return WorkloadKey(self.resource, self.namespace, self.name)

    @property
    def target(self) -> str:
        suffix = f"/{self.subresource}" if self.subresource else ""
        return f"{self.resource}{suffix}"
