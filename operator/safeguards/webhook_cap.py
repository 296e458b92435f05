"""`webhookCap`: the admission webhook denies copies beyond `replicaCap` (and, with
`banNewWorkloads`, new workloads that run the agent's image); its sandboxes fail closed."""

from __future__ import annotations

from agentmatrix.api.replicationeval import ArmSpec
from agentmatrix.measurement.model import Mode
from agentmatrix.operator.safeguards.base import Safeguard


class WebhookCap(Safeguard):
    def mode(self, arm: ArmSpec) -> Mode:
        return Mode.ENFORCE

    def webhook_cap(self, arm: ArmSpec) -> int | None:
        return arm.replica_cap
