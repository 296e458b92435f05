"""Register (create or replace) and remove the generated admission objects in a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException


def _api(kubeconfig: Path | None) -> k8s_client.AdmissionregistrationV1Api:
    api_client = k8s_config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
    return k8s_client.AdmissionregistrationV1Api(api_client)


_OPERATIONS = {
    "ValidatingWebhookConfiguration": (
        "create_validating_webhook_configuration",
        "read_validating_webhook_configuration",
        "replace_validating_webhook_configuration",
        "delete_validating_webhook_configuration",
    ),
    "ValidatingAdmissionPolicy": (
        "create_validating_admission_policy",
        "read_validating_admission_policy",
        "replace_validating_admission_policy",
        "delete_validating_admission_policy",
    ),
    "ValidatingAdmissionPolicyBinding": (
        "create_validating_admission_policy_binding",
        "read_validating_admission_policy_binding",
        "replace_validating_admission_policy_binding",
        "delete_validating_admission_policy_binding",
    ),
}


def apply(documents: list[dict[str, Any]], kubeconfig: Path | None = None) -> None:
    api = _api(kubeconfig)
    for document in documents:
        create, read, replace, _ = _OPERATIONS[document["kind"]]
        try:
            getattr(api, create)(document)
        except ApiException as exc:
            if exc.status != 409:
                raise
            name = document["metadata"]["name"]
            current = getattr(api, read)(name)
            metadata = {**document["metadata"], "resourceVersion": current.metadata.resource_version}
            body = {**document, "metadata": metadata}
            getattr(api, replace)(name, body)


def remove(documents: list[dict[str, Any]], kubeconfig: Path | None = None) -> None:
    api = _api(kubeconfig)
    for document in reversed(documents):
        *_, delete = _OPERATIONS[document["kind"]]
        try:
            getattr(api, delete)(document["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise
