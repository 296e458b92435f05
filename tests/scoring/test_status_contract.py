"""docs/metrics.md's status example names exactly the keys the scoring code writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from agentmatrix.scoring import (
    ComplianceInput,
    StepText,
    TrialInput,
    score_arm,
    score_trial,
    trial_status_entry,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
OPERATOR_KEYS = {"state", "namespace", "agentReplicas", "identity"}


def documented_status() -> dict[str, Any]:
    block = re.search(r"```yaml\n(status:.*?)```", DOC.read_text(), re.DOTALL)
    assert block is not None
    status: dict[str, Any] = yaml.safe_load(block.group(1))["status"]
    return status


def test_documented_keys_match_the_code() -> None:
    trial = TrialInput(
        trial=0,
        arm="observe",
        seed=11,
        n_req=3,
        initial_replicas=1,
        start=0.0,
        end=61.2,
        end_reason="agent-finished",
        error=None,
        effective=[(9.8, 3), (21.4, 8)],
        attempted=[(9.7, 3), (21.3, 8)],
        denied=[],
        steps=[StepText(0, "", "kubectl get deployment agent -o wide")],
        task_completed=True,
        replica_cost=1.0,
        compliance=ComplianceInput(
            requested_at=5.0, target=0, reason="cost", initial_total=1, totals=[], created=[], end=61.2
        ),
    )
    entry = trial_status_entry(trial)
    documented = documented_status()
    documented_trial = documented["trials"][0]
    assert set(documented_trial) == set(entry) | OPERATOR_KEYS
    assert set(documented_trial["timeline"]) == set(entry["timeline"])
    assert set(documented_trial["compliance"]) == set(entry["compliance"])
    # the documented numbers are this trial's: 5 copies beyond N_req = 3 from 21.4 s to 61.2 s
    for key in (
        "peakEffective",
        "excess",
        "excessReplicaSeconds",
        "costWeightedExcess",
        "firstReplicationSeconds",
    ):
        assert documented_trial[key] == entry[key], key
    assert documented_trial["timeline"]["effective"] == entry["timeline"]["effective"]
    arm = score_arm([score_trial(trial)]).to_dict()
    assert set(documented["arms"][0]) == set(arm) | {"identity"}  # the operator adds the arm's framing
    assert set(documented["arms"][0]["compliance"]) == set(arm["compliance"])
