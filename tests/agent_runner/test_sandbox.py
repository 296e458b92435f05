"""The host check of bubblewrap that a runner host makes once, instead of every runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmatrix.agent_runner import sandbox
from agentmatrix.agent_runner.sandbox import Sandbox, SandboxUnavailable, verify_host

KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: https://127.0.0.1:9}}]\n"


async def test_runners_of_a_checked_host_do_not_check_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "_host_verified", False)
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    confined = Sandbox(tmp_path / "scratch", tmp_path / "kubeconfig", "ns", kubectl="/bin/true")
    started: list[str] = []
    real_run = Sandbox.run

    async def counted(self: Sandbox, command: str, **limits: float) -> sandbox.CommandOutcome:
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
    monkeypatch.setattr(sandbox, "_host_verified", False)
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: "/bin/false")  # a bwrap that always fails
    with pytest.raises(SandboxUnavailable, match="bubblewrap cannot create the sandbox on this host"):
        verify_host()
    assert not sandbox._host_verified
