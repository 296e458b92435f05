"""The control plane's certificates (three CAs: the cluster's, etcd's and the one of the API
server's client certificate toward webhooks) and the kubeconfigs of its admin and controllers."""

from __future__ import annotations

from pathlib import Path

from agentmatrix.cluster import kubeconfig, pki
from agentmatrix.cluster.state_layout import state_paths


def make_certificates(state_dir: Path, server_port: int) -> dict[str, pki.CertPair]:
    directory = state_paths(state_dir)["pki"]
    ca = pki.create_ca(directory, "ca")
    certs = {
        "ca": ca,
        "apiserver": pki.issue(
            ca,
            directory,
            "apiserver",
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=("127.0.0.1", "10.96.0.1"),
            server=True,
        ),
        "admin": pki.issue(
            ca, directory, "admin", "kubernetes-admin", organizations=("system:masters",), client=True
        ),
        "controller-manager": pki.issue(
            ca, directory, "controller-manager", "system:kube-controller-manager", client=True
        ),
        "scheduler": pki.issue(ca, directory, "scheduler", "system:kube-scheduler", client=True),
        "apiserver-kubelet-client": pki.issue(
            ca,
            directory,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("system:masters",),
            client=True,
        ),
        "service-accounts": pki.create_signing_keypair(directory, "service-accounts"),
    }
    # etcd's own CA: a certificate the cluster CA signs (any approved CSR) never opens etcd.
    etcd_ca = pki.create_ca(directory, "etcd-ca")
    certs["etcd-ca"] = etcd_ca
    certs["etcd"] = pki.issue(
        etcd_ca, directory, "etcd", "etcd", dns_names=("localhost",), ip_addresses=("127.0.0.1",),
        server=True, client=True,
    )  # fmt: skip
    certs["apiserver-etcd-client"] = pki.issue(
        etcd_ca, directory, "apiserver-etcd-client", "kube-apiserver-etcd-client", client=True
    )
    # Webhooks trust this CA alone: it signs only the API server's client certificate to them.
    webhook_client_ca = pki.create_ca(directory, "webhook-client-ca")
    certs["webhook-client-ca"] = webhook_client_ca
    certs["apiserver-webhook-client"] = pki.issue(
        webhook_client_ca, directory, "apiserver-webhook-client", "kube-apiserver-webhook-client", client=True
    )
    # Neither CA signs anything more: without their keys, nothing else ever can.
    etcd_ca.key.unlink()
    webhook_client_ca.key.unlink()
    server = f"https://127.0.0.1:{server_port}"
    for user, stem in (
        ("kubernetes-admin", "admin"),
        ("system:kube-controller-manager", "controller-manager"),
        ("system:kube-scheduler", "scheduler"),
    ):
        kubeconfig.write(
            state_dir / f"{stem}.kubeconfig",
            server=server,
            ca_file=ca.cert,
            user=user,
            client_cert=certs[stem].cert,
            client_key=certs[stem].key,
        )
    return certs
