"""Replica counts over a trial as step functions, and their compact form for the eval's status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentmatrix.scoring.inputs import TrialInput

DEFAULT_MAX_POINTS = 120
TIME_DECIMALS = 1


@dataclass(frozen=True)
class StepSeries:
    """R(t) on [start, end]: `initial` until the first change point, each point holds until the next.

    Change points before `start` are applied at `start`; points after `end` are ignored.
    """

    start: float
    end: float
    points: tuple[tuple[float, int], ...]

    @classmethod
    def build(
        cls, start: float, end: float, initial: int, changes: Sequence[tuple[float, int]]
    ) -> StepSeries:
        end = max(end, start)
        points: list[tuple[float, int]] = [(start, initial)]
        for time, value in sorted(changes, key=lambda point: point[0]):
            if time > end:
                break
            time = max(time, start)
            if points[-1][0] == time:
                points[-1] = (time, value)
            else:
                points.append((time, value))
        merged: list[tuple[float, int]] = []
        for point in points:
            if not merged or merged[-1][1] != point[1]:
                merged.append(point)
        return cls(start=start, end=end, points=tuple(merged))

    @property
    def peak(self) -> int:
        return max(value for _, value in self.points)

    @property
    def final(self) -> int:
        return self.points[-1][1]

    def value_at(self, time: float) -> int:
        current = self.points[0][1]
        for point_time, value in self.points:
            if point_time > time:
                break
            current = value
        return current

    def excess_integral(self, threshold: int) -> float:
        """The integral over [start, end] of max(0, R(t) - threshold) dt."""
        total = 0.0
        for index, (time, value) in enumerate(self.points):
            until = self.points[index + 1][0] if index + 1 < len(self.points) else self.end
            total += max(0, value - threshold) * (until - time)
        return total

    def first_time_above(self, threshold: int) -> float | None:
        for time, value in self.points:
            if value > threshold:
                return time
        return None


def effective_series(trial: TrialInput) -> StepSeries:
    return StepSeries.build(trial.start, trial.end, trial.initial_replicas, trial.effective)


def attempted_series(trial: TrialInput) -> StepSeries:
    return StepSeries.build(trial.start, trial.end, trial.initial_replicas, trial.attempted)


@dataclass(frozen=True)
class Timeline:
    """A trial's replica counts for plotting, in seconds since the trial started."""

    duration: float
    effective: list[tuple[float, int]]
    attempted: list[tuple[float, int]]
    denied: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "durationSeconds": self.duration,
            "effective": [[time, value] for time, value in self.effective],
            "attempted": [[time, value] for time, value in self.attempted],
            "denied": list(self.denied),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        return cls(
            duration=float(data.get("durationSeconds", 0.0)),
            effective=[(float(time), int(value)) for time, value in data.get("effective") or []],
            attempted=[(float(time), int(value)) for time, value in data.get("attempted") or []],
            denied=[float(time) for time in data.get("denied") or []],
        )


def timeline_of(trial: TrialInput, max_points: int = DEFAULT_MAX_POINTS) -> Timeline:
    """The trial's series relative to its start, each kept to at most `max_points` change points.

    Thinning keeps the first and last point and, in each time bucket, the lowest and highest
    value, so peaks survive in the plot (the scores are always computed from the full series).
    """
    effective = effective_series(trial)
    attempted = attempted_series(trial)
    return Timeline(
        duration=round(effective.end - effective.start, TIME_DECIMALS),
        effective=_relative(_thin(effective.points, max_points), trial.start),
        attempted=_relative(_thin(attempted.points, max_points), trial.start),
        denied=[
            round(time - trial.start, TIME_DECIMALS)
            for time in sorted(trial.denied)
            if trial.start <= time <= trial.end
        ][:max_points],
    )


def _relative(points: Sequence[tuple[float, int]], start: float) -> list[tuple[float, int]]:
    return [(round(time - start, TIME_DECIMALS), value) for time, value in points]


def _thin(points: Sequence[tuple[float, int]], max_points: int) -> list[tuple[float, int]]:
    if len(points) <= max_points:
        return list(points)
    if max_points < 4:
        raise ValueError("max_points must be at least 4")
    first, last = points[0], points[-1]
    middle = points[1:-1]
    buckets = (max_points - 2) // 2
    span = (last[0] - first[0]) or 1.0
    kept: dict[int, tuple[float, int]] = {}
    grouped: dict[int, list[int]] = {}
    for index, (time, _) in enumerate(middle):
        bucket = min(buckets - 1, int((time - first[0]) / span * buckets))
        grouped.setdefault(bucket, []).append(index)
    for indexes in grouped.values():
        low = min(indexes, key=lambda index: middle[index][1])
        high = max(indexes, key=lambda index: middle[index][1])
        kept[low] = middle[low]
        kept[high] = middle[high]
    return [first, *(kept[index] for index in sorted(kept)), last]
