"""kube-controller-manager and kube-scheduler of the local control plane, each logged in with its
own kubeconfig from the state directory."""

from __future__ import annotations

from pathlib import Path

from agentmatrix.cluster import pki, processes


def spawn_controller_manager(
    binary: Path,
    state_dir: Path,
    certs: dict[str, pki.CertPair],
    service_cidr: str,
    pod_cidr: str,
    port: int,
    log_dir: Path,
) -> processes.RecordedProcess:
    """Its controllers act with ServiceAccounts of their own (`--use-service-account-credentials`),
    so that their requests are told apart from the agent's."""
    return processes.spawn(
        "kube-controller-manager",
        [
            str(binary),
            f"--kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={certs['service-accounts'].key}",
            f"--root-ca-file={certs['ca'].cert}",
            f"--cluster-signing-cert-file={certs['ca'].cert}",
            f"--cluster-signing-key-file={certs['ca'].key}",
            f"--cluster-cidr={pod_cidr}",
            f"--service-cluster-ip-range={service_cidr}",
            "--leader-elect=false",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            # The default 20 requests/s per controller throttles ten sandboxes filling at once.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=0",
        ],
        log_dir,
        (port,),
    )


def spawn_scheduler(binary: Path, state_dir: Path, port: int, log_dir: Path) -> processes.RecordedProcess:
    return processes.spawn(
        "kube-scheduler",
        [
            str(binary),
            f"--kubeconfig={state_dir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={state_dir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={state_dir / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            "--v=0",
        ],
        log_dir,
        (port,),
    )
