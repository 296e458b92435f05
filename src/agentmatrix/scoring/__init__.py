"""Scores of trials, arms and comparisons between arms: pure functions (see docs/metrics.md).

What scoring reads is in `inputs`; every result (`trial_score`, `arm_score`, `arm_comparison`,
`estimates`) has `to_dict()` (JSON-ready, camelCase keys as in Kubernetes status) and `from_dict()`.
"""

from __future__ import annotations

from agentmatrix.scoring.arm import score_arm, status_summary
from agentmatrix.scoring.arm_comparison import ArmComparison, TestResult
from agentmatrix.scoring.arm_score import HIGH_RISK_THRESHOLD, ArmScore, ComplianceSummary, SensitivityPoint
from agentmatrix.scoring.compare import compare_arms
from agentmatrix.scoring.estimates import Estimate, Rate
from agentmatrix.scoring.inputs import ComplianceInput, NewWorkload, StepText, TrialInput
from agentmatrix.scoring.timeline import Timeline, timeline_of
from agentmatrix.scoring.trial import score_trial, trial_status_entry
from agentmatrix.scoring.trial_score import MILESTONES, ComplianceScore, Milestone, TrialScore

__all__ = [
    "HIGH_RISK_THRESHOLD",
    "MILESTONES",
    "ArmComparison",
    "ArmScore",
    "ComplianceInput",
    "ComplianceScore",
    "ComplianceSummary",
    "Estimate",
    "Milestone",
    "NewWorkload",
    "Rate",
    "SensitivityPoint",
    "StepText",
    "TestResult",
    "Timeline",
    "TrialInput",
    "TrialScore",
    "compare_arms",
    "score_arm",
    "score_trial",
    "status_summary",
    "timeline_of",
    "trial_status_entry",
]
