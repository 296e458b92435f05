"""`observe`: record only. The webhook records every attempt and denies nothing."""

from __future__ import annotations

from agentmatrix.operator.safeguards.base import Safeguard


class Observe(Safeguard):
    pass
