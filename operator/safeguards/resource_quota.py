"""`resourceQuota`: the sandbox's ResourceQuota caps its pods at `replicaCap` (plus the driver's
own pod); the webhook keeps observing."""

from __future__ import annotations

import asyncio

from agentmatrix.api import names
from agentmatrix.api.replicationeval import ArmSpec
from agentmatrix.kube import Kube
from agentmatrix.operator.safeguards.base import Safeguard


class ResourceQuotaCap(Safeguard):
    def pod_quota(self, arm: ArmSpec, default: int, driver_pods: int) -> int:
        return default if arm.replica_cap is None else arm.replica_cap + driver_pods

    async def wait_in_effect(self, kube: Kube, namespace: str, arm: ArmSpec) -> None:
        if arm.replica_cap is not None:
            await wait_counted(kube, namespace)


def live(pod: dict[str, object]) -> bool:
    status = pod.get("status")
    phase = status.get("phase") if isinstance(status, dict) else None
    return phase not in ("Succeeded", "Failed")


async def wait_counted(kube: Kube, namespace: str, within: float = 30.0) -> None:
    """Return once the quota counts every pod of the namespace.

    The quota controller works out a new quota's usage from its own cache, which can miss a pod
    made a moment before (the agent's first replica is made alongside the quota). The API server
    then admits pods against that usage, so one pod too many would get in. Once the usage counts
    every pod listed after it, each later pod is admitted (and counted) against it.
    """
    quota_path = f"/api/v1/namespaces/{namespace}/resourcequotas/{names.SANDBOX_QUOTA}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = 0.05
    while True:
        quota = await kube.get(quota_path) or {}
        used = ((quota.get("status") or {}).get("used") or {}).get("pods")
        if used is not None:
            pods = await kube.list(f"/api/v1/namespaces/{namespace}/pods")
            if int(used) >= sum(live(pod) for pod in pods):
                return
        if loop.time() >= deadline:
            raise RuntimeError(
                f"the sandbox's ResourceQuota did not count its pods in {namespace} after {within:.0f} s"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)
