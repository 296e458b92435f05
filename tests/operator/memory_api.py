"""An in-memory stand-in for the API server behind the project's one client (`agentmatrix.kube.Kube`).

Only the HTTP exchange is replaced (`Kube._request_once`): retries, create-or-keep, merge patches
and lists run through the real client code. What it imitates of the real API server, and no more:
- paths: `/api[s]/<group-version>/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]`;
- POST to a collection creates (409 AlreadyExists if the name is taken) and fills in `uid`,
  `resourceVersion`, `creationTimestamp` and the namespace; GET of a missing object is a 404;
- lists filter by equality label selectors (`a=b,c`) and carry a `resourceVersion`;
- PATCH applies a JSON merge patch (RFC 7386); on the `status` subresource only status changes,
  and elsewhere status is left alone (the status subresource is enabled, as in the CRD);
- PUT replaces; DELETE of a namespace removes it and everything in it at once (a real namespace
  is Terminating for a while first, which the orchestration waits for only at the eval's deletion);
  DELETE of a namespaced collection removes that namespace's objects of the kind (none, once the
  namespace is gone), as `deletecollection` does.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from agentmatrix.kube import ApiError, Kube, KubeAccess

Key = tuple[str, str, str, str]  # (api prefix, namespace or "", plural, name)


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selected(labels: Mapping[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        name, equals, value = term.partition("=")
        if (name not in labels) if not equals else labels.get(name) != value:
            return False
    return True


class MemoryApi(Kube):
    def __init__(self) -> None:
        super().__init__(KubeAccess("https://memory.invalid", False, dict))
        self.objects: dict[Key, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._versions = itertools.count(1)

    @staticmethod
    def parse(path: str) -> tuple[str, str, str, str, str]:
        """(api prefix, namespace, plural, name, subresource) of a request path."""
        parts = path.strip("/").split("/")
        size = 2 if parts[0] == "api" else 3
        prefix, rest = "/".join(parts[:size]), parts[size:]
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        else:
            namespace = ""
        plural, name, subresource = [*rest, "", ""][:3]
        return prefix, namespace, plural, name, subresource

    async def _request_once(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        content_type: str,
        ok_missing: bool,
        limit: float = 0.0,
    ) -> dict[str, Any] | None:
        self.requests.append((method, path))
        prefix, namespace, plural, name, subresource = self.parse(path)
        key = (prefix, namespace, plural, name)
        found = self.objects.get(key)
        if name and found is None and method != "PUT":
            if ok_missing:
                return None
            raise ApiError(404, method, path, {"reason": "NotFound", "message": f'"{name}" not found'})
        if method == "GET" and not name:
            selector = (params or {}).get("labelSelector", "")
            items = [
                copy.deepcopy(obj)
                for (p, ns, pl, _), obj in sorted(self.objects.items())
                if (p, pl) == (prefix, plural)
                and (not namespace or ns == namespace)
                and selected(obj["metadata"].get("labels") or {}, selector)
            ]
            return {"items": items, "metadata": {"resourceVersion": str(next(self._versions))}}
        if method == "GET":
            return copy.deepcopy(found)
        if method == "POST":
            assert body is not None
            obj = copy.deepcopy(dict(body))
            meta = obj.setdefault("metadata", {})
            key = (prefix, namespace, plural, meta["name"])
            if key in self.objects:
                raise ApiError(409, method, path, {"reason": "AlreadyExists", "message": "already exists"})
            meta.setdefault("uid", f"uid-{next(self._versions)}")
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            if namespace:
                meta["namespace"] = namespace
            return self._store(key, obj)
        if method == "PUT":
            assert body is not None
            return self._store(key, copy.deepcopy(dict(body)))
        if method == "PATCH":
            assert found is not None and body is not None
            if subresource == "status":
                patched = {**found, "status": merge_patch(found.get("status"), body.get("status"))}
            else:
                patched = {**merge_patch(found, {k: v for k, v in body.items() if k != "status"})}
            return self._store(key, patched)
        if method == "DELETE" and not name:  # deletecollection: the namespace's objects of that kind
            gone = [k for k in self.objects if (k[0], k[1], k[2]) == (prefix, namespace, plural)]
            items = [self.objects.pop(k) for k in gone]
            return {"kind": "List", "items": items, "metadata": {}}
        if method == "DELETE":
            assert found is not None
            del self.objects[key]
            if plural == "namespaces":
                for inside in [k for k in self.objects if k[1] == name]:
                    del self.objects[inside]
            return {"kind": "Status", "status": "Success"}
        raise AssertionError(f"{method} {path} is not imitated")

    def _store(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def names(self, prefix: str, plural: str, namespace: str = "") -> list[str]:
        return sorted(k[3] for k in self.objects if (k[0], k[2]) == (prefix, plural) and k[1] == namespace)

    async def close(self) -> None:
        return None
