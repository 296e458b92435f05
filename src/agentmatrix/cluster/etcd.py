"""etcd for the local control plane. It speaks only TLS, client and peer port alike (it cannot run
without a peer listener: an empty `--listen-peer-urls` falls back to :2380), has no plain-HTTP
metrics listener, and accepts only client certificates of its own CA."""

from __future__ import annotations

from pathlib import Path

from agentmatrix.cluster import pki, processes


def spawn_etcd(
    binary: Path,
    data_dir: Path,
    certs: dict[str, pki.CertPair],
    client_url: str,
    peer_url: str,
    log_dir: Path,
    ports: tuple[int, ...],
) -> processes.RecordedProcess:
    """Start etcd with `certs["etcd"]` as its certificate, trusting `certs["etcd-ca"]` alone."""
    etcd_tls = [f"--trusted-ca-file={certs['etcd-ca'].cert}", f"--cert-file={certs['etcd'].cert}",
                f"--key-file={certs['etcd'].key}", "--client-cert-auth"]  # fmt: skip
    peer_tls = [f"--peer-trusted-ca-file={certs['etcd-ca'].cert}", f"--peer-cert-file={certs['etcd'].cert}",
                f"--peer-key-file={certs['etcd'].key}", "--peer-client-cert-auth"]  # fmt: skip
    return processes.spawn(
        "etcd",
        [
            str(binary),
            "--name=agentmatrix",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=agentmatrix={peer_url}",
            *etcd_tls,
            *peer_tls,
            # No plain-HTTP metrics listener; /metrics stays on the client port, behind TLS.
            "--listen-metrics-urls=",
            "--log-level=warn",
            # A throw-away test cluster: durability of etcd itself is not what is measured.
            "--unsafe-no-fsync",
            "--quota-backend-bytes=2147483648",
        ],
        log_dir,
        ports,
    )
