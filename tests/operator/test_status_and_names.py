"""Status size, conditions, sandbox names and what the operator reads from the ledger."""

from __future__ import annotations

import json
import random
import re
from typing import cast

import kopf
import pytest

from agentmatrix.measurement.model import Actor, Mode, Observation
from agentmatrix.operator import ledger_view, status
from agentmatrix.operator.handlers import StatusFreeDiffBase
from agentmatrix.operator.plan import TrialKey, label_value, sandbox_namespace
from agentmatrix.scoring import StepText, TrialInput, trial_status_entry

ETCD_LIMIT = 1_572_864  # 1.5 MiB


def noisy_trial(index: int, arm: str) -> TrialInput:
    """A long, busy trial: hundreds of replica changes, denials and long thoughts."""
    rng = random.Random(index)
    start = 1_000_000.0
    effective = [(start + i * 0.5, rng.randint(1, 60)) for i in range(600)]
    thought = "I will scale the deployment to handle the load. " * 20
    steps = [
        StepText(i, thought, f"kubectl scale deployment agent --replicas={i}", "x" * 500) for i in range(30)
    ]
    return TrialInput(
        trial=index, arm=arm, seed=index, n_req=4, initial_replicas=1, start=start, end=start + 300,
        end_reason="max_steps", error=None, effective=effective, attempted=effective,
        denied=[start + i for i in range(200)], steps=steps, task_completed=True, replica_cost=1.0,
        created_workloads=3,
    )  # fmt: skip


def test_status_of_the_largest_eval_fits_etcd() -> None:
    arms = [f"arm-{i}" for i in range(8)]
    total = 100 * len(arms)
    budget = status.entry_budget(total)
    trials = []
    peaks = []
    for arm in arms:
        for index in range(100):
            trial = noisy_trial(index, arm)
            peaks.append(max(v for _, v in trial.effective))
            entry = trial_status_entry(trial)
            entry.update(state="Succeeded", attempt=0, namespace="x" * 63, startedAt=status.now())
            trials.append(status.compact_entry(entry, budget))
    size = len(json.dumps({"trials": trials}))
    assert size < status.STATUS_BUDGET_BYTES * 1.05
    assert size + 200_000 < ETCD_LIMIT  # room for arms, comparisons and conditions
    assert [entry["peakEffective"] for entry in trials] == peaks  # compacting keeps the scores


def test_compacting_keeps_the_peak_and_the_scores() -> None:
    entry = trial_status_entry(noisy_trial(7, "a"))
    peak = max(value for _, value in entry["timeline"]["effective"])
    small = status.compact_entry(entry, 1200)
    assert max(value for _, value in small["timeline"]["effective"]) == peak
    for key in ("peakEffective", "excess", "overuse", "nReq", "excessReplicaSeconds"):
        assert small[key] == entry[key]
    assert {k: m["reached"] for k, m in small["milestones"].items()} == {
        k: m["reached"] for k, m in entry["milestones"].items()
    }
    assert len(json.dumps(small)) < len(json.dumps(entry))


def test_condition_keeps_its_transition_time_while_unchanged() -> None:
    first = status.set_condition([], "Complete", False, "TrialsPending", "0 of 2", 1)
    first[0]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    same = status.set_condition(first, "Complete", False, "TrialsPending", "1 of 2", 1)
    assert same[0]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    assert same[0]["message"] == "1 of 2"
    flipped = status.set_condition(same, "Complete", True, "AllTrialsFinished", "2 of 2", 1)
    assert flipped[0]["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    assert flipped[0]["observedGeneration"] == 1


def test_sandbox_names_are_valid_unique_and_fresh_per_attempt() -> None:
    long_name = "a-very-long-evaluation-name-that-goes-on-and-on-and-on-for-ever.v2"
    names = {
        sandbox_namespace(long_name, "0f1e2d3c-aaaa-bbbb-cccc-000000000000", TrialKey(index, arm), attempt)
        for index in range(100)
        for arm in ("baseline", "webhook-cap-arm-long")
        for attempt in (0, 1)
    }
    assert len(names) == 400
    assert all(len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) for name in names)


def test_label_values_fit() -> None:
    assert label_value("greedy") == "greedy"
    long = label_value("x" * 200)
    assert len(long) <= 63 and long != label_value("x" * 199)


def observation(seq: int, actor: Actor, operation: str, before: int, after: int, allowed: bool = True,
                resource: str = "deployments", name: str = "agent") -> Observation:  # fmt: skip
    return Observation(
        uid=f"u{seq}", time=100.0 + seq, trial_namespace="ns", namespace="ns", name=name, operation=operation,
        resource=resource, subresource="scale" if operation == "UPDATE" else "", kind="Scale", username="u",
        actor=actor, runs_agent=True, counted=True, replicas_before=before, replicas_after=after,
        total_before=before, total_after=after if allowed else before, allowed=allowed, reason="",
        mode=Mode.OBSERVE, seq=seq,
    )  # fmt: skip


def test_ledger_view_counts_denials_as_attempts_and_escapes_as_created() -> None:
    observations = [
        observation(1, Actor.OTHER, "CREATE", 0, 2),
        observation(2, Actor.TERMINATOR, "UPDATE", 2, 0),
        observation(3, Actor.AGENT, "UPDATE", 0, 9, allowed=False),
        observation(4, Actor.AGENT, "CREATE", 0, 3, name="agent-backup"),
        observation(5, Actor.AGENT, "CREATE", 3, 4, resource="pods", name="bare"),
    ]
    view = ledger_view.view(observations, "ns")
    assert view.denied == [103.0]
    assert max(count for _, count in view.attempted) == 9
    assert view.attempted[-1] == (105.0, 4)
    assert view.created == [("deployments", "agent-backup"), ("pods", "bare")]
    assert view.terminator_actions == 1


def test_spec_reading_and_seeds() -> None:
    from agentmatrix.agent_runner.local_model import MODEL_NAME
    from agentmatrix.api.replicationeval import EvalSpec, ModelSpec
    from agentmatrix.operator import providers

    def model_label(model: ModelSpec) -> str:
        return providers.of(model).label(model)

    base = {"scenario": {"name": "load-balancing"}, "trials": 3}
    replay = EvalSpec.model_validate(
        {**base, "model": {"provider": "replay", "replay": {"steps": [{"command": "x"}, {}]}}}
    )
    assert model_label(replay.model) == "replay"
    assert replay.model.replay is not None
    assert [step.command for step in replay.model.replay.steps] == ["x", None]
    assert [arm.name for arm in replay.arms] == ["baseline"]
    assert [replay.seed_of(i) for i in range(3)] == [0, 1, 2]
    local = EvalSpec.model_validate({**base, "model": {"provider": "local", "seed": 40}})
    assert model_label(local.model) == MODEL_NAME
    assert [local.seed_of(i) for i in range(3)] == [40, 41, 42]
    paired = EvalSpec.model_validate(
        {**base, "seeds": [7, 5, 9], "model": {"provider": "openai", "name": "m", "endpoint": "http://x"}}
    )
    assert model_label(paired.model) == "m"
    assert [paired.seed_of(i) for i in range(3)] == [7, 5, 9]


def test_a_misspelt_or_unknown_spec_field_is_refused_with_its_path() -> None:
    import pydantic

    from agentmatrix.api.replicationeval import EvalSpec

    with pytest.raises(pydantic.ValidationError) as refused:
        EvalSpec.model_validate(
            {"scenario": {"name": "load-balancing"}, "model": {"provider": "local", "maxToken": 5}}
        )
    assert "model.maxToken" in str(refused.value)
    with pytest.raises(pydantic.ValidationError) as refused:
        EvalSpec.model_validate({"scenario": {"name": "load-balancing"}, "model": {"provider": "gpt"}})
    assert "model.provider" in str(refused.value) and "'openai', 'replay' or 'local'" in str(refused.value)


def test_the_diff_base_is_kopfs_own_without_copying_the_status() -> None:
    body = kopf.Body(
        cast(
            kopf.RawBody,
            {
                "apiVersion": "agentmatrix.dev/v1alpha1",
                "kind": "ReplicationEval",
                "metadata": {
                    "name": "e",
                    "labels": {"team": "safety"},
                    "annotations": {"agentmatrix.dev/last-handled-configuration": "{}", "note": "kept"},
                },
                "spec": {"trials": 3, "scenario": {"name": "load-balancing"}},
                "status": {"trials": [{"trial": i, "state": "Succeeded"} for i in range(100)]},
            },
        )
    )
    ours = StatusFreeDiffBase(prefix="agentmatrix.dev", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="agentmatrix.dev", key="last-handled-configuration")
    assert ours.build(body=body) == kopfs.build(body=body)
    assert ours.build(body=body, extra_fields=["status.trials"]) == kopfs.build(
        body=body, extra_fields=["status.trials"]
    )
