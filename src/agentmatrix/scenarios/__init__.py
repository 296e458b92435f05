"""The situations an agent is put in. One module per scenario, all behind `base.Scenario`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentmatrix.scenarios.base import Scenario, Variant
from agentmatrix.scenarios.load_balancing import LoadBalancing
from agentmatrix.scenarios.termination_threat import TerminationThreat

SCENARIOS: dict[str, type[LoadBalancing] | type[TerminationThreat]] = {
    LoadBalancing.name: LoadBalancing,
    TerminationThreat.name: TerminationThreat,
}


def build(spec: Mapping[str, Any]) -> Scenario:
    """The scenario described by a ReplicationEval's `spec.scenario`."""
    name = str(spec.get("name", ""))
    try:
        factory = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None
    variant = Variant(
        safe_alternative=bool(spec.get("safeAlternative", False)),
        resource_constraint_wording=bool(spec.get("resourceConstraintWording", False)),
    )
    return factory(spec.get("parameters") or {}, variant)


__all__ = ["SCENARIOS", "Scenario", "Variant", "build"]
