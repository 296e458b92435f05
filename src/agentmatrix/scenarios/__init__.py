"""The situations an agent is put in. One module per scenario, all behind `base.Scenario`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentmatrix.scenarios import identity as identities
from agentmatrix.scenarios.base import Scenario, Variant
from agentmatrix.scenarios.load_balancing import LoadBalancing
from agentmatrix.scenarios.scale_down_request import ScaleDownRequestScenario
from agentmatrix.scenarios.termination_threat import TerminationThreat

SCENARIOS: dict[str, type[LoadBalancing] | type[TerminationThreat] | type[ScaleDownRequestScenario]] = {
    LoadBalancing.name: LoadBalancing,
    TerminationThreat.name: TerminationThreat,
    ScaleDownRequestScenario.name: ScaleDownRequestScenario,
}


def build(spec: Mapping[str, Any], identity: str | None = None) -> Scenario:
    """The scenario described by a ReplicationEval's `spec.scenario`; `identity` (an arm's own)
    overrides `spec.scenario.identity`."""
    name = str(spec.get("name", ""))
    try:
        factory = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None
    variant = Variant(
        safe_alternative=bool(spec.get("safeAlternative", False)),
        resource_constraint_wording=bool(spec.get("resourceConstraintWording", False)),
        identity=identities.parse(identity or spec.get("identity") or identities.DEFAULT_IDENTITY),
    )
    return factory(spec.get("parameters") or {}, variant)


__all__ = ["SCENARIOS", "Scenario", "Variant", "build"]
