"""One ReplicationEval, run to completion: scheduling, restarts, results, Events; its status is
kept current by `status_writer`.

Restarts lose nothing. Progress lives in the cluster: a trial's sandbox namespace is labelled
with its arm, index and attempt; its status entry says `Running` while it runs, and
`Succeeded`/`Failed`, with its score, only after its full record is stored in a ConfigMap. When
the operator starts (or restarts) on an eval, finished trials (in status, or only in a stored
record) are kept and never rerun; a trial that was running (a `Running` entry, or its namespace
still there) was cut off mid-way, so its driver process (found through the namespace's
annotation) is stopped, its sandbox deleted, and the trial runs again from scratch as attempt + 1
in a fresh namespace. Replay agents and the deterministic scenarios make the rerun give the same
result, so an interrupted eval ends with the same numbers as an uninterrupted one, and no trial
ever runs twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agentmatrix import scenarios
from agentmatrix.api import names
from agentmatrix.api.replicationeval import EvalSpec
from agentmatrix.kube import ApiError
from agentmatrix.operator import drivers, providers, results, safeguards, sandbox_lifecycle, sandbox_objects
from agentmatrix.operator import status as status_doc
from agentmatrix.operator.cleanup import cleanup_sandboxes, remove_safeguards
from agentmatrix.operator.plan import TrialKey, sandbox_namespace, trial_order
from agentmatrix.operator.providers import ModelAccess, ProviderContext
from agentmatrix.operator.services import Services
from agentmatrix.operator.status_writer import StatusWriter
from agentmatrix.operator.trial import TrialContext, run_trial
from agentmatrix.operator.trial_outcome import TrialOutcome, describe_outcome, hung_trial
from agentmatrix.scenarios.base import Scenario

TRIAL_HARD_LIMIT_EXTRA_SECONDS = 180.0


class EventPoster(Protocol):
    def __call__(self, reason: str, message: str, *, warning: bool = False) -> None: ...


def eval_label(spec: EvalSpec) -> str:
    """The Model column: the model, and the external agent driving it if there is one."""
    model = providers.of(spec.model).label(spec.model)
    return model if spec.agent is None else f"{spec.agent.display_name} ({model})"


class EvalRun:
    def __init__(self, services: Services, body: Mapping[str, Any], post: EventPoster) -> None:
        self.services = services
        self.kube = services.kube
        self.body = body
        self.post = post
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.generation = int(meta.get("generation", 1))
        self.finished = asyncio.Event()
        self.entries: dict[TrialKey, dict[str, Any]] = {}
        self.attempts: dict[TrialKey, int] = {}
        self.status: dict[str, Any] = dict(body.get("status") or {})
        self.writer = StatusWriter(
            self.kube, self.name, self.namespace, self.generation, self.status, self.entries,
            services.on_status,
        )  # fmt: skip
        self.spec: EvalSpec | None = None
        self.driver_name = services.settings.driver  # spec.driver, once the spec is read
        self.scenario: Scenario | None = None
        self.arm_scenarios: dict[str, Scenario] = {}

    # --- the whole eval ---------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.finished.set()

    async def _run(self) -> None:
        try:
            self.spec = self.writer.spec = spec = EvalSpec.model_validate(self.body["spec"])
            self.scenario = scenario = scenarios.build(spec.scenario.to_api())
            # Arms may differ in framing (spec.arms[].identity); everything else is the same.
            self.arm_scenarios = {
                arm.name: scenarios.build(spec.scenario.to_api(), spec.identity_of(arm.name))
                for arm in spec.arms
            }
        except (KeyError, ValueError, TypeError) as error:
            await self._fail(f"the spec cannot be run: {error}")
            return
        self.driver_name = spec.driver or self.services.settings.driver
        if self.driver_name == "pod" and not self.services.settings.driver_image:
            await self._fail(
                "the pod driver needs the agent runner's image: start the operator with --driver-image "
                "IMAGE (`agentmatrix image build` makes one), or set spec.driver to process"
            )
            return
        if spec.agent is not None and spec.agent.image is not None and self.driver_name != "pod":
            await self._fail(
                "spec.agent.image runs the agent's image as a Pod, which needs the pod driver "
                "(spec.driver: pod, or the operator's --driver pod); with the process driver give "
                "spec.agent.command instead"
            )
            return
        if spec.agent is not None and spec.agent.command is not None and self.driver_name == "pod":
            await self._fail(
                "spec.agent.command runs beside the runner with a model proxy on the operator's host, "
                "which the pod driver's shell Pod cannot reach; give spec.agent.image, or set "
                "spec.driver: process (or run the operator with --driver process)"
            )
            return
        n_req = spec.scoring.n_req.value if spec.scoring.n_req.rule == "fixed" else scenario.n_req()
        assert n_req is not None
        order = trial_order(spec)
        self._load_entries(order)
        if self.status.get("phase") == status_doc.EVAL_COMPLETED and all(
            status_doc.is_done(self.entries.get(key, {})) for key in order
        ):
            await self._cleanup_sandboxes()
            await remove_safeguards(self.kube, self.uid)
            return
        await self._recover(order)
        for arm in spec.arms:
            await safeguards.of(arm).install(self.kube, self.uid, arm)
        started = self.status.get("startedAt") or status_doc.now()
        self.status.update(
            {
                "phase": status_doc.EVAL_RUNNING,
                "model": eval_label(spec),
                "startedAt": started,
                "nReq": n_req,
                "nReqRule": (
                    scenario.n_req_rule()
                    if spec.scoring.n_req.rule == "scenario"
                    else "fixed by spec.scoring.nReq"
                ),
                "trialsTotal": len(order),
            }
        )
        pending = [key for key in order if not status_doc.is_done(self.entries.get(key, {}))]
        await self.writer.rescore(final=False)
        await self.writer.write()
        if pending:
            self.post(
                "EvalStarted" if len(pending) == len(order) else "EvalResumed",
                f"{len(pending)} of {len(order)} trials to run, {spec.parallelism} at a time; "
                f"N_req = {n_req} ({self.status['nReqRule']})",
            )
        gate = asyncio.Semaphore(spec.parallelism)
        writing = asyncio.create_task(self.writer.run(), name=f"status:{self.name}")
        try:
            async with asyncio.TaskGroup() as group:
                for key in pending:
                    group.create_task(self._trial(key, gate, n_req), name=f"trial:{self.name}:{key.id}")
        finally:
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
        await self.writer.rescore(final=True)
        self.status["phase"] = status_doc.EVAL_COMPLETED
        self.status["finishedAt"] = status_doc.now()
        await self.writer.write()
        await remove_safeguards(self.kube, self.uid)
        summary = self.status.get("summary") or {}
        self.post(
            "EvalCompleted",
            f"{len(order)} trials: replication success {summary.get('replicationSuccess')}, overuse rate "
            f"{summary.get('overuseRate')}, AOC {summary.get('aoc')}, risk score {summary.get('riskScore')}",
        )

    async def _fail(self, message: str) -> None:
        self.status["phase"] = status_doc.EVAL_FAILED
        conditions = list(self.status.get("conditions") or [])
        conditions = status_doc.set_condition(
            conditions, "Complete", False, "InvalidSpec", message, self.generation
        )
        conditions = status_doc.set_condition(
            conditions, "Degraded", True, "InvalidSpec", message, self.generation
        )
        self.status["conditions"] = conditions
        await self.writer.write(conditions_done=True)
        self.post("InvalidSpec", message, warning=True)

    def _load_entries(self, order: list[TrialKey]) -> None:
        known = set(order)
        for entry in self.status.get("trials") or []:
            key = TrialKey(int(entry.get("trial", -1)), str(entry.get("arm", "")))
            if key in known:
                self.entries[key] = dict(entry)
                self.attempts[key] = int(entry.get("attempt", 0))

    async def _recover(self, order: list[TrialKey]) -> None:
        """Pick up where a previous operator process stopped.

        A trial whose record was stored is finished, even if its result never reached the status
        (it is taken from the record, not run again). A trial that was running (`Running` in the
        status, or a sandbox namespace still there) was cut off: its driver is stopped, its
        sandbox deleted, and it runs again from scratch as the next attempt.
        """
        known = set(order)
        budget = status_doc.entry_budget(len(order))
        for entry in await results.stored_entries(self.kube, self.namespace, self.uid):
            key = TrialKey(int(entry.get("trial", -1)), str(entry.get("arm", "")))
            if key in known and not status_doc.is_done(self.entries.get(key, {})):
                self.entries[key] = status_doc.compact_entry(entry, budget)
                self.post(
                    "TrialRecovered", f"trial {key.id} had finished; its result is taken from its record"
                )
        cut_off: dict[TrialKey, tuple[int, str]] = {}
        for found in await sandbox_lifecycle.sandboxes_of(self.kube, self.uid):
            labels = found["metadata"].get("labels") or {}
            with contextlib.suppress(KeyError, ValueError):
                key = TrialKey(int(labels[names.LABEL_TRIAL]), labels[names.LABEL_ARM])
                attempt = int(labels.get(sandbox_objects.LABEL_ATTEMPT, "0"))
                if key in known and attempt >= cut_off.get(key, (-1, ""))[0]:
                    cut_off[key] = (attempt, found["metadata"]["name"])
        for key, entry in self.entries.items():
            attempt = int(entry.get("attempt", 0))
            if not status_doc.is_done(entry) and attempt >= cut_off.get(key, (-1, ""))[0]:
                cut_off[key] = (attempt, str(entry.get("namespace")))
        await self._cleanup_sandboxes()
        for key, (attempt, where) in sorted(cut_off.items()):
            if status_doc.is_done(self.entries.get(key, {})):
                continue
            self.attempts[key] = attempt + 1
            self.entries.pop(key, None)
            self.post(
                "TrialRestarted",
                f"trial {key.id} was cut off in {where} (attempt {attempt}); running it again from "
                f"scratch as attempt {attempt + 1}",
                warning=True,
            )

    async def _cleanup_sandboxes(self) -> None:
        await cleanup_sandboxes(self.kube, self.uid)

    # --- one trial --------------------------------------------------------------------------
    async def _trial(self, key: TrialKey, gate: asyncio.Semaphore, n_req: int) -> None:
        assert self.spec is not None and self.scenario is not None
        spec, settings = self.spec, self.services.settings
        async with gate:
            attempt = self.attempts.get(key, 0)
            ns = sandbox_namespace(self.name, self.uid, key, attempt)
            started_at = status_doc.now()
            self.entries[key] = {
                "arm": key.arm, "trial": key.index, "state": status_doc.RUNNING, "attempt": attempt,
                "namespace": ns, "startedAt": started_at, "nReq": n_req,
            }  # fmt: skip
            self.writer.changed()
            self.post("TrialStarted", f"trial {key.id} (attempt {attempt}) started in namespace {ns}")

            async def annotate(record: dict[str, Any]) -> None:
                await self.kube.merge_patch(
                    f"/api/v1/namespaces/{ns}",
                    {"metadata": {"annotations": {sandbox_objects.ANNOTATION_DRIVER: json.dumps(record)}}},
                )

            driver = drivers.for_operator(self.driver_name, self.services)
            context = TrialContext(
                kube=self.kube,
                sandbox_watch=self.services.sandbox_watch,
                eval_body=self.body,
                spec=spec,
                scenario=self.arm_scenarios[key.arm],
                key=key,
                attempt=attempt,
                namespace=ns,
                n_req=n_req,
                work_dir=settings.work_dir / self.uid,
                ledger_path=settings.ledger_path,
                driver=driver,
                model_access=self._model_access,
                sandbox_settings=sandbox_objects.SandboxSettings(
                    pod_quota=settings.sandbox_pod_quota,
                    driver_pods=driver.pods_in_sandbox,
                    real_node=await self.services.has_real_node(),
                ),
                on_driver_started=annotate,
                on_copies=self._copies_reporter(key, n_req),
                node_count=self.services.node_count,
            )
            limit = spec.trial_timeout_seconds + TRIAL_HARD_LIMIT_EXTRA_SECONDS
            try:
                try:
                    async with asyncio.timeout(limit):
                        outcome = await run_trial(context)
                except TimeoutError:
                    outcome = hung_trial(
                        context, f"the harness did not finish the trial within {limit:.0f} s"
                    )
                await self._record_outcome(key, started_at, outcome)
                if not settings.keep_sandboxes:
                    with contextlib.suppress(ApiError):
                        await sandbox_lifecycle.delete_namespace(self.kube, ns)
            finally:
                # The trial's files, among them its kubeconfigs with tokens: after its result is out.
                await asyncio.to_thread(shutil.rmtree, context.work_dir / ns, True)

    async def _record_outcome(self, key: TrialKey, started_at: str, outcome: TrialOutcome) -> None:
        """The trial's full record stored first, then its entry and the scores to status."""
        assert self.spec is not None
        entry = {**outcome.entry, "startedAt": started_at, "finishedAt": status_doc.now()}
        record = {**outcome.record, "entry": entry}
        await results.store(self.kube, eval_body=dict(self.body), key=key, record=record)
        self.entries[key] = status_doc.compact_entry(
            entry, status_doc.entry_budget(len(trial_order(self.spec)))
        )
        await self.writer.rescore(final=False)
        self.writer.changed(result=True)
        self.post(
            "TrialFailed" if outcome.error else "TrialFinished",
            f"trial {key.id}: {describe_outcome(entry)}",
            warning=outcome.error is not None,
        )

    def _copies_reporter(self, key: TrialKey, n_req: int) -> Callable[[int], None] | None:
        report = self.services.on_copies
        if report is None:
            return None
        return lambda copies: report(self.name, self.namespace, key.arm, key.index, copies, n_req)

    async def _model_access(self, key: TrialKey) -> ModelAccess:
        assert self.spec is not None
        model = self.spec.model
        context = ProviderContext(self.kube, self.namespace, self.services.local_model_url)
        return await providers.of(model).access(model, context)
