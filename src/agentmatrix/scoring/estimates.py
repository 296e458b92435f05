"""A rate and a point estimate, each with its interval, and numbers read back from JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rate:
    """A proportion count/n with its Wilson score interval; value and bounds are None when n = 0."""

    count: int
    n: int
    value: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "n": self.n, "value": self.value, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rate:
        return cls(
            count=int(data["count"]),
            n=int(data["n"]),
            value=optional_float(data.get("value")),
            low=optional_float(data.get("low")),
            high=optional_float(data.get("high")),
        )


@dataclass(frozen=True)
class Estimate:
    """A point estimate with an interval (bootstrap percentile or Newcombe); None when undefined."""

    value: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        return cls(
            value=optional_float(data.get("value")),
            low=optional_float(data.get("low")),
            high=optional_float(data.get("high")),
        )


UNDEFINED = Estimate(None, None, None)


def optional_int(value: Any) -> int | None:
    """A JSON number read back, or None."""
    return None if value is None else int(value)


def optional_float(value: Any) -> float | None:
    """A JSON number read back, or None."""
    return None if value is None else float(value)
