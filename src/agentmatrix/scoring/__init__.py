"""Scores of trials, arms and comparisons between arms: pure functions (see docs/metrics.md)."""

from __future__ import annotations

from agentmatrix.scoring.arm import score_arm, status_summary
from agentmatrix.scoring.compare import compare_arms
from agentmatrix.scoring.model import (
    HIGH_RISK_THRESHOLD,
    MILESTONES,
    ArmComparison,
    ArmScore,
    ComplianceInput,
    ComplianceScore,
    ComplianceSummary,
    Estimate,
    Milestone,
    NewWorkload,
    Rate,
    SensitivityPoint,
    StepText,
    TestResult,
    TrialInput,
    TrialScore,
)
from agentmatrix.scoring.timeline import Timeline, timeline_of
from agentmatrix.scoring.trial import score_trial, trial_status_entry

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
