"""The report's figures as inline SVG, drawn with matplotlib.

Every drawn series carries an SVG id starting with `am-` (for example
`am-trial-observe-3-effective`), so a reader's tools, and the tests, can find each series.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, ParamSpec

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from agentmatrix.reporting.results import TrialRecord
from agentmatrix.scoring import HIGH_RISK_THRESHOLD, ArmScore, Estimate, Rate

EFFECTIVE_COLOR = "#1f5fa8"
ATTEMPTED_COLOR = "#e08a00"
NEED_COLOR = "#b22222"
RC: Any = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable
    "svg.hashsalt": "agentmatrix",  # stable ids from run to run
    "font.size": 8.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_ID = re.compile(r'\bid="([^"]+)"')
_P = ParamSpec("_P")


def _styled(draw: Callable[_P, str]) -> Callable[_P, str]:
    """Draw with the report's matplotlib settings, leaving the global settings alone."""

    @wraps(draw)
    def styled(*args: _P.args, **kwargs: _P.kwargs) -> str:
        with rc_context(RC):
            return draw(*args, **kwargs)

    return styled


def element_id(*parts: object) -> str:
    return "am-" + "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", str(part)) for part in parts)


@_styled
def trial_timeline_svg(record: TrialRecord) -> str:
    """Effective and attempted agent replicas over the trial against N_req; denied attempts as x."""
    score, timeline = record.score, record.timeline
    if timeline is None:
        raise ValueError("the trial has no timeline")
    end = max(timeline.duration, score.duration_seconds)
    base = ("trial", score.arm, score.trial)
    figure = _figure(5.0, 2.3, constrained=False)
    figure.subplots_adjust(
        left=0.1, right=0.98, bottom=0.2, top=0.88
    )  # fixed geometry: faster than a layout engine
    axes = figure.add_subplot()
    # the attempted line is wider, so it shows around the effective one where they coincide
    for points, color, style, width, label, key in (
        (timeline.attempted, ATTEMPTED_COLOR, "--", 2.8, "asked (denied included)", "attempted"),
        (timeline.effective, EFFECTIVE_COLOR, "-", 1.5, "effective", "effective"),
    ):
        xs, ys = _step_points(points, end)
        (line,) = axes.step(xs, ys, where="post", color=color, linestyle=style, linewidth=width, label=label)
        line.set_gid(element_id(*base, key))
    need = axes.axhline(
        score.n_req, color=NEED_COLOR, linestyle=":", linewidth=1.4, label=f"N_req = {score.n_req}"
    )
    need.set_gid(element_id(*base, "nreq"))
    if timeline.denied:
        denied_y = [_value_at(timeline.attempted, time) for time in timeline.denied]
        marks = axes.scatter(
            timeline.denied, denied_y, marker="x", color=NEED_COLOR, s=36, zorder=5, label="denied"
        )
        marks.set_gid(element_id(*base, "denied"))
    top = max(score.peak_effective, score.peak_attempted, score.n_req, 1)
    axes.set_ylim(0, top + 1)
    axes.set_xlim(0, end if end > 0 else 1)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("seconds since the trial started")
    axes.set_ylabel("agent replicas")
    seed = f", seed {score.seed}" if score.seed is not None else ""
    axes.set_title(
        f"{score.arm} #{score.trial}{seed}: peak {score.peak_effective}, asked {score.peak_attempted}"
    )
    axes.legend(loc="upper left", fontsize=6.5, frameon=False, ncols=2)
    return _svg(figure, element_id(*base))


@_styled
def arm_summary_svg(arms: Sequence[ArmScore], labels: Sequence[str] | None = None) -> str:
    """Per arm: overuse rates and replication rate, AOC, and Phi_R, each with its interval."""
    labels = list(labels) if labels is not None else [arm.arm for arm in arms]
    figure = _figure(max(6.5, 1.2 * len(arms) + 4.5), 2.6)
    rates, aoc, risk = figure.subplots(1, 3)
    positions = list(range(len(arms)))
    rate_series: list[tuple[str, str, str, list[Rate]]] = [
        ("SR_3 replication", "replication", "#6a6a6a", [arm.success_rates["m3"] for arm in arms]),
        ("OR effective", "overuse", EFFECTIVE_COLOR, [arm.overuse_rate for arm in arms]),
        ("OR attempted", "attempted-overuse", ATTEMPTED_COLOR, [arm.attempted_overuse_rate for arm in arms]),
    ]
    for offset, (name, key, color, series) in enumerate(rate_series):
        xs = [position + (offset - 1) * 0.22 for position in positions]
        _interval_points(
            rates, xs, [_of_rate(rate) for rate in series], color, name, element_id("summary", key)
        )
    rates.set_ylim(-0.05, 1.05)
    rates.set_title("rates (Wilson 95%)")
    rates.legend(fontsize=6.5, frameon=False, loc="best")
    _interval_points(
        aoc, positions, [arm.aoc for arm in arms], EFFECTIVE_COLOR, "AOC", element_id("summary", "aoc")
    )
    aoc.set_title("AOC (bootstrap 95%)")
    aoc.set_ylim(bottom=0)
    threshold = risk.axhline(HIGH_RISK_THRESHOLD, color=NEED_COLOR, linestyle=":", linewidth=1.2)
    threshold.set_gid(element_id("summary", "risk-threshold"))
    _interval_points(
        risk, positions, [arm.phi_r for arm in arms], "#5b2a86", "Phi_R", element_id("summary", "phi")
    )
    risk.set_ylim(-0.02, 1.02)
    risk.set_title("Phi_R (bootstrap 95%)")
    for axes in (rates, aoc, risk):
        axes.set_xticks(
            positions, labels, rotation=20 if len(arms) > 3 else 0, ha="right" if len(arms) > 3 else "center"
        )
        axes.set_xlim(-0.6, len(arms) - 0.4)
    return _svg(figure, element_id("summary"))


@_styled
def sensitivity_svg(arms: Sequence[ArmScore], labels: Sequence[str] | None = None) -> str:
    """Phi_R as alpha goes from 0 to 1 (beta = 1 - alpha), with its bootstrap band."""
    labels = list(labels) if labels is not None else [arm.arm for arm in arms]
    figure = _figure(4.2, 2.6)
    axes = figure.add_subplot()
    for arm, label in zip(arms, labels, strict=True):
        points = [point for point in arm.sensitivity if point.phi_r.value is not None]
        if not points:
            continue
        alphas = [point.alpha for point in points]
        values = [point.phi_r.value or 0.0 for point in points]
        (line,) = axes.plot(alphas, values, marker="o", markersize=2.5, linewidth=1.4, label=label)
        line.set_gid(element_id("sensitivity", label))
        lows = [point.phi_r.low if point.phi_r.low is not None else math.nan for point in points]
        highs = [point.phi_r.high if point.phi_r.high is not None else math.nan for point in points]
        band = axes.fill_between(alphas, lows, highs, alpha=0.15, color=line.get_color())
        band.set_gid(element_id("sensitivity", label, "band"))
    axes.axhline(HIGH_RISK_THRESHOLD, color=NEED_COLOR, linestyle=":", linewidth=1.2)
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("alpha (beta = 1 - alpha)")
    axes.set_ylabel("Phi_R")
    axes.set_title("Phi_R sensitivity to alpha")
    axes.legend(fontsize=6.5, frameon=False)
    return _svg(figure, element_id("sensitivity"))


def _interval_points(
    axes: Axes, xs: Sequence[float], estimates: Sequence[Estimate], color: str, label: str, gid: str
) -> None:
    values = [e.value if e.value is not None else math.nan for e in estimates]
    below = [e.value - e.low if e.value is not None and e.low is not None else 0.0 for e in estimates]
    above = [e.high - e.value if e.value is not None and e.high is not None else 0.0 for e in estimates]
    container = axes.errorbar(
        xs, values, yerr=[below, above], fmt="o", color=color, capsize=3, markersize=4, label=label
    )
    data_line, _, bar_collections = container.lines
    if data_line is not None:
        data_line.set_gid(gid)
    for collection in bar_collections:
        collection.set_gid(f"{gid}-interval")


def _of_rate(rate: Rate) -> Estimate:
    return Estimate(rate.value, rate.low, rate.high)


def _step_points(points: Sequence[tuple[float, int]], end: float) -> tuple[list[float], list[int]]:
    if not points:
        return [], []
    xs = [time for time, _ in points]
    ys = [value for _, value in points]
    if xs[-1] < end:
        xs.append(end)
        ys.append(ys[-1])
    return xs, ys


def _value_at(points: Sequence[tuple[float, int]], time: float) -> int:
    current = points[0][1] if points else 0
    for point_time, value in points:
        if point_time > time:
            break
        current = value
    return current


def _figure(width: float, height: float, constrained: bool = True) -> Figure:
    return Figure(figsize=(width, height), layout="constrained" if constrained else None)


def _svg(figure: Figure, prefix: str) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    return _scope_ids(text, "mpl" + prefix.removeprefix("am"))


def _scope_ids(svg: str, prefix: str) -> str:
    """Prefix matplotlib's own ids (not our `am-` ones) so that several inline SVGs never clash."""
    own = {name for name in _ID.findall(svg) if not name.startswith("am-")}
    if not own:
        return svg

    def rename(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{prefix}-{name}" if name in own else match.group(0)

    svg = re.sub(r'(\bid=")([^"]+)(?=")', rename, svg)
    svg = re.sub(r"(url\(#)([^)]+)(?=\))", rename, svg)
    return re.sub(r'(href="#)([^"]+)(?=")', rename, svg)
