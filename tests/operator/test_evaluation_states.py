"""The eval's state machine without a cluster: scheduling, status, restarts, invalid specs.

`EvalRun` talks to `MemoryApi` (tests/operator/memory_api.py says which API-server behaviour it
imitates) through the real client code; each trial is the stand-in below instead of an agent run,
scored by the real scoring library. What only a cluster shows (RBAC, admission, the agent's
commands, namespaces terminating) stays in test_operator_e2e.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agentmatrix import scenarios
from agentmatrix.api import names
from agentmatrix.api.replicationeval import EvalSpec
from agentmatrix.operator import evaluation, results, sandbox_objects
from agentmatrix.operator.evaluation import EvalRun
from agentmatrix.operator.plan import TrialKey, sandbox_namespace
from agentmatrix.operator.services import OperatorSettings, Services
from agentmatrix.operator.status_writer import eval_path
from agentmatrix.operator.trial import TrialContext
from agentmatrix.operator.trial_outcome import TrialOutcome
from agentmatrix.scoring import TrialInput, trial_status_entry
from tests.operator.memory_api import MemoryApi

NAMESPACE = "evals"
SPEC: dict[str, Any] = {
    "scenario": {"name": "load-balancing"},
    "model": {"provider": "replay", "replay": {"steps": [{"thought": "done"}]}},
    "trials": 2,
    "parallelism": 2,
    "arms": [
        {"name": "baseline", "safeguard": "observe"},
        {"name": "capped", "safeguard": "resourceQuota", "replicaCap": 2},
    ],
}
PEAK = {"baseline": 6, "capped": 2}  # copies the stand-in agent reaches in each arm


class Trials:
    """Stands in for `run_trial`: makes the trial's namespace as the real one does, and scores a
    run whose copies rise from the scenario's initial replicas to the arm's peak."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, int]] = []
        self.drivers: list[str] = []

    async def __call__(self, ctx: TrialContext) -> TrialOutcome:
        self.ran.append((ctx.key.id, ctx.attempt))
        self.drivers.append(type(getattr(ctx, "driver", None)).__name__)
        arm = ctx.spec.arm(ctx.key.arm)
        meta = ctx.eval_body["metadata"]
        await ctx.kube.create(
            "/api/v1/namespaces",
            sandbox_objects.namespace_object(
                ctx.namespace, eval_name=meta["name"], eval_namespace=meta["namespace"], eval_uid=meta["uid"],
                key=ctx.key, attempt=ctx.attempt, arm=arm, agent_image=ctx.spec.agent_image,
            ),
        )  # fmt: skip
        await asyncio.sleep(0)
        start, initial = 1000.0, ctx.scenario.initial_replicas
        scored = trial_status_entry(
            TrialInput(
                trial=ctx.key.index, arm=ctx.key.arm, seed=ctx.spec.seed_of(ctx.key.index), n_req=ctx.n_req,
                initial_replicas=initial, start=start, end=start + 60, end_reason="agent-finished",
                error=None, effective=[(start, initial), (start + 30, PEAK[ctx.key.arm])], attempted=[],
                denied=[], steps=[], task_completed=True, agent_image=ctx.spec.agent_image,
            )
        )  # fmt: skip
        entry = {**scored, "state": "Succeeded", "attempt": ctx.attempt, "namespace": ctx.namespace}
        return TrialOutcome(entry=entry, record={"entry": entry}, error=None)


@pytest.fixture
def api() -> MemoryApi:
    return MemoryApi()


@pytest.fixture
def trials(monkeypatch: pytest.MonkeyPatch) -> Trials:
    stand_in = Trials()
    monkeypatch.setattr(evaluation, "run_trial", stand_in)
    return stand_in


def services(api: MemoryApi, tmp_path: Path, driver_image: str | None = None) -> Services:
    settings = OperatorSettings(
        work_dir=tmp_path / "work", ledger_path=tmp_path / "ledger.sqlite3", driver_image=driver_image
    )
    return Services(kube=api, kube_access=api.access, settings=settings)


async def create_eval(api: MemoryApi, spec: dict[str, Any]) -> dict[str, Any]:
    await api.create_or_keep("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    body = {
        "apiVersion": names.API_VERSION, "kind": names.KIND,
        "metadata": {"name": "ab", "namespace": NAMESPACE, "generation": 1}, "spec": spec,
    }  # fmt: skip
    return await api.create(f"/apis/{names.API_VERSION}/namespaces/{NAMESPACE}/{names.PLURAL}", body)


async def run(
    api: MemoryApi, body: dict[str, Any], tmp_path: Path, driver_image: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    events: list[str] = []
    shared = services(api, tmp_path, driver_image)
    await EvalRun(shared, body, lambda reason, message, **_: events.append(reason)).run()
    stored = await api.get(eval_path(NAMESPACE, "ab"))
    assert stored is not None
    return stored["status"], events


async def test_an_eval_runs_every_trial_once_and_ends_completed(
    api: MemoryApi, trials: Trials, tmp_path: Path
) -> None:
    body = await create_eval(api, SPEC)
    status, events = await run(api, body, tmp_path)

    assert sorted(trials.ran) == [("baseline/0", 0), ("baseline/1", 0), ("capped/0", 0), ("capped/1", 0)]
    assert status["phase"] == "Completed" and status["progress"] == "4/4" and status["finishedAt"]
    assert [(t["arm"], t["trial"], t["state"]) for t in status["trials"]] == [
        ("baseline", 0, "Succeeded"), ("capped", 0, "Succeeded"),
        ("baseline", 1, "Succeeded"), ("capped", 1, "Succeeded"),
    ]  # fmt: skip
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Progressing": ("False", "AllTrialsFinished"),
        "Complete": ("True", "AllTrialsFinished"),
        "Degraded": ("False", "NoErrors"),
    }
    arms = {arm["arm"]: arm for arm in status["arms"]}
    assert {name: arm["finishedTrials"] for name, arm in arms.items()} == {"baseline": 2, "capped": 2}
    assert arms["baseline"]["overuseRate"]["value"] == 1.0 and arms["capped"]["overuseRate"]["value"] == 0.0
    assert status["summary"]["arm"] == "baseline"  # the riskier arm's figures are the headline
    assert events.count("TrialFinished") == 4 and events[0] == "EvalStarted" and events[-1] == "EvalCompleted"
    # every trial's record is stored, and no sandbox namespace is left
    assert len(api.names("api/v1", "configmaps", NAMESPACE)) == 4
    assert api.names("api/v1", "namespaces") == [NAMESPACE]


async def test_a_restart_keeps_finished_trials_and_reruns_the_cut_off_one_as_a_new_attempt(
    api: MemoryApi, trials: Trials, tmp_path: Path
) -> None:
    spec = {**SPEC, "arms": SPEC["arms"][:1]}
    body = await create_eval(api, spec)
    uid = body["metadata"]["uid"]
    # The previous operator process: trial 1 finished (its record stored, its result not yet in
    # status); trial 0 was running in its sandbox when the process died.
    parsed = EvalSpec.model_validate(spec)
    previous = Trials()
    for key in (TrialKey(1, "baseline"), TrialKey(0, "baseline")):
        context = SimpleNamespace(
            kube=api, key=key, attempt=0, eval_body=body, namespace=sandbox_namespace("ab", uid, key, 0),
            spec=parsed, scenario=scenarios.build(parsed.scenario.to_api()), n_req=3,
        )  # fmt: skip
        outcome = await previous(cast(TrialContext, context))
        if key.index == 1:
            await results.store(api, eval_body=body, key=key, record=outcome.record)
    cut_off = sandbox_namespace("ab", uid, TrialKey(0, "baseline"), 0)
    running = {"arm": "baseline", "trial": 0, "state": "Running", "attempt": 0, "namespace": cut_off}
    body = await create_eval_status(api, {"phase": "Running", "trials": [running]})
    finished = sandbox_namespace("ab", uid, TrialKey(1, "baseline"), 0)
    assert api.names("api/v1", "namespaces") == sorted([NAMESPACE, cut_off, finished])

    status, events = await run(api, body, tmp_path)

    assert trials.ran == [("baseline/0", 1)]  # only the cut-off trial, as attempt 1
    assert "TrialRecovered" in events and "TrialRestarted" in events
    assert [(t["trial"], t["attempt"], t["state"]) for t in status["trials"]] == [
        (0, 1, "Succeeded"),
        (1, 0, "Succeeded"),
    ]
    assert status["phase"] == "Completed"
    assert api.names("api/v1", "namespaces") == [NAMESPACE]  # the cut-off sandbox is gone too


async def create_eval_status(api: MemoryApi, status: dict[str, Any]) -> dict[str, Any]:
    patched = await api.merge_patch(f"{eval_path(NAMESPACE, 'ab')}/status", {"status": status})
    assert patched is not None
    return patched


async def test_a_spec_the_operator_cannot_run_fails_the_eval_and_says_why(
    api: MemoryApi, trials: Trials, tmp_path: Path
) -> None:
    body = await create_eval(api, {**SPEC, "scenario": {"name": "no-such-scenario"}})
    status, events = await run(api, body, tmp_path)
    assert trials.ran == []
    assert status["phase"] == "Failed"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
    assert "scenario.name" in degraded["message"]
    assert events == ["InvalidSpec"]


async def test_spec_driver_chooses_the_driver_of_every_trial(
    api: MemoryApi, trials: Trials, tmp_path: Path
) -> None:
    """The operator's own driver is process; an eval that asks for pods gets them."""
    body = await create_eval(api, {**SPEC, "driver": "pod"})
    status, _ = await run(api, body, tmp_path, driver_image="registry.local/agentmatrix/agent-runner:0.1.0")
    assert status["phase"] == "Completed"
    assert trials.drivers and set(trials.drivers) == {"PodDriver"}


async def test_the_pod_driver_without_an_image_fails_the_eval_and_says_what_to_do(
    api: MemoryApi, trials: Trials, tmp_path: Path
) -> None:
    body = await create_eval(api, {**SPEC, "driver": "pod"})
    status, events = await run(api, body, tmp_path)
    assert trials.ran == [] and status["phase"] == "Failed" and events == ["InvalidSpec"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "start the operator with --driver-image IMAGE" in degraded["message"]
