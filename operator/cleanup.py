"""Deleting what an eval made: its sandboxes (their drivers stopped first), safeguards, records."""

from __future__ import annotations

import asyncio
import contextlib
import json

from agentmatrix.kube import ApiError, Kube
from agentmatrix.operator import results, safeguards, sandbox_lifecycle, sandbox_objects
from agentmatrix.operator.drivers.process import stop_orphan


async def cleanup_sandboxes(kube: Kube, eval_uid: str) -> int:
    """Stop leftover drivers and delete every sandbox namespace of the eval; how many remain."""
    found = await sandbox_lifecycle.sandboxes_of(kube, eval_uid)
    for namespace in found:
        meta = namespace["metadata"]
        record = (meta.get("annotations") or {}).get(sandbox_objects.ANNOTATION_DRIVER)
        if record:
            with contextlib.suppress(ValueError):
                await asyncio.to_thread(stop_orphan, json.loads(record), meta["name"])
        if meta.get("deletionTimestamp") is None:
            with contextlib.suppress(ApiError):
                await sandbox_lifecycle.delete_namespace(kube, meta["name"])
    return len(found)


async def cleanup_eval(kube: Kube, namespace: str, eval_uid: str) -> int:
    """Everything an eval made, deleted; the number of sandbox namespaces still terminating."""
    await cleanup_sandboxes(kube, eval_uid)
    await remove_safeguards(kube, eval_uid)
    await results.delete_all(kube, namespace, eval_uid)
    return len(await sandbox_lifecycle.sandboxes_of(kube, eval_uid))


async def remove_safeguards(kube: Kube, eval_uid: str) -> None:
    for safeguard in safeguards.SAFEGUARDS.values():
        await safeguard.remove_all(kube, eval_uid)
