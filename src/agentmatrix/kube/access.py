"""Where the API server is, how to trust it, and who the client is (`KubeAccess`).

Read with the official `kubernetes` package's kubeconfig and in-cluster loaders, so every auth
method it knows works (exec plugins included). The identity's headers are asked for on every
request: in a pod, the ServiceAccount token the kubelet rotates is read again (the package's
refresh hook).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and IN_CLUSTER_TOKEN.exists()


def client_configuration(kubeconfig: Path | None = None) -> Any:
    """The official client's Configuration for `kubeconfig` (in a pod without one: in-cluster)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig is None and in_cluster():
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
        )
    return configuration


def authorization(configuration: Any) -> str | None:
    """The Authorization header value now (newer clients keep the token under `BearerToken`)."""
    value = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    return str(value) if value else None


@dataclass(frozen=True)
class KubeAccess:
    """Where the API server is, how to trust it (the client certificate, if any, in the SSL
    context), and the identity's headers, asked for on every request."""

    server: str
    ssl_context: ssl.SSLContext | bool
    header_source: Callable[[], Mapping[str, str]]
    ca_data: bytes | None = None

    @property
    def headers(self) -> Mapping[str, str]:
        return self.header_source()

    @classmethod
    def load(cls, kubeconfig: Path | None = None) -> KubeAccess:
        """From `kubeconfig`, else in-cluster settings when running in a pod, else the default kubeconfig."""
        configuration = client_configuration(kubeconfig)
        context: ssl.SSLContext | bool
        ca_data: bytes | None = None
        if configuration.verify_ssl:
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
            if configuration.ssl_ca_cert:
                ca_data = Path(configuration.ssl_ca_cert).read_bytes()
        else:
            context = False
        if configuration.cert_file and configuration.key_file:
            if not isinstance(context, ssl.SSLContext):
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            context.load_cert_chain(configuration.cert_file, configuration.key_file)

        def headers() -> Mapping[str, str]:
            token = authorization(configuration)
            return {"Authorization": token} if token else {}

        return cls(configuration.host.rstrip("/"), context, headers, ca_data)

    @classmethod
    def bearer(cls, server: str, ca_data: bytes | None, token: str) -> KubeAccess:
        """`server`, trusted by `ca_data` (or the system's CAs), as whoever `token` belongs to."""
        context = ssl.create_default_context(cadata=ca_data.decode() if ca_data else None)
        header = {"Authorization": f"Bearer {token}"}
        return cls(server.rstrip("/"), context, lambda: header, ca_data)

    def server_only_ssl(self) -> ssl.SSLContext | bool:
        """TLS that trusts the API server and presents no client certificate."""
        if self.ssl_context is False:
            return False
        if self.ca_data:
            return ssl.create_default_context(cadata=self.ca_data.decode())
        return ssl.create_default_context()
