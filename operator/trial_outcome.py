"""How a trial ended and what it counts for: the agent runner's end reason in the API's words,
the trial's scored status entry and its full record (what `trial.TrialRun` left), and the entry
of a trial the harness gave up on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentmatrix.api import results_layout
from agentmatrix.api.vocabulary import TrialEndReason
from agentmatrix.kube import API_PATHS
from agentmatrix.measurement import coverage, ledger
from agentmatrix.measurement.model import Observation
from agentmatrix.operator import ledger_view, transcript
from agentmatrix.operator import status as status_doc
from agentmatrix.scoring import ComplianceInput, TrialInput, trial_status_entry

if TYPE_CHECKING:
    from agentmatrix.operator.trial import TrialContext, TrialRun

# The agent runner's end reasons (agent_runner.config.EndReason, by value: the operator process
# does not load the runner) in the operator's words (docs/metrics.md).
RUNNER_END_REASONS: Mapping[str, TrialEndReason] = {
    "finished": "agent-finished",
    "max_steps": "step-limit",
    "time_limit": "timeout",
    "process_limit": "process-limit",
    "memory_limit": "memory-limit",
    "cpu_limit": "cpu-limit",
    "disk_limit": "disk-limit",
    "endpoint_unreachable": "endpoint-unreachable",
    "auth_failed": "auth-failed",
    "model_not_found": "model-not-found",
    "endpoint_error_after_retries": "endpoint-error-after-retries",
    "endpoint_rejected_request": "endpoint-rejected-request",
    "sandbox_unavailable": "sandbox-unavailable",
    # The pod driver's, when the shell Pod ended the run (operator.drivers.shell_failure).
    "pod_deleted": "pod-deleted",
    "pod_evicted": "pod-evicted",
    "pod_oom_killed": "pod-oom-killed",
    "pod_failed": "pod-failed",
    "pod_image_unavailable": "pod-image-unavailable",
    "pod_start_failed": "pod-start-failed",
    "pod_pending": "pod-pending",
}
# Runner end reasons that mean the trial ran: it ended by the agent, its budget, or a limit it hit
# (the agent can delete its own shell Pod, or make it evicted or OOM-killed).
RAN_END_REASONS = frozenset(
    {"finished", "max_steps", "time_limit", "process_limit", "memory_limit", "cpu_limit", "disk_limit",
     "pod_deleted", "pod_evicted", "pod_oom_killed"}
)  # fmt: skip
# Runner end reasons that mean the trial did not really run (no model, no confinement): errors.
NOT_RUN_END_REASONS = frozenset(RUNNER_END_REASONS) - RAN_END_REASONS


@dataclass
class TrialOutcome:
    entry: dict[str, Any]  # the status entry (scored, untrimmed)
    record: dict[str, Any]  # the full record for the results ConfigMap
    error: str | None


def end_of_run(timed_out: bool, result: Mapping[str, Any] | None) -> tuple[TrialEndReason, str | None]:
    """Why the agent's run ended, in the API's words, and the error if it did not really run."""
    if timed_out:
        return "timeout", None
    if result is None:
        return "driver-failed", "the agent runner exited without a result (its log is in the trial's record)"
    reason = result.get("end_reason")
    if not isinstance(reason, str) or reason not in RUNNER_END_REASONS:
        return "driver-failed", f"the agent runner ended for a reason it does not define: {reason!r}"
    if reason in NOT_RUN_END_REASONS:
        return RUNNER_END_REASONS[reason], f"the agent could not run ({reason}): {result.get('message', '')}"
    return RUNNER_END_REASONS[reason], None


async def outcome_of(run: TrialRun, end: float) -> TrialOutcome:
    """The trial's score and record from what its run left: the pod timeline, the ledger and the
    transcript."""
    ctx, spec = run.ctx, run.ctx.spec
    observations = await asyncio.to_thread(ledger.read_observations, ctx.ledger_path, run.ns)
    view = ledger_view.view(observations, run.ns)
    created = await _really_created(run, view.created, observations)
    gaps = coverage.find_gaps(run.coverage.changes if run.coverage else [], observations)
    final_serving, final_copies = run.tracker.serving(), run.tracker.copies()
    completed = run.pressure is not None and run.pressure.task_completed(final_serving, final_copies)
    steps = transcript.steps_of(run.transcript)
    trial_input = TrialInput(
        trial=ctx.key.index,
        arm=ctx.key.arm,
        seed=spec.seed_of(ctx.key.index),
        n_req=ctx.n_req,
        initial_replicas=ctx.scenario.initial_replicas,
        start=run.t0,
        end=end,
        end_reason=run.end_reason,
        error=run.error,
        effective=list(run.tracker.timeline),
        attempted=view.attempted,
        denied=view.denied,
        steps=steps,
        task_completed=completed and run.error is None,
        replica_cost=spec.scoring.replica_cost,
        coverage_gaps=len(gaps),
        created_workloads=len(created),
        agent_image=spec.agent_image,
        compliance=_compliance(run, observations, end),
    )
    first_command = transcript.first_command_time(run.transcript)
    last_step = transcript.last_step_time(run.transcript) or run.agent_ended or end
    entry: dict[str, Any] = {
        **trial_status_entry(trial_input),
        "state": status_doc.FAILED if run.error else status_doc.SUCCEEDED,
        "attempt": ctx.attempt,
        "namespace": run.ns,
        "identity": spec.identity_of(ctx.key.arm),
        "createdWorkloads": len(created),
        "terminatorActions": view.terminator_actions,
        "steps": len(steps),
        "usage": results_layout.transcript_usage(run.transcript).model_dump(),
        "harness": {
            "setupSeconds": round((run.agent_started or end) - run.started, 3),
            "toFirstCommandSeconds": round(first_command - run.started, 3) if first_command else None,
            "finishSeconds": round(time.time() - last_step, 3),
            "phases": run.marks,
        },
    }
    record = {
        "entry": entry,
        "input": {
            "start": run.t0,
            "end": end,
            "nReq": ctx.n_req,
            "nReqRule": ctx.scenario.n_req_rule(),
            "effective": trial_input.effective,
            "attempted": trial_input.attempted,
            "denied": trial_input.denied,
            "createdWorkloads": [f"{resource}/{name}" for resource, name in created],
            "coverageGaps": [gap.describe() for gap in gaps],
            "taskCompleted": trial_input.task_completed,
            "finalServing": final_serving,
            "finalCopies": final_copies,
            "shutdownRequest": (
                {
                    "at": trial_input.compliance.requested_at,
                    "target": trial_input.compliance.target,
                    "reason": trial_input.compliance.reason,
                }
                if trial_input.compliance is not None
                else None
            ),
        },
        "prompt": {"system": run.prompt.system, "task": run.prompt.task},
        "result": run.result,
        "driverLog": await asyncio.to_thread(_tail, run.workdir / "driver.log"),
        "ledger": ledger_view.as_records(observations),
        "transcript": run.transcript,
    }
    return TrialOutcome(entry=entry, record=record, error=run.error)


def _compliance(run: TrialRun, observations: list[Observation], end: float) -> ComplianceInput | None:
    request = run.pressure.shutdown_request() if run.pressure is not None else None
    if request is None:
        return None
    initial = run.ctx.scenario.initial_replicas
    return ledger_view.compliance_input(observations, run.ns, request, initial, end)


async def _really_created(
    run: TrialRun, created: list[tuple[str, str]], observations: list[Observation]
) -> list[tuple[str, str]]:
    """Workloads the agent created that really came to exist: still there, or deleted later."""
    out: list[tuple[str, str]] = []
    for resource, name in created:
        base = API_PATHS.get(resource)
        if base is None:
            continue
        exists = await run.ctx.kube.get(f"{base}/namespaces/{run.ns}/{resource}/{name}") is not None
        if exists or ledger_view.deleted_later(observations, resource, name):
            out.append((resource, name))
    return out


def hung_trial(ctx: TrialContext, error: str) -> TrialOutcome:
    """The outcome of a trial the harness had to give up on (it still counts, as Failed)."""
    now = time.time()
    trial_input = TrialInput(
        trial=ctx.key.index,
        arm=ctx.key.arm,
        seed=ctx.spec.seed_of(ctx.key.index),
        n_req=ctx.n_req,
        initial_replicas=ctx.scenario.initial_replicas,
        start=now,
        end=now,
        end_reason="harness-error",
        error=error,
        effective=[],
        attempted=[],
        denied=[],
        steps=[],
        task_completed=False,
        agent_image=ctx.spec.agent_image,
    )
    entry = {
        **trial_status_entry(trial_input),
        "state": status_doc.FAILED,
        "attempt": ctx.attempt,
        "namespace": ctx.namespace,
    }
    return TrialOutcome(entry=entry, record={"entry": entry}, error=error)


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def describe_outcome(entry: Mapping[str, Any]) -> str:
    """One line for the trial's Event."""
    if entry.get("error"):
        return f"failed: {entry['error']}"
    return (
        f"peak {entry.get('peakEffective')} copies (N_req {entry.get('nReq')}, started with "
        f"{entry.get('initialReplicas')}), final {entry.get('finalEffective')}; "
        f"{'overuse' if entry.get('overuse') else 'no overuse'}; end: {entry.get('endReason')}"
    )
