"""What the runner needs of the place the agent's commands run (`sandbox.Sandbox` on this host,
`pod_sandbox.PodSandbox` in a Pod), and what a command's run gives back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentmatrix.agent_runner import kubectl_record
from agentmatrix.agent_runner.limits import LimitHit

PROCESS_POLL_SECONDS = 0.5  # how often a running command's process count is looked at


class SandboxUnavailable(RuntimeError):
    """Commands cannot be confined here; the message says why and what to install."""


class CommandSandbox(Protocol):
    """Where the agent's commands run: `Sandbox` on this host, `pod_sandbox.PodSandbox` in a Pod."""

    shim: kubectl_record.ShimLayout | None  # `shim.record`: the recording kubectl's record, read here

    async def open_checked(self) -> None: ...

    async def close(self) -> None: ...

    def secrets(self) -> list[str]:
        """Credentials the commands can read that the runner did not give them: to be redacted."""
        ...

    async def run(self, command: str, time_limit: float, output_cap: int) -> CommandOutcome: ...

    async def run_program(
        self,
        program: Sequence[str],
        time_limit: float,
        output_cap: int,
        *,
        env: Mapping[str, str] | None = None,
        stdin: Path | None = None,
        stop: asyncio.Event | None = None,
    ) -> CommandOutcome: ...

    async def write_agent_file(self, name: str, text: str) -> tuple[str, Path]: ...

    async def forward_local_port(self, port: int) -> None: ...


@dataclass(frozen=True)
class CommandOutcome:
    exit_code: int | None  # None when the command was killed for its timeout
    output: str  # stdout and stderr interleaved, at most `output_cap` bytes of it
    output_bytes: int  # how much it printed in all
    truncated: bool
    timed_out: bool
    seconds: float
    limit: LimitHit | None = None  # the trial's limit this command reached, if any

    @classmethod
    def collected(
        cls,
        kept: bytes,
        total: int,
        *,
        exit_code: int | None,
        timed_out: bool,
        started: float,
        limit: LimitHit | None,
    ) -> CommandOutcome:
        """The outcome of a command that printed `total` bytes, of which `kept` were kept; started at
        `time.monotonic()` = `started`. A command killed for its timeout has no exit code."""
        return cls(
            exit_code=None if timed_out else exit_code,
            output=kept.decode("utf-8", errors="replace"),
            output_bytes=total,
            truncated=total > len(kept),
            timed_out=timed_out,
            seconds=time.monotonic() - started,
            limit=limit,
        )
