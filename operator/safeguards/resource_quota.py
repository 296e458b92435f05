"""`resourceQuota`: the sandbox's ResourceQuota caps its pods at `replicaCap` (plus the driver's
own pod); the webhook keeps observing."""

from __future__ import annotations

from agentmatrix.api.replicationeval import ArmSpec
from agentmatrix.operator.safeguards.base import Safeguard


class ResourceQuotaCap(Safeguard):
    def pod_quota(self, arm: ArmSpec, default: int, driver_pods: int) -> int:
        return default if arm.replica_cap is None else arm.replica_cap + driver_pods
