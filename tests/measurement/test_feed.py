"""Which namespaces are a webhook's trials: sandboxes, and with evals namespaces, only theirs."""

from __future__ import annotations

from typing import Any

from agentmatrix.measurement.feed import policy_of, sandbox_selector


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "annotations": {"agentmatrix.dev/mode": "enforce"}}}


def test_only_sandboxes_of_the_webhooks_own_evals_are_trials() -> None:
    ours = namespace("t-1", **{"agentmatrix.dev/sandbox": "true", "agentmatrix.dev/eval-namespace": "team-a"})
    theirs = namespace(
        "t-2", **{"agentmatrix.dev/sandbox": "true", "agentmatrix.dev/eval-namespace": "team-b"}
    )
    unlabelled = namespace("t-3", **{"agentmatrix.dev/sandbox": "true"})
    plain = namespace("default")
    mine = ("team-a",)
    assert [n["metadata"]["name"] for n in (ours, theirs, unlabelled, plain) if policy_of(n, mine)] == ["t-1"]
    policy = policy_of(ours, mine)
    assert policy is not None and policy.namespace == "t-1" and policy.mode.value == "enforce"
    # Without evals namespaces (a cluster-wide install) every sandbox is a trial.
    assert [n["metadata"]["name"] for n in (ours, theirs, unlabelled, plain) if policy_of(n)] == [
        "t-1",
        "t-2",
        "t-3",
    ]


def test_the_watch_selects_what_policy_of_accepts() -> None:
    assert sandbox_selector() == "agentmatrix.dev/sandbox=true"
    assert sandbox_selector(("team-b", "team-a")) == (
        "agentmatrix.dev/sandbox=true,agentmatrix.dev/eval-namespace in (team-a,team-b)"
    )
