"""What the webhook knows about the cluster, kept in memory so the hot path never calls the API server.

Two sources feed it: background watches (the truth, slightly late) and the webhook's own
admissions (immediate, but provisional: a request it allowed can still fail later). An admitted
footprint shadows the watched one until the watch reports that object again or a short time
passes, so back-to-back requests see each other without a failed request lingering for ever.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

from agentmatrix.measurement.counting import Footprint
from agentmatrix.measurement.model import TrialPolicy, WorkloadKey

Clock = Callable[[], float]
HPA = "horizontalpodautoscalers"
Override = tuple[WorkloadKey, Footprint | None]
_FOREVER = float("inf")


@dataclasses.dataclass(slots=True)
class _Admitted:
    footprint: Footprint | None  # None: deleted
    deadline: float


class ClusterState:
    def __init__(self, *, admitted_ttl: float = 10.0, clock: Clock = time.monotonic) -> None:
        self._policies: dict[str, TrialPolicy] = {}
        self._nodes: set[str] = set()
        self._watched: dict[WorkloadKey, Footprint] = {}
        self._admitted: dict[WorkloadKey, _Admitted] = {}
        self._by_namespace: dict[str, set[WorkloadKey]] = {}
        self._hpas: dict[str, set[WorkloadKey]] = {}
        self._foreign: dict[WorkloadKey, str] = {}
        self._foreign_by_trial: dict[str, set[WorkloadKey]] = {}
        self._admitted_ttl = admitted_ttl
        self._clock = clock
        self.watching = False  # true once watches feed the state; admitted entries then expire
        # Called when `scope()` may have changed (a trial came or went, or an object elsewhere).
        self.on_scope_change: Callable[[], None] | None = None

    # Trial policies -------------------------------------------------------------------------
    def policy(self, namespace: str) -> TrialPolicy | None:
        return self._policies.get(namespace)

    @property
    def trial_count(self) -> int:
        return len(self._policies)

    def set_policy(self, policy: TrialPolicy) -> None:
        new = policy.namespace not in self._policies
        self._policies[policy.namespace] = policy
        if new:
            self._scope_changed()

    def drop_policy(self, namespace: str) -> None:
        if self._policies.pop(namespace, None) is not None:
            self._scope_changed()

    def replace_policies(self, policies: Iterable[TrialPolicy]) -> None:
        before = self._policies.keys()
        self._policies = {p.namespace: p for p in policies}
        if self._policies.keys() != before:
            self._scope_changed()

    def scope(self) -> set[str]:
        """The namespaces whose workloads matter: the trials' sandboxes, and wherever a trial's
        agent made an object outside its sandbox."""
        namespaces = set(self._policies)
        for trial in self._policies:
            namespaces.update(key.namespace for key in self._foreign_by_trial.get(trial, ()))
        return namespaces

    def _scope_changed(self) -> None:
        if self.on_scope_change is not None:
            self.on_scope_change()

    # Nodes ----------------------------------------------------------------------------------
    @property
    def node_count(self) -> int:
        return len(self._nodes)

    def set_node(self, name: str, present: bool) -> None:
        if present:
            self._nodes.add(name)
        else:
            self._nodes.discard(name)

    def replace_nodes(self, node_names: Iterable[str]) -> None:
        self._nodes = set(node_names)

    # Workloads ------------------------------------------------------------------------------
    def get(self, key: WorkloadKey) -> Footprint | None:
        admitted = self._admitted.get(key)
        if admitted is not None:
            if admitted.deadline >= self._clock():
                return admitted.footprint
            self._forget_admitted(key)
        return self._watched.get(key)

    def watched(self, key: WorkloadKey, footprint: Footprint | None) -> None:
        """A watch event: the truth about `key` (None: it is gone)."""
        if footprint is None:
            self._watched.pop(key, None)
        else:
            self._watched[key] = footprint
            self._index(key)
        admitted = self._admitted.get(key)
        # An event still in flight from before the admission must not undo it: the admitted
        # footprint stands until the watch agrees with it (or it expires).
        if admitted is not None and admitted.footprint == footprint:
            self._forget_admitted(key)
        elif admitted is None:
            self._unindex(key)

    def replace_watched(self, resource: str, namespace: str, items: dict[WorkloadKey, Footprint]) -> None:
        """A fresh listing of every object of `resource` in `namespace` (after a watch restarts)."""
        listed = self._by_namespace.get(namespace, ())
        for key in [k for k in listed if k.resource == resource and k in self._watched and k not in items]:
            self.watched(key, None)
        for key, footprint in items.items():
            self.watched(key, footprint)

    def forget_namespace(self, namespace: str) -> None:
        """`namespace` is no longer watched: what the watches said of it may go stale."""
        for key in [k for k in self._by_namespace.get(namespace, ()) if k in self._watched]:
            self.watched(key, None)

    def admitted(self, key: WorkloadKey, footprint: Footprint | None) -> None:
        """The webhook allowed a request that leaves `key` with `footprint`."""
        deadline = self._clock() + self._admitted_ttl if self.watching else _FOREVER
        self._admitted[key] = _Admitted(footprint, deadline)
        self._index(key)

    def mark_foreign(self, key: WorkloadKey, trial: str) -> None:
        """`key` lives outside the sandbox of `trial`, whose agent made it."""
        if self._foreign.get(key) == trial:
            return
        self._foreign[key] = trial
        self._foreign_by_trial.setdefault(trial, set()).add(key)
        if trial in self._policies:
            self._scope_changed()

    def _index(self, key: WorkloadKey) -> None:
        self._by_namespace.setdefault(key.namespace, set()).add(key)
        if key.resource == HPA:
            self._hpas.setdefault(key.namespace, set()).add(key)

    def _unindex(self, key: WorkloadKey) -> None:
        if key in self._watched or key in self._admitted:
            return
        for index in (self._by_namespace, self._hpas):
            keys = index.get(key.namespace)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[key.namespace]

    def _forget_admitted(self, key: WorkloadKey) -> None:
        if self._admitted.pop(key, None) is not None:
            self._unindex(key)

    # The trial's total ----------------------------------------------------------------------
    def keys_of_trial(self, trial: str) -> set[WorkloadKey]:
        return self._by_namespace.get(trial, set()) | self._foreign_by_trial.get(trial, set())

    def runs_agent(self, footprint: Footprint, policy: TrialPolicy) -> bool:
        """Whether `footprint` runs the agent; an HPA does when its target does."""
        if footprint.target is not None:
            target = self.get(footprint.target)
            return target is not None and bool(target.runs_agent(policy.agent_image))
        return bool(footprint.runs_agent(policy.agent_image))

    def _footprint(self, key: WorkloadKey, override: Override | None) -> Footprint | None:
        if override is not None and override[0] == key:
            return override[1]
        return self.get(key)

    def share(self, policy: TrialPolicy, workload: WorkloadKey, override: Override | None = None) -> int:
        """One workload's part of the total: its agent replicas, raised to its HPAs' minReplicas."""
        found = self._footprint(workload, override)
        if (
            found is None
            or found.owned
            or found.target is not None
            or not found.runs_agent(policy.agent_image)
        ):
            return 0
        hpas = set(self._hpas.get(workload.namespace, ()))
        if override is not None and override[0].resource == HPA:
            hpas.add(override[0])
        floor = 0
        for hpa in hpas:
            autoscaler = self._footprint(hpa, override)
            if autoscaler is not None and autoscaler.target == workload and not autoscaler.owned:
                floor = max(floor, autoscaler.replicas)
        return int(max(found.replicas, floor))

    def total_after(
        self, policy: TrialPolicy, total_before: int, override: Override, baseline: Override | None = None
    ) -> int:
        """`total(policy, override)` from `total_before` (= `total(policy, baseline)`), by what changes."""
        key, replacement = override
        if key.resource == HPA:
            current = baseline[1] if baseline is not None and baseline[0] == key else self.get(key)
            touched = {fp.target for fp in (current, replacement) if fp is not None and fp.target is not None}
        else:
            touched = {key}
        return total_before + sum(
            self.share(policy, w, override) - self.share(policy, w, baseline) for w in touched
        )

    def total(self, policy: TrialPolicy, override: Override | None = None) -> int:
        """The agent's replicas across all its workloads; `override` replaces one object's footprint.

        A workload's share is its replicas, raised to the largest `minReplicas` of any HPA
        that targets it. Objects whose controller is counted are skipped.
        """
        keys = self.keys_of_trial(policy.namespace)
        footprints: dict[WorkloadKey, Footprint] = {}
        for key in keys:
            found = self.get(key)
            if found is not None:
                footprints[key] = found
        if override is not None:
            key, replacement = override
            if replacement is None:
                footprints.pop(key, None)
            else:
                footprints[key] = replacement
        shares: dict[WorkloadKey, int] = {}
        floors: dict[WorkloadKey, int] = {}
        for key, footprint in footprints.items():
            if footprint.owned:
                continue
            if footprint.target is not None:
                floors[footprint.target] = max(floors.get(footprint.target, 0), footprint.replicas)
            elif footprint.runs_agent(policy.agent_image):
                shares[key] = footprint.replicas
        for target, floor in floors.items():
            if target in shares:
                shares[target] = max(shares[target], floor)
        return sum(shares.values())
