"""kwok and its fake nodes: it manages only the nodes annotated for it, keeps their leases (so pods
stay Ready), and pretends their pods run."""

from __future__ import annotations

import json
from pathlib import Path

from agentmatrix.cluster import processes


def spawn_kwok(
    binary: Path, admin_kubeconfig: Path, pod_cidr: str, port: int, log_dir: Path
) -> processes.RecordedProcess:
    return processes.spawn(
        "kwok",
        [
            str(binary),
            f"--kubeconfig={admin_kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=10.244.255.1",
            f"--cidr={pod_cidr}",
            f"--server-address=127.0.0.1:{port}",
            # Renew node leases, or the node controller marks every pod NotReady after ~40 s.
            "--node-lease-duration-seconds=40",
        ],
        log_dir,
        (port,),
    )


def nodes_yaml(count: int) -> str:
    """`count` fake nodes for kwok, as one multi-document manifest."""
    return "\n---\n".join(json.dumps(_node_manifest(i)) for i in range(count))


def _node_manifest(index: int) -> dict[str, object]:
    name = f"kwok-node-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {"podCIDR": f"10.244.{index}.0/24"},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
        },
    }
