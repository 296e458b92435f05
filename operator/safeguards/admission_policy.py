"""`admissionPolicyCap`: the in-tree ValidatingAdmissionPolicy caps the arm's replicas.

The webhook module generates the policy (CEL that counts replicas the way the webhook does). That
policy enforces in namespaces annotated `mode: enforce`, which would also make the webhook
enforce; for an A/B arm the policy must be the only enforcer. So each such arm gets its own copy
of the policy, bound only to that arm's sandboxes (by label), with the `enforcing` variable fixed
to true; the arm's namespaces stay in observe mode, and the webhook keeps recording.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from agentmatrix.api import names
from agentmatrix.api.replicationeval import ArmSpec
from agentmatrix.kube import ApiError, Kube
from agentmatrix.measurement import admission_config
from agentmatrix.operator.plan import dns_label
from agentmatrix.operator.safeguards.base import Safeguard

API = "/apis/admissionregistration.k8s.io/v1"


def policy_name(eval_uid: str, arm: str) -> str:
    return f"agentmatrix-{dns_label(eval_uid)[:8]}-{dns_label(arm)}"


def arm_policy(eval_uid: str, arm: str) -> list[dict[str, Any]]:
    name = policy_name(eval_uid, arm)
    policy, binding = copy.deepcopy(admission_config.admission_policy(name=name))
    labels = {names.LABEL_SANDBOX: "true", names.LABEL_EVAL_UID: eval_uid, names.LABEL_ARM: arm}
    selector = {"matchLabels": labels}
    for variable in policy["spec"]["variables"]:
        if variable["name"] == "enforcing":
            variable["expression"] = "true"
    policy["spec"]["matchConstraints"]["namespaceSelector"] = selector
    binding["spec"]["matchResources"] = {"namespaceSelector": selector}
    for document in (policy, binding):
        document["metadata"]["labels"] = {names.LABEL_EVAL_UID: eval_uid, names.LABEL_ARM: arm}
    return [policy, binding]


async def install(kube: Kube, eval_uid: str, arm: str) -> None:
    policy, binding = arm_policy(eval_uid, arm)
    await kube.create_or_keep(f"{API}/validatingadmissionpolicies", policy)
    await kube.create_or_keep(f"{API}/validatingadmissionpolicybindings", binding)


async def remove_all(kube: Kube, eval_uid: str) -> int:
    removed = 0
    for plural in ("validatingadmissionpolicybindings", "validatingadmissionpolicies"):
        for item in await kube.list(f"{API}/{plural}", label_selector=f"{names.LABEL_EVAL_UID}={eval_uid}"):
            removed += await kube.delete(f"{API}/{plural}/{item['metadata']['name']}")
    return removed


async def wait_in_effect(kube: Kube, namespace: str, cap: int, within: float = 30.0) -> None:
    """Return once the API server applies the arm's policy in `namespace`.

    A new policy and binding take effect a moment after they are created (the API server loads
    them from its own watch); an agent that starts sooner would not be capped. The probe is a
    server-side dry run of scaling the agent past the cap: nothing changes, nothing is counted.
    """
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{names.AGENT_DEPLOYMENT}/scale"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = 0.05
    while True:
        try:
            await kube.request(
                "PATCH", path, body={"spec": {"replicas": cap + 1}}, params={"dryRun": "All"},
                content_type="application/merge-patch+json",
            )  # fmt: skip
        except ApiError as error:
            if "ValidatingAdmissionPolicy" in error.message:
                return
            raise
        if loop.time() >= deadline:
            raise RuntimeError(
                f"the arm's ValidatingAdmissionPolicy was not in effect in {namespace} after {within:.0f} s"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


class AdmissionPolicyCap(Safeguard):
    def webhook_cap(self, arm: ArmSpec) -> int | None:
        return arm.replica_cap

    async def install(self, kube: Kube, eval_uid: str, arm: ArmSpec) -> None:
        await install(kube, eval_uid, arm.name)

    async def wait_in_effect(self, kube: Kube, namespace: str, arm: ArmSpec) -> None:
        if arm.replica_cap is not None:
            await wait_in_effect(kube, namespace, arm.replica_cap)

    async def remove_all(self, kube: Kube, eval_uid: str) -> None:
        await remove_all(kube, eval_uid)
