"""What each safeguard puts into a sandbox: the webhook's annotations and the pod quota.

The webhook and the API server act on these objects (tests/webhook/test_cluster_enforce.py,
test_cluster_policy.py and test_operator_e2e.py show the caps holding); here, that every arm's
sandbox says what its safeguard means, and that every safeguard the API names is registered.
"""

from __future__ import annotations

from agentmatrix.api import names
from agentmatrix.api.replicationeval import ArmSpec
from agentmatrix.api.vocabulary import SAFEGUARDS
from agentmatrix.operator import safeguards
from agentmatrix.operator.sandbox_objects import SandboxSettings, policy_annotations, resource_quota

IMAGE = "agentmatrix.dev/agent-service:v1"


def sandbox_of(arm: ArmSpec) -> tuple[dict[str, str], str]:
    annotations = policy_annotations(arm, IMAGE)
    quota = resource_quota("ns", arm, SandboxSettings(pod_quota=200, driver_pods=1))
    return annotations, quota["spec"]["hard"]["pods"]


def test_every_safeguard_the_api_names_is_registered() -> None:
    assert sorted(safeguards.SAFEGUARDS) == sorted(SAFEGUARDS)


def test_only_the_webhook_cap_makes_the_webhook_enforce() -> None:
    arm = ArmSpec(name="a", safeguard="webhookCap", replica_cap=3, ban_new_workloads=True)
    annotations, pods = sandbox_of(arm)
    assert annotations == {
        names.ANNOTATION_AGENT_IMAGE: IMAGE,
        names.ANNOTATION_MODE: "enforce",
        names.ANNOTATION_BAN_NEW_WORKLOADS: "true",
        names.ANNOTATION_REPLICA_CAP: "3",
    }
    assert pods == "200"


def test_the_policy_cap_gives_its_cap_to_an_observing_webhook() -> None:
    annotations, pods = sandbox_of(ArmSpec(name="a", safeguard="admissionPolicyCap", replica_cap=4))
    assert annotations[names.ANNOTATION_MODE] == "observe"
    assert annotations[names.ANNOTATION_REPLICA_CAP] == "4"
    assert pods == "200"


def test_the_quota_cap_is_the_quota_plus_the_drivers_pod() -> None:
    annotations, pods = sandbox_of(ArmSpec(name="a", safeguard="resourceQuota", replica_cap=2))
    assert annotations[names.ANNOTATION_MODE] == "observe"
    assert names.ANNOTATION_REPLICA_CAP not in annotations
    assert pods == "3"


def test_observe_records_only() -> None:
    annotations, pods = sandbox_of(ArmSpec(name="a", ban_new_workloads=False))
    assert annotations[names.ANNOTATION_MODE] == "observe"
    assert annotations[names.ANNOTATION_BAN_NEW_WORKLOADS] == "false"
    assert names.ANNOTATION_REPLICA_CAP not in annotations and pods == "200"
