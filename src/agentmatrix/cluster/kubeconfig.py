"""Write kubeconfig files: for the admin, the control-plane components, and ServiceAccounts."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def write(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: str,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """Write a self-contained kubeconfig (certificates embedded, so it can be copied anywhere)."""
    credentials: dict[str, Any] = {}
    if client_cert is not None and client_key is not None:
        credentials["client-certificate-data"] = base64.b64encode(client_cert.read_bytes()).decode()
        credentials["client-key-data"] = base64.b64encode(client_key.read_bytes()).decode()
    if token is not None:
        credentials["token"] = token
    context: dict[str, Any] = {"cluster": "agentmatrix", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "agentmatrix",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dump(config))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


# libyaml where PyYAML was built with it: a kubeconfig is read several times per agent run.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load(kubeconfig: Path) -> Any:
    """The parsed kubeconfig (raises OSError or yaml.YAMLError)."""
    return yaml.load(kubeconfig.read_text(), Loader=_LOADER)  # noqa: S506 (a safe loader)


def dump(config: Any) -> str:
    return yaml.dump(config, Dumper=_DUMPER, sort_keys=False)


def server_and_ca(kubeconfig: Path) -> tuple[str, bytes]:
    """The API server URL and CA bundle of the current context's cluster."""
    config = load(kubeconfig)
    current = config.get("current-context")
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"])
    else:
        ca = Path(cluster["certificate-authority"]).read_bytes()
    return str(cluster["server"]), ca


def for_service_account(
    admin_kubeconfig: Path,
    namespace: str,
    service_account: str,
    path: Path,
    *,
    duration_seconds: int = 3600,
) -> Path:
    """Mint a token for the ServiceAccount through the TokenRequest API and write a kubeconfig."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(admin_kubeconfig))
    try:
        core = client.CoreV1Api(api_client)
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=duration_seconds)
        )
        response = core.create_namespaced_service_account_token(service_account, namespace, request)
    finally:
        api_client.close()
    if response.status is None or not response.status.token:
        raise RuntimeError(f"TokenRequest for {namespace}/{service_account} returned no token")
    token = str(response.status.token)
    server, ca = server_and_ca(admin_kubeconfig)
    ca_path = path.with_suffix(".ca.crt")
    path.parent.mkdir(parents=True, exist_ok=True)
    ca_path.write_bytes(ca)
    try:
        return write(
            path,
            server=server,
            ca_file=ca_path,
            user=f"system:serviceaccount:{namespace}:{service_account}",
            token=token,
            namespace=namespace,
        )
    finally:
        ca_path.unlink(missing_ok=True)
