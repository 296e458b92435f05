"""The host check of bubblewrap that a runner host makes once, instead of every runner; a program
stopped from outside."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentmatrix.agent_runner import bubblewrap, host_check
from agentmatrix.agent_runner.command_sandbox import CommandOutcome, SandboxUnavailable
from agentmatrix.agent_runner.host_check import verify_host
from agentmatrix.agent_runner.sandbox import Sandbox
from tests.agent_runner.agent_fixtures import AgentSandbox

KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: https://127.0.0.1:9}}]\n"


async def test_runners_of_a_checked_host_do_not_check_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_check, "_host_verified", False)
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    confined = Sandbox(tmp_path / "scratch", tmp_path / "kubeconfig", "ns", kubectl="/bin/true")
    started: list[str] = []
    real_run = Sandbox.run

    async def counted(self: Sandbox, command: str, **limits: float) -> CommandOutcome:
        started.append(command)
        return await real_run(self, command, limits["time_limit"], int(limits["output_cap"]))

    monkeypatch.setattr(Sandbox, "run", counted)
    await confined.open()
    try:
        await confined.check()
        assert started == ["true"]  # an unchecked host: the runner checks
        verify_host()
        await confined.check()
        assert started == ["true"]  # a checked host: no second sandbox for the check
    finally:
        await confined.close()


def test_a_host_where_bubblewrap_cannot_work_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host_check, "_host_verified", False)
    monkeypatch.setattr(bubblewrap, "find_bwrap", lambda: "/bin/false")  # a bwrap that always fails
    with pytest.raises(SandboxUnavailable, match="bubblewrap cannot create the sandbox on this host"):
        verify_host()
    assert not host_check.host_verified()


async def test_a_program_stopped_from_outside_keeps_what_it_printed(
    agent_sandbox: AgentSandbox, tmp_path: Path
) -> None:
    """An external agent stopped at its step limit: its output until then reaches the transcript."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sandbox = Sandbox(
        scratch, agent_sandbox.kubeconfig, agent_sandbox.namespace, kubectl=str(agent_sandbox.kubectl)
    )
    await sandbox.open()
    try:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        outcome = await sandbox.run_program(
            ["sh", "-c", "echo started; sleep 60; echo never"], 120, 4096, stop=stop
        )
    finally:
        await sandbox.close()
    assert outcome.output.strip() == "started"
    assert not outcome.timed_out and outcome.seconds < 60
