"""The operator's metrics as Prometheus scrapes them, following an eval's status."""

from __future__ import annotations

import copy
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentmatrix.operator.metrics import TRIAL_STATES, OperatorMetrics

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(metrics: OperatorMetrics) -> dict[Sample, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def value(samples: dict[Sample, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


EVAL = {"eval": "ab-greedy", "eval_namespace": "evals"}


def test_status_becomes_gauges_by_arm_and_state(ab_object: dict[str, Any]) -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.update_from_status("ab-greedy", "evals", ab_object["status"])
    samples = scrape(metrics)
    # 6 finished trials in each arm, plus one running observe trial
    assert value(samples, "agentmatrix_trials", **EVAL, arm="observe", state="Succeeded") == 6
    assert value(samples, "agentmatrix_trials", **EVAL, arm="observe", state="Running") == 1
    assert value(samples, "agentmatrix_trials", **EVAL, arm="enforce", state="Running") == 0
    assert {labels for name, labels in samples if name == "agentmatrix_trials"} == {
        tuple(sorted({**EVAL, "arm": arm, "state": state}.items()))
        for arm in ("observe", "enforce")
        for state in TRIAL_STATES
    }
    assert value(samples, "agentmatrix_overuse_rate", **EVAL, arm="observe") == 0.8333
    assert value(samples, "agentmatrix_overuse_rate", **EVAL, arm="enforce") == 0.0
    assert value(samples, "agentmatrix_attempted_overuse_rate", **EVAL, arm="enforce") == 0.8333
    assert value(samples, "agentmatrix_aggregate_overuse_replicas", **EVAL, arm="observe") == 20.0
    assert value(samples, "agentmatrix_replication_success_rate", **EVAL, arm="observe") == 1.0
    risk = value(samples, "agentmatrix_risk_score", **EVAL, arm="observe")
    assert risk is not None and risk > 0.5
    # the running trial (observe #6): 3 copies against N_req 2
    assert value(samples, "agentmatrix_trial_agent_replicas", **EVAL, arm="observe", trial="6") == 3
    assert value(samples, "agentmatrix_trial_required_replicas", **EVAL, arm="observe", trial="6") == 2
    # overuse events: the running trial's rise above N_req, and 5 finished observe trials with overuse
    assert value(samples, "agentmatrix_overuse_events_total", **EVAL, arm="observe") == 6
    assert value(samples, "agentmatrix_overuse_events_total", **EVAL, arm="enforce") is None


def test_repeated_updates_count_nothing_twice_and_finished_trials_lose_their_gauge(
    ab_object: dict[str, Any],
) -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    status = copy.deepcopy(ab_object["status"])
    metrics.update_from_status("ab-greedy", "evals", status)
    metrics.update_from_status("ab-greedy", "evals", status)
    running = status["trials"][-1]
    running.update(state="Succeeded", overuse=True)  # it finished; the operator deleted its namespace
    metrics.update_from_status("ab-greedy", "evals", status)
    samples = scrape(metrics)
    assert value(samples, "agentmatrix_overuse_events_total", **EVAL, arm="observe") == 6
    assert value(samples, "agentmatrix_trial_agent_replicas", **EVAL, arm="observe", trial="6") is None
    assert value(samples, "agentmatrix_trials", **EVAL, arm="observe", state="Running") == 0
    assert value(samples, "agentmatrix_trials", **EVAL, arm="observe", state="Succeeded") == 7


def test_live_observations_count_each_rise_above_need() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    for replicas in (1, 3, 4, 2, 5, 5):  # rises above N_req = 2 twice
        metrics.observe_trial_replicas("e", "ns", "observe", 0, replicas, 2)
    samples = scrape(metrics)
    labels = {"eval": "e", "eval_namespace": "ns", "arm": "observe"}
    assert value(samples, "agentmatrix_overuse_events_total", **labels) == 2
    assert value(samples, "agentmatrix_trial_agent_replicas", **labels, trial="0") == 5
    metrics.remove_trial("e", "ns", "observe", 0)
    assert value(scrape(metrics), "agentmatrix_trial_agent_replicas", **labels, trial="0") is None


def test_undefined_scores_are_absent_and_removed_evals_leave_nothing(ab_object: dict[str, Any]) -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.update_from_status("ab-greedy", "evals", ab_object["status"])
    empty_arm = {
        "arm": "later",
        "phiR": {"value": None},
        "overuseRate": {"value": None},
        "successRates": {"m3": {"value": None}},
    }
    metrics.update_from_status("other", "evals", {"arms": [empty_arm], "trials": []})
    samples = scrape(metrics)
    assert value(samples, "agentmatrix_risk_score", eval="other", eval_namespace="evals", arm="later") is None
    assert (
        value(
            samples, "agentmatrix_trials", eval="other", eval_namespace="evals", arm="later", state="Pending"
        )
        == 0
    )
    metrics.remove_eval("ab-greedy", "evals")
    remaining = scrape(metrics)
    assert not [key for key in remaining if ("eval", "ab-greedy") in key[1]]
    assert any(("eval", "other") in key[1] for key in remaining)


def test_tokens_of_each_finished_trial_are_counted_once() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    usage = {"promptTokens": 1200, "completionTokens": 90, "stepsCountedLocally": 0}
    status: dict[str, Any] = {
        "trials": [
            {"arm": "observe", "trial": 0, "state": "Succeeded", "usage": usage},
            {"arm": "observe", "trial": 1, "state": "Running"},
        ]
    }
    metrics.update_from_status("ab-greedy", "evals", status)
    status["trials"][1] = {"arm": "observe", "trial": 1, "state": "Failed", "usage": usage}
    metrics.update_from_status("ab-greedy", "evals", status)
    metrics.update_from_status("ab-greedy", "evals", status)  # a later status write counts nothing again
    samples = scrape(metrics)
    name = "agentmatrix_model_tokens_total"
    assert value(samples, name, **EVAL, arm="observe", kind="prompt") == 2400
    assert value(samples, name, **EVAL, arm="observe", kind="completion") == 180
    metrics.remove_eval("ab-greedy", "evals")
    assert not [key for key in scrape(metrics) if key[0] == name]
