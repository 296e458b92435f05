"""One trial from start to finish: sandbox, pressure, agent, final count, score, record.

1. The driver starts warming up; the sandbox is created; the operator waits for the agent's
   initial pods and mints the `agent` and `terminator` tokens.
2. t0: the scenario's pressure starts (its actions at t = 0 happen here), then the agent.
3. The pressure ticks while the agent works, until the agent stops or the trial times out.
4. The pressure finishes (e.g. the maintenance completes), the workload controllers settle and
   the final count is taken: that moment is the trial's end.
5. The pod timeline, the ledger and the transcript become the trial's score and record
   (`trial_outcome`).

A harness failure at any point becomes a Failed entry with the error, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmatrix.api import names
from agentmatrix.api.replicationeval import EvalSpec
from agentmatrix.api.vocabulary import TrialEndReason
from agentmatrix.kube import Kube
from agentmatrix.measurement import coverage
from agentmatrix.measurement.feed import policy_of
from agentmatrix.measurement.model import TrialPolicy
from agentmatrix.operator import providers, safeguards, sandbox_lifecycle, sandbox_objects, transcript
from agentmatrix.operator.copies import CopyTracker
from agentmatrix.operator.drivers import Driver, Launch, Prepared, Running
from agentmatrix.operator.plan import TrialKey
from agentmatrix.operator.providers import ModelAccess
from agentmatrix.operator.sandbox_watch import SandboxWatch
from agentmatrix.operator.trial_outcome import TrialOutcome, end_of_run, outcome_of
from agentmatrix.scenarios.base import OPERATIONS_SERVICE_ACCOUNT, Pressure, Scenario, TrialWorld
from agentmatrix.scenarios.identity import Identity

logger = logging.getLogger(__name__)

STARTUP_WAIT_SECONDS = 30.0
SETTLE_SECONDS = 10.0
TOKEN_MARGIN_SECONDS = 600


@dataclass
class TrialContext:
    kube: Kube
    sandbox_watch: SandboxWatch
    eval_body: Mapping[str, Any]
    spec: EvalSpec
    scenario: Scenario
    key: TrialKey
    attempt: int
    namespace: str
    n_req: int
    work_dir: Path
    ledger_path: Path
    driver: Driver
    model_access: Callable[[TrialKey], Awaitable[ModelAccess]]
    node_count: Callable[[], Awaitable[int]]  # the cluster's nodes (DaemonSets run one copy on each)
    sandbox_settings: sandbox_objects.SandboxSettings = field(default_factory=sandbox_objects.SandboxSettings)
    on_driver_started: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    on_copies: Callable[[int], None] | None = None


async def run_trial(ctx: TrialContext) -> TrialOutcome:
    return await TrialRun(ctx).run()


class TrialRun:
    def __init__(self, ctx: TrialContext) -> None:
        self.ctx = ctx
        self.ns = ctx.namespace
        self.workdir = ctx.work_dir / ctx.namespace
        self.prompt = ctx.scenario.prompt(ctx.namespace)
        self.tracker = CopyTracker(ctx.kube, ctx.namespace, ctx.spec.agent_image, on_change=ctx.on_copies)
        self.coverage: coverage.CoverageFollower | None = None
        self.operations: Kube | None = None
        self.model: ModelAccess | None = None
        self.prepared: Prepared | None = None
        self.driver: Running | None = None
        self.pressure: Pressure | None = None
        self.transcript: transcript.Transcript = []
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.end_reason: TrialEndReason = "harness-error"
        self.started = time.time()
        self.t0 = self.started
        self.agent_started: float | None = None
        self.agent_ended: float | None = None
        self.marks: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        self.marks[phase] = round(time.time() - self.started, 3)

    async def run(self) -> TrialOutcome:
        try:
            kubeconfig = await self._set_up()
            await self._run_agent(kubeconfig)
            self.mark("agentEnded")
            assert self.pressure is not None
            await self.pressure.finish()
            self.mark("pressureFinished")
            if not await self.tracker.settle(SETTLE_SECONDS):
                logger.warning("[%s] workloads had not settled after %.0f s", self.ns, SETTLE_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("[%s] trial failed", self.ns)
            self.error = f"{type(exc).__name__}: {exc}"
            self.end_reason = "harness-error"
        finally:
            await self._release()
        self.mark("settled")
        return await outcome_of(self, end=time.time())

    async def _set_up(self) -> Path | None:
        ctx, spec = self.ctx, self.ctx.spec
        self.model = await ctx.model_access(ctx.key)
        self.prepared = await ctx.driver.prepare(self.ns, self.workdir, self.model.api_key)
        meta = ctx.eval_body["metadata"]
        namespace = sandbox_objects.namespace_object(
            self.ns,
            eval_name=meta["name"],
            eval_namespace=meta["namespace"],
            eval_uid=meta["uid"],
            key=ctx.key,
            attempt=ctx.attempt,
            arm=spec.arm(ctx.key.arm),
            agent_image=spec.agent_image,
        )
        # The sandbox's objects are followed from before the namespace exists.
        self.coverage = coverage.CoverageFollower(
            policy_of(namespace) or TrialPolicy(self.ns), await ctx.node_count(), observer=self.tracker
        )
        await ctx.sandbox_watch.subscribe(self.ns, self.coverage)
        await ctx.kube.create_or_keep("/api/v1/namespaces", namespace)
        self.mark("namespace")
        arm = spec.arm(ctx.key.arm)
        initial = ctx.scenario.initial_replicas
        lifetime = spec.trial_timeout_seconds + TOKEN_MARGIN_SECONDS
        connection = ctx.kube.access

        async def agent_kubeconfig() -> Path | None:
            if not ctx.driver.needs_agent_kubeconfig:
                return None
            token = await sandbox_lifecycle.mint_token(
                ctx.kube, self.ns, names.AGENT_SERVICE_ACCOUNT, lifetime
            )
            return await asyncio.to_thread(
                sandbox_lifecycle.write_kubeconfig,
                self.workdir / "kubeconfig",
                connection.server,
                connection.ca_data,
                token,
                self.ns,
            )

        async def agent_ready() -> bool:
            # Alongside the other objects: a pod made before the quota exists is still counted
            # once the quota controller has synced it, before the agent can act.
            model = providers.of(spec.model).label(spec.model)
            framing = sandbox_objects.Framing(Identity(spec.identity_of(ctx.key.arm)), model)
            await sandbox_lifecycle.create_agent_workload(
                ctx.kube, self.ns, spec.agent_image, initial, framing, ctx.sandbox_settings.real_node
            )
            await safeguards.of(arm).wait_in_effect(ctx.kube, self.ns, arm)
            return await self.tracker.wait_for(lambda t: t.serving() >= initial, STARTUP_WAIT_SECONDS)

        readiness = asyncio.create_task(agent_ready())
        try:
            await sandbox_lifecycle.create_sandbox(
                ctx.kube, namespace, scenario=ctx.scenario, arm=arm, settings=ctx.sandbox_settings
            )
            self.mark("objects")
            assert self.prepared is not None
            kubeconfig, operations_token, _ = await asyncio.gather(
                agent_kubeconfig(),
                sandbox_lifecycle.mint_token(ctx.kube, self.ns, OPERATIONS_SERVICE_ACCOUNT, lifetime),
                self.prepared.sandbox_made(float(spec.trial_timeout_seconds), spec.agent),
            )
            ready = await readiness
        finally:
            if not readiness.done():
                readiness.cancel()
                with contextlib.suppress(BaseException):
                    await readiness
        if not ready:
            raise RuntimeError(
                f"the agent's {initial} initial pod(s) were not ready after {STARTUP_WAIT_SECONDS:.0f} s"
            )
        self.operations = ctx.kube.with_token(operations_token)
        self.mark("ready")
        return kubeconfig

    async def _run_agent(self, kubeconfig: Path | None) -> None:
        ctx, spec = self.ctx, self.ctx.spec
        assert self.model is not None and self.prepared is not None and self.operations is not None
        world = TrialWorld(
            namespace=self.ns,
            agent_image=spec.agent_image,
            operator=ctx.kube,
            operations=self.operations,
            counter=self.tracker,
            clock=lambda: time.time() - self.t0,
            log=lambda message: logger.info("[%s] %s", self.ns, message),
        )
        self.pressure = ctx.scenario.pressure(world)
        self.t0 = time.time()
        await self.pressure.start()
        launch = Launch(
            namespace=self.ns,
            workdir=self.workdir,
            system_prompt=self.prompt.system,
            task=self.prompt.task,
            model=spec.model,
            base_url=self.model.base_url,
            model_name=self.model.model_name,
            seed=spec.seed_of(ctx.key.index),
            max_steps=spec.max_steps,
            time_limit=float(spec.trial_timeout_seconds),
            kubeconfig=kubeconfig,
            api_key=self.model.api_key,
            agent=spec.agent,
        )
        self.agent_started = time.time()
        self.driver, self.prepared = await self.prepared.start(launch), None
        if ctx.on_driver_started is not None:
            await ctx.on_driver_started(self.driver.describe())
        timed_out = not await supervise(
            self.driver, self.pressure.tick, ctx.scenario.tick_seconds, spec.trial_timeout_seconds
        )
        self.agent_ended = time.time()
        self.transcript, self.result = await self.driver.collect()
        self.end_reason, self.error = end_of_run(timed_out, self.result)

    async def _release(self) -> None:
        if self.prepared is not None:
            with contextlib.suppress(Exception):
                await self.prepared.discard()
        if self.driver is not None:
            with contextlib.suppress(Exception):
                await self.driver.stop()
        self.ctx.sandbox_watch.unsubscribe(self.ns)
        if self.operations is not None:
            await self.operations.close()
        if self.model is not None and self.model.release is not None:
            with contextlib.suppress(Exception):
                await self.model.release()


async def supervise(
    driver: Running, tick: Callable[[], Awaitable[None]], every: float, timeout_seconds: float
) -> bool:
    """Tick the pressure until the driver exits (True) or the trial times out (False; the driver
    is stopped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    waiter = asyncio.ensure_future(driver.wait())
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                await driver.stop()
                return False
            done, _ = await asyncio.wait({waiter}, timeout=min(every, remaining))
            if done:
                return True
            try:
                await tick()
            except Exception:
                logger.exception("pressure tick failed")
    finally:
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(BaseException):
                await waiter
