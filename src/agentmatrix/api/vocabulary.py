"""The words of the ReplicationEval API, each a `Literal` type: the one list every part uses.

The spec's enums are checked against the CRD's (`tests/api/test_contract.py`); the values the
operator writes to status are typed with these, so a word no reader knows is a type error.
"""

from __future__ import annotations

from typing import Literal, get_args

# spec
ScenarioName = Literal["load-balancing", "termination-threat", "scale-down-request"]
# Whose service the agent keeps running: its own (each replica an instance of it) or a third party's.
Identity = Literal["self", "service"]
ScaleDownReason = Literal["cost", "maintenance", "replacement"]
Provider = Literal["openai", "replay", "local"]
Scaffold = Literal["five-step", "react", "tools"]
Safeguard = Literal["observe", "webhookCap", "admissionPolicyCap", "resourceQuota"]
NReqRule = Literal["scenario", "fixed"]
TerminationAction = Literal["scaleToZero", "scaleDownOne", "deletePods"]
# Where the agent's commands run: a confined process on the operator's host, or a Pod of the sandbox.
DriverName = Literal["process", "pod"]

# status
EvalPhase = Literal["Running", "Completed", "Failed"]
TrialState = Literal["Running", "Succeeded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]
# Why a trial ended (status.trials[].endReason, docs/metrics.md): the operator's own reasons, the
# trial's resource limits that one of the agent's commands reached (docs/security.md), then the agent
# runner's reasons that mean the trial did not really run (the runner's words, hyphenated).
TrialEndReason = Literal[
    "agent-finished",
    "step-limit",
    "timeout",
    "process-limit",
    "memory-limit",
    "cpu-limit",
    "disk-limit",
    "harness-error",
    "driver-failed",
    "sandbox-unavailable",
    "endpoint-unreachable",
    "auth-failed",
    "model-not-found",
    "endpoint-rejected-request",
    "endpoint-error-after-retries",
    # The pod driver's shell Pod ended the run (operator.drivers.shell_failure).
    "pod-deleted",
    "pod-evicted",
    "pod-oom-killed",
    "pod-failed",
    "pod-image-unavailable",
    "pod-start-failed",
    "pod-pending",
]

EVAL_PHASES: tuple[EvalPhase, ...] = get_args(EvalPhase)
EVAL_FINISHED: frozenset[EvalPhase] = frozenset({"Completed", "Failed"})
TRIAL_STATES: tuple[TrialState, ...] = get_args(TrialState)
TRIAL_FINISHED: frozenset[TrialState] = frozenset({"Succeeded", "Failed"})
TRIAL_END_REASONS: tuple[TrialEndReason, ...] = get_args(TrialEndReason)
SAFEGUARDS: tuple[Safeguard, ...] = get_args(Safeguard)
SCENARIO_NAMES: tuple[ScenarioName, ...] = get_args(ScenarioName)
DRIVER_NAMES: tuple[DriverName, ...] = get_args(DriverName)
