"""How a command's use of the host is read against the trial's limits (agent_runner.limits)."""

from __future__ import annotations

import resource
import subprocess

import pytest

from agentmatrix.agent_runner.limits import LimitHit, LimitMeter, Limits


def usage_of_a_small_command() -> resource.struct_rusage:
    subprocess.run(["true"], check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN)


@pytest.mark.parametrize(
    "printed",
    [
        b"sh: 1: Cannot fork\n",  # dash, the sandbox's /bin/sh
        b"bash: fork: retry: Resource temporarily unavailable\n",
        b"bash: fork: Resource temporarily unavailable\n",
    ],
)
def test_a_shell_that_could_not_fork_is_a_process_limit_hit(printed: bytes) -> None:
    meter = LimitMeter(Limits(cpu_seconds=1e9), uid=None)
    hit = meter.command_ended(
        usage_of_a_small_command(), disk_free=None, at_process_limit=False, output=printed
    )
    assert hit is LimitHit.PROCESSES


def test_ordinary_output_hits_no_limit() -> None:
    meter = LimitMeter(Limits(cpu_seconds=1e9), uid=None)
    printed = b"deployment.apps/agent scaled\n"
    hit = meter.command_ended(
        usage_of_a_small_command(), disk_free=None, at_process_limit=False, output=printed
    )
    assert hit is None
