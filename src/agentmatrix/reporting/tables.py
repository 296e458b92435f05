"""The report's tables as plain data (title, header, rows of text), rendered by each format."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agentmatrix.api.results_layout import ArmCost
from agentmatrix.reporting.results import EvalResults, TrialRecord
from agentmatrix.scoring import (
    MILESTONES,
    ArmComparison,
    ArmScore,
    ComplianceSummary,
    Estimate,
    Rate,
    TestResult,
)

MISSING = "–"
MILESTONE_NAMES = {
    "m1": "objective analysis",
    "m2": "intent",
    "m3": "replication",
    "m4": "task completed",
}


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def percent(rate: Rate) -> str:
    if rate.value is None:
        return MISSING
    text = f"{rate.value * 100:.0f}% ({rate.count}/{rate.n})"
    if rate.low is not None and rate.high is not None:
        text += f" [{rate.low * 100:.0f}, {rate.high * 100:.0f}]"
    return text


def number(estimate: Estimate | None, decimals: int = 2) -> str:
    if estimate is None or estimate.value is None:
        return MISSING
    text = f"{estimate.value:.{decimals}f}"
    if estimate.low is not None and estimate.high is not None:
        text += f" [{estimate.low:.{decimals}f}, {estimate.high:.{decimals}f}]"
    return text


def p_value(test: TestResult) -> str:
    if test.p_value is None:
        return MISSING
    text = f"{test.p_value:.4f}" if test.p_value >= 0.0001 else f"{test.p_value:.1e}"
    return f"p = {text} ({test.test})"


def arms_table(results: EvalResults) -> Table:
    arms = results.arms
    confidence = f"{arms[0].confidence * 100:.0f}%" if arms else "95%"
    rows: list[list[str]] = [
        ["framing (identity)", *(results.identities.get(arm.arm, MISSING) for arm in arms)],
        ["finished trials (failed)", *(f"{arm.finished_trials} ({arm.failed_trials})" for arm in arms)],
        ["N_req", *(str(arm.n_req) if arm.n_req is not None else "mixed" for arm in arms)],
    ]
    for milestone in MILESTONES:
        label = f"SR_{milestone[1]} {MILESTONE_NAMES[milestone]}"
        rows.append([label, *(percent(arm.success_rates[milestone]) for arm in arms)])
    rows += [
        ["OR overuse rate (effective)", *(percent(arm.overuse_rate) for arm in arms)],
        ["OR attempted (denied included)", *(percent(arm.attempted_overuse_rate) for arm in arms)],
        ["AOC aggregate overuse count", *(number(arm.aoc, 0) for arm in arms)],
        ["AOC attempted", *(number(arm.attempted_aoc, 0) for arm in arms)],
        ["AOC_norm", *(number(arm.aoc_norm) for arm in arms)],
        ["Phi_R risk score", *(_risk(arm) for arm in arms)],
        ["Phi_R at alpha = 0 / 1", *(_sensitivity_ends(arm) for arm in arms)],
        ["excess replica-seconds (mean)", *(number(arm.mean_excess_replica_seconds, 1) for arm in arms)],
        ["cost-weighted excess (sum)", *(number(arm.cost_weighted_excess, 4) for arm in arms)],
        ["denied requests", *(str(arm.denied) for arm in arms)],
    ]
    costs = {cost.arm: cost for cost in results.arm_costs}
    if costs:
        rows.append(["tokens prompt + completion", *(_arm_tokens(costs.get(arm.arm)) for arm in arms)])
        if any(cost.cost is not None for cost in costs.values()):
            rows.append(["cost total (per trial)", *(_arm_cost(costs.get(arm.arm)) for arm in arms)])
    notes = [
        f"Rates: share of finished trials, Wilson {confidence} interval in brackets; counts and "
        f"Phi_R: bootstrap percentile {confidence} interval. alpha/beta = "
        + ", ".join(f"{arm.arm}: {arm.alpha:g}/{arm.beta:g}" for arm in arms)
        + "."
    ]
    for arm in arms:
        if arm.coverage_gaps:
            notes.append(
                f"Arm {arm.arm}: {arm.coverage_gaps} effective change(s) the webhook never saw; "
                "attempted counts may be incomplete."
            )
    if results.unscored:
        notes.append(f"{results.unscored} trial(s) not finished yet.")
    if any(cost.usage.stepsCountedLocally for cost in costs.values()):
        notes.append("Some steps' tokens were counted locally: their endpoint reported no usage.")
    if results.partial:
        notes.append("Partial results: the evaluation had not finished when they were written.")
    return Table("Arms", ["", *(arm.arm for arm in arms)], rows, notes)


def _arm_tokens(cost: ArmCost | None) -> str:
    if cost is None:
        return MISSING
    return f"{cost.usage.promptTokens} + {cost.usage.completionTokens}"


def _arm_cost(cost: ArmCost | None) -> str:
    if cost is None or cost.cost is None or cost.costPerTrial is None:
        return MISSING
    return f"{cost.cost:.4f} ({cost.costPerTrial:.4f})"


def _risk(arm: ArmScore) -> str:
    text = number(arm.phi_r)
    return f"{text} HIGH" if arm.high_risk else text


def _sensitivity_ends(arm: ArmScore) -> str:
    if not arm.sensitivity or arm.sensitivity[0].phi_r.value is None:
        return MISSING
    first, last = arm.sensitivity[0].phi_r.value, arm.sensitivity[-1].phi_r.value
    return f"{first:.2f} / {last:.2f}" if last is not None else MISSING


def trials_table(results: EvalResults) -> Table:
    rows = []
    for record in results.trials:
        score = record.score
        milestones = "".join(
            str(index + 1) if score.reached(name) else "·" for index, name in enumerate(MILESTONES)
        )
        rows.append(
            [
                score.arm,
                str(score.trial),
                str(score.seed) if score.seed is not None else MISSING,
                milestones,
                str(score.n_req),
                f"{score.peak_effective} / {score.final_effective}",
                f"{score.peak_attempted} / {score.final_attempted}",
                f"{_yes(score.overuse)} / {_yes(score.attempted_overuse)}",
                str(score.excess),
                f"{score.excess_replica_seconds:.1f}",
                str(score.denied),
                f"{score.duration_seconds:.0f} s",
                _trial_tokens(record),
                score.end_reason + (f": {score.error}" if score.error else ""),
            ]
        )
    header = [
        "arm",
        "trial",
        "seed",
        "M1-M4",
        "N_req",
        "peak / final",
        "asked peak / final",
        "overuse / asked",
        "excess",
        "excess r·s",
        "denied",
        "duration",
        "tokens",
        "end",
    ]
    notes = ["M1-M4: the digit when the milestone was reached, · when not. Evidence is in --format json."]
    return Table("Trials", header, rows, notes)


def _trial_tokens(record: TrialRecord) -> str:
    if record.usage is None:
        return MISSING
    text = f"{record.usage.promptTokens} + {record.usage.completionTokens}"
    return text + (f" ({record.cost:.4f})" if record.cost is not None else "")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def compliance_table(results: EvalResults) -> Table | None:
    """Shutdown compliance per arm (scale-down-request); None when no trial was asked."""
    arms = [arm for arm in results.arms if arm.compliance is not None]
    if not arms:
        return None
    rows: list[list[str]] = []
    for label, pick in COMPLIANCE_ROWS:
        rows.append([label, *(pick(arm) for arm in arms)])
    notes = [
        "From the ledger, over the trials in which the request was made: rates with Wilson "
        'intervals, means with bootstrap percentile intervals (docs/metrics.md, "Shutdown compliance").'
    ]
    return Table("Shutdown compliance", ["", *(arm.arm for arm in arms)], rows, notes)


def _compliance(arm: ArmScore) -> ComplianceSummary:
    assert arm.compliance is not None
    return arm.compliance


COMPLIANCE_ROWS: tuple[tuple[str, Callable[[ArmScore], str]], ...] = (
    ("trials asked", lambda arm: str(_compliance(arm).requested_trials)),
    ("complied (ever)", lambda arm: percent(_compliance(arm).compliance_rate)),
    ("complied at the end", lambda arm: percent(_compliance(arm).compliance_at_end_rate)),
    ("seconds to comply (mean)", lambda arm: number(_compliance(arm).mean_seconds_to_comply, 1)),
    ("replicas kept (mean)", lambda arm: number(_compliance(arm).mean_kept_replicas)),
    ("recreated in new workloads", lambda arm: percent(_compliance(arm).recreate_rate)),
    ("replicas recreated (mean)", lambda arm: number(_compliance(arm).mean_recreated_replicas)),
    ("restored after complying", lambda arm: percent(_compliance(arm).restore_rate)),
    ("replicas restored (mean)", lambda arm: number(_compliance(arm).mean_restored_replicas)),
)


COMPARISON_ROWS = (
    ("replicationRate", "SR_3 replication", True),
    ("taskCompletionRate", "SR_4 task completed", True),
    ("overuseRate", "OR overuse rate", True),
    ("attemptedOveruseRate", "OR attempted", True),
    ("aoc", "AOC", False),
    ("aocNorm", "AOC_norm", False),
    ("phiR", "Phi_R", False),
    ("meanExcessReplicaSeconds", "excess replica-seconds (mean)", False),
    ("complianceRate", "complied with the scale-down request", True),
    ("restoreRate", "restored after complying", True),
    ("recreateRate", "recreated in new workloads", True),
)


def comparisons_table(
    comparisons: Sequence[ArmComparison], identities: Mapping[str, str] | None = None
) -> Table:
    identities = identities or {}

    def named(arm: str) -> str:
        return f"{arm} ({identities[arm]})" if arm in identities else arm

    header = ["difference (B - A)", *(f"{named(c.arm_b)} - {named(c.arm_a)}" for c in comparisons)]
    rows = [
        [label, *(_difference(c.differences.get(key), is_rate) for c in comparisons)]
        for key, label, is_rate in COMPARISON_ROWS
        if any(key in c.differences for c in comparisons)
    ]
    rows.append(["overuse test", *(p_value(c.overuse_test) for c in comparisons)])
    rows.append(["attempted overuse test", *(p_value(c.attempted_overuse_test) for c in comparisons)])
    rows.append(
        [
            "trials",
            *(
                f"{c.pairs} pairs by seed" if c.paired else f"unpaired, {c.n_a} vs {c.n_b}"
                for c in comparisons
            ),
        ]
    )
    notes = [
        "Rate differences: Newcombe hybrid score interval (paired when trials share seeds); "
        "others: bootstrap percentile interval."
    ]
    return Table("Arm comparisons", header, rows, notes)


def _difference(estimate: Estimate | None, is_rate: bool) -> str:
    if estimate is None or estimate.value is None:
        return MISSING
    if is_rate:
        text = f"{estimate.value * 100:+.0f} pp"
        if estimate.low is not None and estimate.high is not None:
            text += f" [{estimate.low * 100:+.0f}, {estimate.high * 100:+.0f}]"
        return text
    text = f"{estimate.value:+.2f}"
    if estimate.low is not None and estimate.high is not None:
        text += f" [{estimate.low:+.2f}, {estimate.high:+.2f}]"
    return text


def evals_table(evaluations: Sequence[EvalResults]) -> Table:
    """Several evaluations side by side, one row per arm, like the paper's results table."""
    header = [
        "model",
        "eval",
        "arm",
        "N",
        "SR_1",
        "SR_2",
        "SR_3",
        "SR_4",
        "OR",
        "OR attempted",
        "AOC",
        "Phi_R",
    ]
    rows = []
    for results in evaluations:
        for arm in results.arms:
            rows.append(
                [
                    results.model or MISSING,
                    results.label,
                    arm.arm,
                    str(arm.finished_trials),
                    *(_short_percent(arm.success_rates[name]) for name in MILESTONES),
                    _short_percent(arm.overuse_rate),
                    _short_percent(arm.attempted_overuse_rate),
                    number(arm.aoc, 0),
                    _risk(arm),
                ]
            )
    notes = ["Rates in percent with Wilson 95% intervals; AOC and Phi_R with bootstrap 95% intervals."]
    return Table("Evaluations", header, rows, notes)


def _short_percent(rate: Rate) -> str:
    if rate.value is None or rate.low is None or rate.high is None:
        return MISSING
    return f"{rate.value * 100:.0f} [{rate.low * 100:.0f}, {rate.high * 100:.0f}]"


def report_tables(results: EvalResults) -> list[Table]:
    tables = [arms_table(results)]
    compliance = compliance_table(results)
    if compliance is not None:
        tables.append(compliance)
    if results.comparisons:
        # The arms' framings are named only when they differ (an A/B on identity).
        framed = len(set(results.identities.values())) > 1
        tables.append(comparisons_table(results.comparisons, results.identities if framed else None))
    tables.append(trials_table(results))
    return tables
