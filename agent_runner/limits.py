"""What the agent's commands may use of the host, per trial, and how a hit is noticed.

- processes: RLIMIT_NPROC, counted for the trial's own user id, so forks past it fail; a hit is the trial's
  user running at least 3/4 of the limit while a command runs (looked at twice a second, and at
  the command's timeout), or the command's shell saying a fork failed (dash's "Cannot fork",
  bash's "fork: ... Resource temporarily unavailable"): a bomb that collapses between two looks
  is still caught. The agent can print those words itself, but that only ends its own trial;
  what is measured comes from the API server;
- memory: RLIMIT_DATA of each process, so allocations past it fail; a hit is a command's process
  reaching half the limit in resident memory;
- CPU time: RLIMIT_CPU of each process (what is left of the trial's budget); a hit is the
  commands' CPU time together reaching the budget;
- disk: the size of the agent's home (a tmpfs), so writes past it fail; a hit is a full home
  after a command.

A hit ends the trial with the limit as its end reason.

CPU and memory are read from the resource usage of each command's whole process tree (`wait4` of
the confining process: every process of the command is reaped inside it, so none is missed).
"""

from __future__ import annotations

import enum
import math
import os
import resource
from dataclasses import dataclass

# What dash and bash print when a fork fails.
FORK_FAILURES = (
    b"Cannot fork",
    b"fork: Resource temporarily unavailable",
    b"fork: retry: Resource temporarily unavailable",
)
# A fork bomb churns below its limit (failed forks end processes); no command an agent needs comes
# near three quarters of it.
PROCESS_HIT_SHARE = 0.75


class LimitHit(enum.StrEnum):
    PROCESSES = "process_limit"
    MEMORY = "memory_limit"
    CPU = "cpu_limit"
    DISK = "disk_limit"


@dataclass(frozen=True)
class Limits:
    processes: int = 256  # tasks (processes and threads) of the trial's user at once
    memory_bytes: int = 1 << 30  # data (heap and private writable mappings) of each process
    cpu_seconds: float = 600.0  # CPU time of all the trial's commands together
    disk_bytes: int = 256 << 20  # the agent's home, its only writable place

    def describe(self) -> str:
        return (
            f"{self.processes} processes, {self.memory_bytes >> 20} MiB of memory a process, "
            f"{self.cpu_seconds:.0f} s of CPU time, {self.disk_bytes >> 20} MiB of disk"
        )


def count_processes_of(uid: int) -> int:
    """Processes whose real user is `uid` (from /proc/PID/status: the owner of /proc/PID is root
    for processes that are not dumpable, as sandboxed ones may be)."""
    wanted = f"Uid:\t{uid}\t".encode()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", "rb") as status:
                    if wanted in status.read(1024):
                        count += 1
            except OSError:
                continue  # ended while we looked
    return count


class LimitMeter:
    """One trial's use against its limits, updated around each command."""

    def __init__(self, limits: Limits, uid: int | None) -> None:
        self.limits = limits
        self.uid = uid
        self.cpu_used = 0.0

    def cpu_left(self) -> float:
        return max(0.0, self.limits.cpu_seconds - self.cpu_used)

    def rlimits(self) -> dict[str, int]:
        """The next command's resource limits, by their `RLIMIT_` names (bytes, seconds)."""
        return {
            "NPROC": self.limits.processes,
            "DATA": self.limits.memory_bytes,
            "CPU": max(1, math.ceil(self.cpu_left())),
            "CORE": 0,
        }

    def shell_prefix(self) -> str:
        """Shell that sets the command's resource limits (soft and hard: the command cannot raise
        them), run inside the sandbox before the command; dash's ulimit takes one at a time."""
        flags = {"NPROC": "-p", "DATA": "-d", "CPU": "-t", "CORE": "-c"}
        kib = {"DATA"}  # ulimit -d counts KiB
        return " && ".join(
            f"ulimit {flags[name]} {value >> 10 if name in kib else value}"
            for name, value in self.rlimits().items()
        )

    def processes_at_limit(self) -> bool:
        """Called while a command still runs (at its timeout)."""
        return (
            self.uid is not None and count_processes_of(self.uid) >= PROCESS_HIT_SHARE * self.limits.processes
        )

    def command_ended(
        self,
        usage: resource.struct_rusage,
        disk_free: int | None,
        at_process_limit: bool,
        output: bytes = b"",
    ) -> LimitHit | None:
        """Account for the command that just ended (`usage`: of its whole process tree; `output`:
        what it printed); the limit it hit, if any."""
        self.cpu_used += usage.ru_utime + usage.ru_stime
        if at_process_limit or any(failure in output for failure in FORK_FAILURES):
            return LimitHit.PROCESSES
        if usage.ru_maxrss * 1024 >= self.limits.memory_bytes // 2:  # Linux reports KiB
            return LimitHit.MEMORY
        if self.cpu_used >= self.limits.cpu_seconds:
            return LimitHit.CPU
        if disk_free is not None and disk_free < max(64 << 10, self.limits.disk_bytes // 100):
            return LimitHit.DISK
        return None
