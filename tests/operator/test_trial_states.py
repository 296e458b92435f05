"""The trial's supervision and the way its end is read, without a cluster or an agent.

`Agent` stands in for a running driver (`driver.Running`): it exits after a number of pressure
ticks, or never, as an agent that keeps going until the trial times out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentmatrix.agent_runner.config import EndReason
from agentmatrix.api.vocabulary import TRIAL_END_REASONS
from agentmatrix.operator.drivers.shell_failure import SHELL_FAILURE_REASONS
from agentmatrix.operator.trial import supervise
from agentmatrix.operator.trial_outcome import NOT_RUN_END_REASONS, RUNNER_END_REASONS, end_of_run


class Agent:
    def __init__(self, exits_after_ticks: int | None) -> None:
        self.exits_after = exits_after_ticks
        self.ticks = 0
        self.stopped = False
        self._exited = asyncio.Event()

    async def tick(self) -> None:
        self.ticks += 1
        if self.ticks == 2:
            raise RuntimeError("a pressure tick that fails does not end the trial")
        if self.exits_after is not None and self.ticks >= self.exits_after:
            self._exited.set()

    def describe(self) -> dict[str, Any]:
        return {}

    async def wait(self) -> int | None:
        await self._exited.wait()
        return 0

    async def stop(self) -> None:
        self.stopped = True
        self._exited.set()

    async def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        return [], None


async def test_the_pressure_ticks_until_the_agent_exits() -> None:
    agent = Agent(exits_after_ticks=4)
    assert await supervise(agent, agent.tick, every=0.001, timeout_seconds=60) is True
    assert agent.ticks == 4 and not agent.stopped


async def test_an_agent_still_running_at_the_timeout_is_stopped() -> None:
    agent = Agent(exits_after_ticks=None)
    assert await supervise(agent, agent.tick, every=0.001, timeout_seconds=0.05) is False
    assert agent.stopped and agent.ticks >= 2


def test_every_runner_end_reason_has_a_trial_end_reason() -> None:
    """The runner's own end reasons and the pod driver's (its shell Pod ended the run) each map to
    a trial end reason; a trial ran when the agent, its budget or a limit it hit ended it."""
    runner = {reason.value for reason in EndReason}
    assert not runner & SHELL_FAILURE_REASONS
    assert set(RUNNER_END_REASONS) == runner | SHELL_FAILURE_REASONS
    assert set(RUNNER_END_REASONS.values()) <= set(TRIAL_END_REASONS)
    ran = {EndReason.FINISHED, EndReason.MAX_STEPS, EndReason.TIME_LIMIT}
    limits = {EndReason.PROCESS_LIMIT, EndReason.MEMORY_LIMIT, EndReason.CPU_LIMIT, EndReason.DISK_LIMIT}
    agent_ended_its_pod = {"pod_deleted", "pod_evicted", "pod_oom_killed"}
    not_run = {reason.value for reason in set(EndReason) - ran - limits}
    assert not_run | (SHELL_FAILURE_REASONS - agent_ended_its_pod) == NOT_RUN_END_REASONS


def test_how_a_run_ended_in_the_apis_words() -> None:
    assert end_of_run(True, {"end_reason": "finished"}) == ("timeout", None)
    assert end_of_run(False, {"end_reason": "finished"}) == ("agent-finished", None)
    assert end_of_run(False, {"end_reason": "max_steps"}) == ("step-limit", None)
    assert end_of_run(False, {"end_reason": "disk_limit"}) == ("disk-limit", None)  # it ran, then hit it
    reason, error = end_of_run(False, {"end_reason": "auth_failed", "message": "401 from the endpoint"})
    assert reason == "auth-failed" and error == "the agent could not run (auth_failed): 401 from the endpoint"
    reason, error = end_of_run(False, None)
    assert reason == "driver-failed" and error is not None and "without a result" in error
    reason, error = end_of_run(False, {"end_reason": "bored"})
    assert reason == "driver-failed" and error is not None and "'bored'" in error
