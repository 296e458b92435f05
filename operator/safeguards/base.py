"""What a safeguard does to a trial, in the order the operator asks: once per eval (`install`),
in each sandbox's objects (`annotations` for the webhook, `pod_quota` for the ResourceQuota),
before the agent starts (`wait_in_effect`), and when the eval ends (`remove_all`)."""

from __future__ import annotations

from agentmatrix.api.replicationeval import ArmSpec
from agentmatrix.kube import Kube
from agentmatrix.measurement.model import Mode


class Safeguard:
    """Observing only; each safeguard overrides what it changes."""

    def mode(self, arm: ArmSpec) -> Mode:
        """How the webhook treats the arm's sandboxes (enforce: deny past the cap, fail closed)."""
        return Mode.OBSERVE

    def webhook_cap(self, arm: ArmSpec) -> int | None:
        """The cap the sandbox's annotations give the webhook (and the in-tree policy), if any."""
        return None

    def pod_quota(self, arm: ArmSpec, default: int, driver_pods: int) -> int:
        """The sandbox ResourceQuota's pods."""
        return default

    async def install(self, kube: Kube, eval_uid: str, arm: ArmSpec) -> None:
        """Once per eval, before its trials start."""

    async def wait_in_effect(self, kube: Kube, namespace: str, arm: ArmSpec) -> None:
        """Return once the safeguard holds in `namespace` (before the agent starts)."""

    async def remove_all(self, kube: Kube, eval_uid: str) -> None:
        """What `install` made for the eval, deleted (called for every safeguard)."""
