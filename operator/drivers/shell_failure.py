"""When the shell Pod ends a trial: deleted, evicted, OOM-killed, failed, unable to start, or
Pending past a bound; each with the runner's end reason (`operator.trial_outcome.RUNNER_END_REASONS`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from agentmatrix.api import names

PENDING_LIMIT_SECONDS = 120.0  # a shell Pod not running by then ends the trial
# Why the shell Pod ended a run, in the runner's words (operator.trial_outcome.RUNNER_END_REASONS).
ShellFailureReason = Literal[
    "pod_deleted", "pod_evicted", "pod_oom_killed", "pod_failed", "pod_image_unavailable",
    "pod_start_failed", "pod_pending",
]  # fmt: skip
SHELL_FAILURE_REASONS: frozenset[str] = frozenset(get_args(ShellFailureReason))
# Waiting reasons of a container that will not start by itself, and the trial's end reason.
STUCK_REASONS: Mapping[str, ShellFailureReason] = {
    "ErrImagePull": "pod_image_unavailable",
    "ImagePullBackOff": "pod_image_unavailable",
    "InvalidImageName": "pod_image_unavailable",
    "CreateContainerConfigError": "pod_start_failed",
    "CreateContainerError": "pod_start_failed",
    "RunContainerError": "pod_start_failed",
}


@dataclass(frozen=True)
class ShellFailure:
    reason: ShellFailureReason  # in the runner's words (operator.trial_outcome.RUNNER_END_REASONS)
    message: str


def shell_failure(pod: Mapping[str, Any] | None, seconds_pending: float) -> ShellFailure | None:
    """Why the shell Pod can no longer run the agent's commands (None while it can, or may soon)."""
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return ShellFailure("pod_deleted", f"the shell Pod {names.SHELL_POD} was deleted")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return ShellFailure("pod_evicted", f"the shell Pod was evicted: {status.get('message', '')}".strip())
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        terminated = state.get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return ShellFailure(
                "pod_oom_killed", "the shell Pod's container was OOM-killed (its memory limit)"
            )
        if terminated:
            why = terminated.get("reason") or f"exit code {terminated.get('exitCode')}"
            return ShellFailure("pod_failed", f"the shell Pod's container ended: {why}")
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return ShellFailure(
                STUCK_REASONS[waiting["reason"]],
                f"the shell Pod cannot start: {waiting['reason']}: {waiting.get('message', '')}".strip(),
            )
    if status.get("phase") in ("Failed", "Succeeded"):
        return ShellFailure(
            "pod_failed", f"the shell Pod ended ({status.get('reason') or status.get('phase')})"
        )
    if status.get("phase", "Pending") == "Pending" and seconds_pending > PENDING_LIMIT_SECONDS:
        why = "; ".join(
            f"{c.get('reason')}: {c.get('message')}"
            for c in status.get("conditions") or []
            if c.get("status") == "False"
        )
        return ShellFailure(
            "pod_pending",
            f"the shell Pod was still Pending after {PENDING_LIMIT_SECONDS:.0f} s ({why or 'no reason'})",
        )
    return None
