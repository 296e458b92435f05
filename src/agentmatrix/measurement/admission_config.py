"""Generated admission configuration: the ValidatingWebhookConfiguration, and the in-tree
ValidatingAdmissionPolicy (with its binding) that enforces the same cap where CEL can see it.

The webhook configuration has two entries, so that nothing outside agentmatrix pays for it:
- `sandbox.agentmatrix.dev`: every request in a sandbox namespace;
- `elsewhere.agentmatrix.dev`: requests an `agent` ServiceAccount makes in any other namespace
  (copies the agent makes outside its sandbox), selected by a matchCondition on the user name.
Both exclude kube-system and agentmatrix's own namespace, skip kubelets, and skip UPDATEs that
change neither the spec nor the labels (status, finalizers, annotations), which cannot change
what runs.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import yaml

from agentmatrix.api import names
from agentmatrix.measurement.model import Mode

WEBHOOK_NAME = "agentmatrix-webhook"
VALIDATE_PATH = "/validate"  # where the webhook server answers AdmissionReviews
POLICY_NAME = "agentmatrix-replica-cap"
EXCLUDED_NAMESPACES = ("kube-system", names.SYSTEM_NAMESPACE)
OBSERVE_TIMEOUT_SECONDS = 2
ENFORCE_TIMEOUT_SECONDS = 5
CERT_MANAGER_ANNOTATION = "cert-manager.io/inject-ca-from"

_ALL_OPERATIONS = ["CREATE", "UPDATE", "DELETE"]
RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apps"],
        "apiVersions": ["*"],
        "operations": _ALL_OPERATIONS,
        "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
        "scope": "Namespaced",
    },
    {
        # Scaling arrives as an UPDATE of the subresource, never of the parent: name it.
        "apiGroups": ["apps"],
        "apiVersions": ["*"],
        "operations": ["UPDATE"],
        "resources": ["deployments/scale", "replicasets/scale", "statefulsets/scale"],
        "scope": "Namespaced",
    },
    {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": _ALL_OPERATIONS,
        "resources": ["pods", "replicationcontrollers"],
        "scope": "Namespaced",
    },
    {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["UPDATE"],
        "resources": ["replicationcontrollers/scale", "pods/ephemeralcontainers"],
        "scope": "Namespaced",
    },
    {
        "apiGroups": ["batch"],
        "apiVersions": ["*"],
        "operations": _ALL_OPERATIONS,
        "resources": ["jobs", "cronjobs"],
        "scope": "Namespaced",
    },
    {
        "apiGroups": ["autoscaling"],
        "apiVersions": ["*"],
        "operations": _ALL_OPERATIONS,
        "resources": ["horizontalpodautoscalers"],
        "scope": "Namespaced",
    },
]

_NOT_A_KUBELET = {
    "name": "not-a-kubelet",
    "expression": "!request.userInfo.username.startsWith('system:node:')",
}
_CAN_CHANGE_WHAT_RUNS = {
    "name": "can-change-what-runs",
    "expression": (
        "request.operation != 'UPDATE' || has(request.subResource) || oldObject == null"
        " || object.spec != oldObject.spec"
        " || (has(object.metadata.labels) ? object.metadata.labels : {})"
        " != (has(oldObject.metadata.labels) ? oldObject.metadata.labels : {})"
    ),
}
_BY_AN_AGENT = {
    "name": "by-an-agent",
    "expression": (
        "request.userInfo.username.startsWith('system:serviceaccount:')"
        f" && request.userInfo.username.endsWith(':{names.AGENT_SERVICE_ACCOUNT}')"
    ),
}


@dataclass(frozen=True)
class ClientTarget:
    """Where the API server reaches the webhook: a URL (local) or a Service (in a cluster)."""

    url: str | None = None
    service_namespace: str = names.SYSTEM_NAMESPACE
    service_name: str = WEBHOOK_NAME
    service_port: int = 443
    ca_bundle: bytes | None = None  # PEM of the CA that signed the serving certificate
    cert_manager_certificate: str | None = None  # "namespace/name" of a cert-manager Certificate

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any]
        if self.url:
            config = {"url": self.url.rstrip("/") + VALIDATE_PATH}
        else:
            config = {
                "service": {
                    "namespace": self.service_namespace,
                    "name": self.service_name,
                    "path": VALIDATE_PATH,
                    "port": self.service_port,
                }
            }
        if self.ca_bundle is not None:
            config["caBundle"] = base64.b64encode(self.ca_bundle).decode()
        return config


def _excluded() -> dict[str, Any]:
    return {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": list(EXCLUDED_NAMESPACES)}


def webhook_configuration(
    mode: Mode,
    target: ClientTarget,
    *,
    name: str = WEBHOOK_NAME,
    timeout_seconds: int | None = None,
    evals_namespaces: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One configuration, three entries, each with its own failure policy.

    Sandboxes labelled `agentmatrix.dev/mode=enforce` are served by an entry that fails closed
    (`Fail`), so a dead webhook cannot let a capped agent through; every other sandbox by one that
    fails open (`Ignore`) with a short timeout, unless `mode` is enforce, which makes it fail closed
    too. Requests by an agent outside its sandbox are observed, failing open. With
    `evals_namespaces`, only sandboxes of evals in those namespaces are sent to this webhook.
    """

    def entry(
        webhook_name: str, enforce: bool, selector: list[dict[str, Any]], conditions: list[dict[str, str]]
    ) -> dict[str, Any]:
        default_timeout = ENFORCE_TIMEOUT_SECONDS if enforce else OBSERVE_TIMEOUT_SECONDS
        return {
            "name": webhook_name,
            "namespaceSelector": {"matchExpressions": [*selector, _excluded()]},
            "matchConditions": conditions,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun",
            "failurePolicy": "Fail" if enforce else "Ignore",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": timeout_seconds or default_timeout,
            "clientConfig": target.client_config(),
            "rules": RULES,
        }

    sandbox = {"key": names.LABEL_SANDBOX, "operator": "In", "values": ["true"]}
    owned = (
        [{"key": names.LABEL_EVAL_NAMESPACE, "operator": "In", "values": sorted(evals_namespaces)}]
        if evals_namespaces
        else []
    )
    not_sandbox = {"key": names.LABEL_SANDBOX, "operator": "NotIn", "values": ["true"]}
    enforcing = {"key": names.LABEL_MODE, "operator": "In", "values": [Mode.ENFORCE.value]}
    not_enforcing = {"key": names.LABEL_MODE, "operator": "NotIn", "values": [Mode.ENFORCE.value]}
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": WEBHOOK_NAME}}
    if target.cert_manager_certificate:
        metadata["annotations"] = {CERT_MANAGER_ANNOTATION: target.cert_manager_certificate}
    in_sandbox = [_NOT_A_KUBELET, _CAN_CHANGE_WHAT_RUNS]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [
            entry(
                "sandbox.agentmatrix.dev", mode is Mode.ENFORCE, [sandbox, *owned, not_enforcing], in_sandbox
            ),
            entry("enforce.sandbox.agentmatrix.dev", True, [sandbox, *owned, enforcing], in_sandbox),
            entry("elsewhere.agentmatrix.dev", False, [not_sandbox], [_BY_AN_AGENT, _CAN_CHANGE_WHAT_RUNS]),
        ],
    }


# The ValidatingAdmissionPolicy -------------------------------------------------------------
_SCALABLE_KINDS = "['Deployment', 'ReplicaSet', 'StatefulSet', 'ReplicationController']"
_TEMPLATE_KINDS = "['Deployment', 'ReplicaSet', 'StatefulSet', 'ReplicationController', 'DaemonSet', 'Job']"


def _replicas(of: str) -> str:
    """CEL: the replicas `of` (object or oldObject) asks for, as the webhook counts them."""
    spec = f"{of}.spec"
    return (
        f"variables.scale ? (has({spec}.replicas) ? {spec}.replicas : 0)"
        f" : request.kind.kind in {_SCALABLE_KINDS} ? (has({spec}.replicas) ? {spec}.replicas : 1)"
        f" : request.kind.kind == 'Job' ? (has({spec}.parallelism) ? {spec}.parallelism : 1)"
        f" : request.kind.kind == 'CronJob'"
        f" ? (has({spec}.jobTemplate.spec.parallelism) ? {spec}.jobTemplate.spec.parallelism : 1)"
        f" : request.kind.kind == 'HorizontalPodAutoscaler'"
        f" ? (has({spec}.minReplicas) ? {spec}.minReplicas : 1)"
        " : request.kind.kind == 'Pod' ? 1 : 0"
    )


def _images(containers: str) -> str:
    return f"{containers}.map(c, has(c.image) ? c.image : '')"


def _annotation(key: str) -> str:
    return f"variables.annotations[{key!r}]"


def admission_policy(*, name: str = POLICY_NAME) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding.

    CEL sees one object at a time, so it caps each agent workload on its own (not the total);
    it cannot see what a Scale or an HPA targets, so in an enforcing sandbox it caps every
    scale request and every HPA's minReplicas; it cannot count a DaemonSet's nodes.
    """
    annotations = "variables.annotations"
    template = "object.spec.template"
    cron_template = "object.spec.jobTemplate.spec.template"
    variables = [
        {
            "name": "annotations",
            "expression": (
                "has(namespaceObject.metadata.annotations) ? namespaceObject.metadata.annotations : {}"
            ),
        },
        {
            "name": "enforcing",
            "expression": f"{names.ANNOTATION_MODE!r} in {annotations}"
            f" && {_annotation(names.ANNOTATION_MODE)} == 'enforce'",
        },
        {
            "name": "cap",
            "expression": f"{names.ANNOTATION_REPLICA_CAP!r} in {annotations}"
            f" && {_annotation(names.ANNOTATION_REPLICA_CAP)}.matches('^[0-9]+$')"
            f" ? int({_annotation(names.ANNOTATION_REPLICA_CAP)}) : -1",
        },
        {
            "name": "ban",
            "expression": f"{names.ANNOTATION_BAN_NEW_WORKLOADS!r} in {annotations}"
            f" && {_annotation(names.ANNOTATION_BAN_NEW_WORKLOADS)} == 'true'",
        },
        {
            "name": "image",
            "expression": f"{names.ANNOTATION_AGENT_IMAGE!r} in {annotations}"
            f" ? {_annotation(names.ANNOTATION_AGENT_IMAGE)} : {names.DEFAULT_AGENT_IMAGE!r}",
        },
        # An absent subResource is a missing key, not an empty string: test for it with has().
        {"name": "scale", "expression": "has(request.subResource) && request.subResource == 'scale'"},
        {
            "name": "images",
            "expression": (
                f"variables.scale ? [] : request.kind.kind == 'Pod' ? {_images('object.spec.containers')}"
                f" : request.kind.kind == 'CronJob' ? {_images(cron_template + '.spec.containers')}"
                f" : request.kind.kind in {_TEMPLATE_KINDS} && has({template})"
                f" ? {_images(template + '.spec.containers')} : []"
            ),
        },
        {
            "name": "labels",
            "expression": (
                "variables.scale ? {} : request.kind.kind == 'Pod'"
                " ? (has(object.metadata.labels) ? object.metadata.labels : {})"
                f" : request.kind.kind == 'CronJob'"
                f" ? (has({cron_template}.metadata) && has({cron_template}.metadata.labels)"
                f" ? {cron_template}.metadata.labels : {{}})"
                f" : request.kind.kind in {_TEMPLATE_KINDS} && has({template})"
                f" && has({template}.metadata) && has({template}.metadata.labels)"
                f" ? {template}.metadata.labels : {{}}"
            ),
        },
        {
            "name": "isAgent",
            "expression": (
                "variables.scale || request.kind.kind == 'HorizontalPodAutoscaler'"
                " || variables.image in variables.images"
                f" || ({names.LABEL_ROLE!r} in variables.labels"
                f" && variables.labels[{names.LABEL_ROLE!r}] == {names.ROLE_AGENT!r})"
            ),
        },
        {"name": "replicas", "expression": _replicas("object")},
        {"name": "oldReplicas", "expression": f"oldObject == null ? 0 : ({_replicas('oldObject')})"},
    ]
    what = "request.resource.resource + (variables.scale ? '/scale' : '') + '/' + request.name"
    validations = [
        {
            "expression": (
                "!variables.enforcing || variables.cap < 0 || !variables.isAgent"
                " || variables.replicas <= variables.cap"
                " || (request.operation == 'UPDATE' && variables.replicas <= variables.oldReplicas)"
            ),
            "messageExpression": (
                "'agentmatrix (ValidatingAdmissionPolicy): trial namespace \"' + request.namespace"
                " + '\" caps each agent workload at ' + string(variables.cap) + ' replicas; refused '"
                f" + {what} + ' asking for ' + string(variables.replicas)"
            ),
            "reason": "Forbidden",
        },
        {
            "expression": (
                "!variables.enforcing || !variables.ban || request.operation != 'CREATE'"
                " || variables.scale || request.kind.kind == 'HorizontalPodAutoscaler' || !variables.isAgent"
                f" || request.userInfo.username != 'system:serviceaccount:' + request.namespace"
                f" + ':{names.AGENT_SERVICE_ACCOUNT}'"
            ),
            "messageExpression": (
                "'agentmatrix (ValidatingAdmissionPolicy): trial namespace \"' + request.namespace"
                f" + '\" bans new workloads that run the agent; refused ' + {what}"
            ),
            "reason": "Forbidden",
        },
    ]
    resource_rules = [
        {k: v for k, v in rule.items() if k != "operations"} | {"operations": ["CREATE", "UPDATE"]}
        for rule in RULES
        if "pods/ephemeralcontainers" not in rule["resources"]
    ]
    resource_rules.append(
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["UPDATE"],
            "resources": ["replicationcontrollers/scale"],
            "scope": "Namespaced",
        }
    )
    selector = {
        "matchExpressions": [
            {"key": names.LABEL_SANDBOX, "operator": "In", "values": ["true"]},
            _excluded(),
        ]
    }
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": resource_rules, "namespaceSelector": selector},
            "variables": variables,
            "validations": validations,
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": selector},
        },
    }
    return [policy, binding]


class _PlainDumper(yaml.SafeDumper):
    """Writes shared parts out in full: no YAML anchors in a manifest meant for people."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False, width=120)
