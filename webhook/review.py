"""AdmissionReview v1: parse a request strictly, build a response.

A body that is not a well-formed AdmissionReview v1 request raises `MalformedReview`; the server
answers it with HTTP 400 and the reason. The API server never sends such a body; if something
else does, a 400 makes the API server apply the webhook's failurePolicy (open in observe mode,
closed in enforce mode), which is exactly the behaviour the configuration promises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


class MalformedReview(ValueError):
    """The body is not a well-formed AdmissionReview v1 request."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    operation: str
    group: str
    resource: str
    subresource: str
    kind: str
    namespace: str
    name: str
    username: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool


def _field(container: dict[str, Any], key: str, kind: type, where: str, *, required: bool) -> Any:
    value = container.get(key)
    if value is None:
        if required:
            raise MalformedReview(f"{where}{key} is required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedReview(f"{where}{key} must be of type {kind.__name__}")
    return value


def parse(body: bytes) -> AdmissionRequest:
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8 and nesting too deep
        raise MalformedReview(f"body is not JSON: {exc}") from None
    if not isinstance(review, dict):
        raise MalformedReview("body must be a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise MalformedReview(f"body must be an {KIND} of apiVersion {API_VERSION}")
    request = _field(review, "request", dict, "", required=True)
    where = "request."
    uid = _field(request, "uid", str, where, required=True)
    if not uid:
        raise MalformedReview("request.uid must not be empty")
    operation = _field(request, "operation", str, where, required=True)
    if operation not in OPERATIONS:
        raise MalformedReview(f"request.operation must be one of {', '.join(sorted(OPERATIONS))}")
    resource = _field(request, "resource", dict, where, required=True)
    resource_name = _field(resource, "resource", str, "request.resource.", required=True)
    group = _field(resource, "group", str, "request.resource.", required=False) or ""
    kind_ref = _field(request, "kind", dict, where, required=True)
    kind = _field(kind_ref, "kind", str, "request.kind.", required=True)
    user_info = _field(request, "userInfo", dict, where, required=True)
    username = _field(user_info, "username", str, "request.userInfo.", required=False) or ""
    obj = _field(request, "object", dict, where, required=False)
    old = _field(request, "oldObject", dict, where, required=False)
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise MalformedReview(f"request.object is required for {operation}")
    dry_run = _field(request, "dryRun", bool, where, required=False) or False
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        group=group,
        resource=resource_name,
        subresource=_field(request, "subResource", str, where, required=False) or "",
        kind=kind,
        namespace=_field(request, "namespace", str, where, required=False) or "",
        name=_field(request, "name", str, where, required=False) or "",
        username=username,
        object=obj,
        old_object=old,
        dry_run=dry_run,
    )


def response(uid: str, allowed: bool, message: str = "", warnings: list[str] | None = None) -> bytes:
    result: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        result["status"] = {"code": 403, "reason": "Forbidden", "message": message}
    if warnings:
        result["warnings"] = warnings
    return orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": result})


def request_body(
    *,
    uid: str,
    operation: str,
    resource: str,
    namespace: str,
    name: str,
    username: str,
    kind: str,
    group: str = "apps",
    subresource: str = "",
    obj: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """An AdmissionReview v1 request as the API server sends it (for tests and benchmarks)."""
    version = "v1" if group in ("", "apps", "batch") else "v2"
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": username, "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
    }
    if subresource:
        request["subResource"] = subresource
        request["requestSubResource"] = subresource
    if subresource == "scale":
        scale_kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        request["kind"] = request["requestKind"] = scale_kind
    return {"apiVersion": API_VERSION, "kind": KIND, "request": request}
