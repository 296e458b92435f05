"""An eval's status kept current while it runs: the arm scores, recomputed as trials finish; the
conditions; and the writes to the API server, which gather changes. A trial's result goes out at
once (at most one write every RESULT_WRITE_GAP seconds); other changes, such as trials starting,
wait for up to STATUS_WRITE_INTERVAL seconds, so that many of them cost one write. The layout of
the status is `status`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from agentmatrix.api import names
from agentmatrix.api.replicationeval import EvalSpec
from agentmatrix.kube import ApiError, Kube
from agentmatrix.operator import status as status_doc
from agentmatrix.operator.plan import TrialKey, trial_order
from agentmatrix.scoring import ArmComparison, ArmScore, TrialScore, compare_arms, score_arm
from agentmatrix.scoring.arm import DEFAULT_BOOTSTRAP_SAMPLES

logger = logging.getLogger(__name__)

PROGRESS_BOOTSTRAP_SAMPLES = 200  # while trials run; the final scores use the scoring default
RESCORE_EVERY_SECONDS = 5.0
STATUS_WRITE_INTERVAL = 0.5
RESULT_WRITE_GAP = 0.1

StatusListener = Callable[[str, str, Mapping[str, Any]], None]  # (eval, namespace, status)


def eval_path(namespace: str, name: str) -> str:
    return f"/apis/{names.API_VERSION}/namespaces/{namespace}/{names.PLURAL}/{name}"


class StatusWriter:
    """Writes `status`, with the trial entries of `entries`, to the eval `namespace`/`name`. Both
    dicts are the running eval's own: it changes them and says so (`changed`)."""

    def __init__(
        self,
        kube: Kube,
        name: str,
        namespace: str,
        generation: int,
        status: dict[str, Any],
        entries: dict[TrialKey, dict[str, Any]],
        on_status: StatusListener | None,
    ) -> None:
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.generation = generation
        self.status = status
        self.entries = entries
        self.on_status = on_status
        self.spec: EvalSpec | None = None  # once the eval's spec is read
        self.arm_scores: list[ArmScore] = []
        self.comparisons: list[ArmComparison] = []
        self._write_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._result_ready = asyncio.Event()  # a trial's result is waiting to be written
        self._scored_at = 0.0

    def changed(self, *, result: bool = False) -> None:
        """The status changed; `result`: by a trial's result, which goes out at once."""
        if result:
            self._result_ready.set()
        self._dirty.set()

    async def rescore(self, *, final: bool) -> None:
        """Arm scores from the finished trials; while running, cheaply and at most every few seconds."""
        assert self.spec is not None
        now = time.monotonic()
        if not final and now - self._scored_at < RESCORE_EVERY_SECONDS and self.arm_scores:
            return
        self._scored_at = now
        spec = self.spec
        by_arm: dict[str, list[TrialScore]] = {arm.name: [] for arm in spec.arms}
        for entry in self.entries.values():
            if status_doc.is_done(entry) and "milestones" in entry:
                by_arm[str(entry["arm"])].append(TrialScore.from_dict(entry))
        samples = DEFAULT_BOOTSTRAP_SAMPLES if final else PROGRESS_BOOTSTRAP_SAMPLES

        def compute() -> tuple[list[ArmScore], list[ArmComparison]]:
            arms = [
                score_arm(
                    trials,
                    alpha=spec.scoring.alpha,
                    beta=spec.scoring.beta,
                    arm=name,
                    bootstrap_samples=samples,
                )
                for name, trials in by_arm.items()
                if trials
            ]
            comparisons = (
                [compare_arms(arms[0], other, bootstrap_samples=samples) for other in arms[1:]]
                if len(arms) > 1
                else []
            )
            return arms, comparisons

        self.arm_scores, self.comparisons = await asyncio.to_thread(compute)

    def _ordered_entries(self) -> list[dict[str, Any]]:
        assert self.spec is not None
        rank = {arm.name: i for i, arm in enumerate(self.spec.arms)}
        return [self.entries[k] for k in sorted(self.entries, key=lambda k: (k.index, rank.get(k.arm, 99)))]

    def _conditions(self) -> list[dict[str, Any]]:
        assert self.spec is not None
        total = len(trial_order(self.spec))
        done = [e for e in self.entries.values() if status_doc.is_done(e)]
        failed = [e for e in done if e.get("state") == status_doc.FAILED]
        running = [e for e in self.entries.values() if e.get("state") == status_doc.RUNNING]
        complete = len(done) == total
        conditions = list(self.status.get("conditions") or [])
        progress = f"{len(done)} of {total} trials finished, {len(running)} running"
        conditions = status_doc.set_condition(
            conditions, "Progressing", not complete,
            "TrialsRunning" if not complete else "AllTrialsFinished", progress, self.generation,
        )  # fmt: skip
        conditions = status_doc.set_condition(
            conditions, "Complete", complete,
            "AllTrialsFinished" if complete else "TrialsPending", progress, self.generation,
        )  # fmt: skip
        if failed:
            first = failed[0]
            where = f"{first.get('arm')}/{first.get('trial')}"
            message = f"{len(failed)} trial(s) failed; first: {where}: {first.get('error')}"
            conditions = status_doc.set_condition(
                conditions, "Degraded", True, "TrialErrors", message, self.generation
            )
        else:
            conditions = status_doc.set_condition(
                conditions, "Degraded", False, "NoErrors", "no trial failed", self.generation
            )
        return conditions

    async def run(self) -> None:
        """Write the status whenever it changed, until cancelled."""
        loop = asyncio.get_running_loop()
        last_write = -STATUS_WRITE_INTERVAL
        while True:
            await self._dirty.wait()
            remaining = last_write + STATUS_WRITE_INTERVAL - loop.time()
            if remaining > 0 and not self._result_ready.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._result_ready.wait()
            if self._result_ready.is_set():
                await asyncio.sleep(max(0.0, last_write + RESULT_WRITE_GAP - loop.time()))
            self._dirty.clear()
            self._result_ready.clear()
            try:
                await self.write()
            except ApiError as error:
                logger.warning("writing the status of %s/%s: %s", self.namespace, self.name, error)
                self._dirty.set()
            last_write = loop.time()

    async def write(self, *, conditions_done: bool = False) -> None:
        """Write the status now (`conditions_done`: the conditions are set already)."""
        async with self._write_lock:
            if self.spec is not None:
                done = sum(status_doc.is_done(e) for e in self.entries.values())
                total = len(trial_order(self.spec))
                self.status.update(
                    {
                        "observedGeneration": self.generation,
                        "trialsDone": done,
                        "trialsTotal": total,
                        "progress": f"{done}/{total}",
                        "trials": self._ordered_entries(),
                        **status_doc.arms_section(self.arm_scores, self.comparisons),
                    }
                )
                for arm in self.status["arms"]:
                    arm["identity"] = self.spec.identity_of(str(arm["arm"]))
                self.status["summary"] = {**self.status["summary"], "trialsDone": done, "trialsTotal": total}
                if not conditions_done:
                    self.status["conditions"] = self._conditions()
            else:
                self.status["observedGeneration"] = self.generation
            try:
                await self.kube.merge_patch(
                    f"{eval_path(self.namespace, self.name)}/status", {"status": self.status}
                )
            except ApiError as error:
                if error.status != 404:
                    raise
            if self.on_status is not None:
                with contextlib.suppress(Exception):
                    self.on_status(self.name, self.namespace, self.status)
