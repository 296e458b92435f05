from __future__ import annotations

import pytest

from agentmatrix.measurement.counting import MalformedObject, footprint, scale_footprint
from agentmatrix.measurement.model import WorkloadKey
from tests.measurement.builders import AGENT_IMAGE, OTHER_IMAGE, pod_template, workload


@pytest.mark.parametrize("resource", ["deployments", "replicasets", "statefulsets", "replicationcontrollers"])
def test_replicated_workloads_count_spec_replicas_defaulting_to_one(resource: str) -> None:
    assert footprint(resource, workload("X", "a", replicas=4), node_count=2).replicas == 4
    assert footprint(resource, workload("X", "a"), node_count=2).replicas == 1


def test_a_daemonset_runs_one_pod_per_node() -> None:
    assert footprint("daemonsets", workload("DaemonSet", "d"), node_count=5).replicas == 5


def test_job_runs_min_of_parallelism_and_completions_until_finished() -> None:
    assert footprint("jobs", workload("Job", "j", parallelism=4), node_count=0).replicas == 4
    assert footprint("jobs", workload("Job", "j", parallelism=4, completions=2), node_count=0).replicas == 2
    assert footprint("jobs", workload("Job", "j", parallelism=4, suspend=True), node_count=0).replicas == 0
    done = workload("Job", "j", parallelism=3)
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert footprint("jobs", done, node_count=0).replicas == 0


def test_cronjob_counts_one_run_and_keeps_its_schedule() -> None:
    cron = {
        "metadata": {"name": "c"},
        "spec": {
            "schedule": "*/1 * * * *",
            "jobTemplate": {"spec": {"parallelism": 3, "template": pod_template()}},
        },
    }
    found = footprint("cronjobs", cron, node_count=0)
    assert (found.replicas, found.schedule, found.runs_agent(AGENT_IMAGE)) == (3, "*/1 * * * *", True)


def test_hpa_asks_for_min_replicas_and_records_max_and_target() -> None:
    hpa = {
        "metadata": {"name": "h"},
        "spec": {
            "minReplicas": 3,
            "maxReplicas": 9,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent"},
        },
    }
    found = footprint("horizontalpodautoscalers", hpa, node_count=0, namespace="t1")
    assert (found.replicas, found.max_replicas, found.target) == (
        3,
        9,
        WorkloadKey("deployments", "t1", "agent"),
    )


def test_a_pod_is_one_replica_until_it_finishes_or_goes() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": AGENT_IMAGE}]}}
    assert footprint("pods", pod, node_count=0).replicas == 1
    assert footprint("pods", {**pod, "status": {"phase": "Succeeded"}}, node_count=0).replicas == 0
    going = {**pod, "metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert footprint("pods", going, node_count=0).replicas == 0


def test_agent_is_recognised_by_image_or_by_role_label() -> None:
    by_image = footprint("deployments", workload("Deployment", "a", image=AGENT_IMAGE), node_count=0)
    other = footprint("deployments", workload("Deployment", "b", image=OTHER_IMAGE), node_count=0)
    labelled = workload("Deployment", "c", image=OTHER_IMAGE)
    labelled["spec"]["template"]["metadata"]["labels"]["agentmatrix.dev/role"] = "agent"
    assert by_image.runs_agent(AGENT_IMAGE)
    assert not other.runs_agent(AGENT_IMAGE)
    assert footprint("deployments", labelled, node_count=0).runs_agent(AGENT_IMAGE)


def test_only_objects_owned_by_a_counting_controller_are_skipped() -> None:
    def owned_by(kind: str) -> dict[str, object]:
        return {
            "metadata": {"name": "p", "ownerReferences": [{"kind": kind, "name": "o", "controller": True}]},
            "spec": {"containers": [{"name": "c", "image": AGENT_IMAGE}]},
        }

    assert footprint("pods", owned_by("ReplicaSet"), node_count=0).owned
    assert not footprint("pods", owned_by("ConfigMap"), node_count=0).owned  # a forged owner counts


def test_a_bare_scale_knows_replicas_only() -> None:
    found = scale_footprint({"spec": {"replicas": 7}})
    assert (found.replicas, found.knows_template) == (7, False)


@pytest.mark.parametrize(
    "spec",
    [
        {"replicas": "3"},
        {"replicas": -1},
        {"replicas": True},
        {"template": []},
        {"template": {"spec": {"containers": "x"}}},
        {"template": {"spec": {"containers": [{"image": 5}]}}},
    ],
)
def test_malformed_objects_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(MalformedObject):
        footprint("deployments", {"metadata": {"name": "a"}, "spec": spec}, node_count=0)
