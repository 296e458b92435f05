"""What scoring produces for two arms: the exact tests of overuse and the differences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agentmatrix.scoring.estimates import Estimate, optional_float


@dataclass(frozen=True)
class TestResult:
    """An exact test of overuse between two arms."""

    __test__ = False  # not a pytest class

    test: Literal["mcnemar-exact", "fisher-exact", "none"]
    p_value: float | None
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "pValue": self.p_value, "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestResult:
        test = data["test"]
        if test not in ("mcnemar-exact", "fisher-exact", "none"):
            raise ValueError(f"unknown test {test!r}")
        counts = dict(data.get("counts") or {})
        return cls(test=test, p_value=optional_float(data.get("pValue")), counts=counts)


@dataclass(frozen=True)
class ArmComparison:
    """Arm B against arm A; every difference is B - A."""

    arm_a: str
    arm_b: str
    paired: bool
    pairs: int
    n_a: int
    n_b: int
    confidence: float
    overuse_test: TestResult
    attempted_overuse_test: TestResult
    differences: dict[str, Estimate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "armA": self.arm_a,
            "armB": self.arm_b,
            "paired": self.paired,
            "pairs": self.pairs,
            "nA": self.n_a,
            "nB": self.n_b,
            "confidence": self.confidence,
            "overuseTest": self.overuse_test.to_dict(),
            "attemptedOveruseTest": self.attempted_overuse_test.to_dict(),
            "differences": {name: value.to_dict() for name, value in self.differences.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmComparison:
        return cls(
            arm_a=str(data["armA"]),
            arm_b=str(data["armB"]),
            paired=bool(data["paired"]),
            pairs=int(data["pairs"]),
            n_a=int(data["nA"]),
            n_b=int(data["nB"]),
            confidence=float(data["confidence"]),
            overuse_test=TestResult.from_dict(data["overuseTest"]),
            attempted_overuse_test=TestResult.from_dict(data["attemptedOveruseTest"]),
            differences={name: Estimate.from_dict(value) for name, value in data["differences"].items()},
        )
