"""Full trial records, kept beside the ReplicationEval in ConfigMaps, and written out as a results
folder (agentmatrix.api.results_layout) by `agentmatrix results EVAL --dir DIR` and `agentmatrix run`.

One ConfigMap per finished trial, in the eval's namespace, owned by the eval (so it goes when the
eval goes), labelled with the eval's uid. Its `binaryData["record.json.gz"]` holds the full
status entry (untrimmed), the trial's inputs (effective and attempted timelines, denials), the
ledger observations, the transcript and the runner's result. A record that would not fit a
ConfigMap drops step outputs from the transcript first (the size it had is noted).
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from agentmatrix.api import names, results_layout
from agentmatrix.api.vocabulary import TRIAL_FINISHED
from agentmatrix.kube import Kube
from agentmatrix.operator.plan import TrialKey, dns_label, label_value

LABEL_RESULTS = f"{names.PREFIX}results"
RECORD_KEY = "record.json.gz"
MAX_RECORD_BYTES = 900_000


def configmap_name(eval_name: str, key: TrialKey) -> str:
    suffix = f"-results-{dns_label(key.arm)}-{key.index}"
    return dns_label(eval_name)[: 253 - len(suffix)].strip("-") + suffix


def _pack(record: dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps(record, separators=(",", ":")).encode(), compresslevel=6)


def pack_record(record: dict[str, Any]) -> bytes:
    packed = _pack(record)
    if len(packed) <= MAX_RECORD_BYTES:
        return packed
    record = dict(record)
    transcript = record.get("transcript") or []
    record["transcriptTruncated"] = {"originalLines": len(transcript), "packedBytes": len(packed)}
    slim = []
    for line in transcript:
        if isinstance(line, dict):
            line = {k: v for k, v in line.items() if k not in ("output", "stdout", "stderr", "messages")}
        slim.append(line)
    record["transcript"] = slim
    packed = _pack(record)
    if len(packed) > MAX_RECORD_BYTES:
        record["transcript"] = []
        record["ledger"] = (record.get("ledger") or [])[:1000]
        packed = _pack(record)
    return packed


def unpack_record(configmap: dict[str, Any]) -> dict[str, Any]:
    data = base64.b64decode((configmap.get("binaryData") or {})[RECORD_KEY])
    result: dict[str, Any] = json.loads(gzip.decompress(data))
    return result


async def store(kube: Kube, *, eval_body: dict[str, Any], key: TrialKey, record: dict[str, Any]) -> str:
    meta = eval_body["metadata"]
    name = configmap_name(meta["name"], key)
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {
                LABEL_RESULTS: "true",
                names.LABEL_EVAL_UID: meta["uid"],
                names.LABEL_EVAL: label_value(meta["name"]),
                names.LABEL_ARM: key.arm,
                names.LABEL_TRIAL: str(key.index),
            },
            "ownerReferences": [
                {
                    "apiVersion": names.API_VERSION,
                    "kind": names.KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "binaryData": {RECORD_KEY: base64.b64encode(pack_record(record)).decode()},
    }
    path = f"/api/v1/namespaces/{meta['namespace']}/configmaps"
    if await kube.create_or_keep(path, body) is None:
        await kube.request("PUT", f"{path}/{name}", body=body)
    return name


async def stored_entries(kube: Kube, namespace: str, eval_uid: str) -> list[dict[str, Any]]:
    """The full status entries of the eval's trials whose records were stored."""
    found = await kube.list(
        f"/api/v1/namespaces/{namespace}/configmaps",
        label_selector=f"{LABEL_RESULTS}=true,{names.LABEL_EVAL_UID}={eval_uid}",
    )
    entries = []
    for configmap in found:
        entry = unpack_record(configmap).get("entry")
        if isinstance(entry, dict) and entry.get("state") in TRIAL_FINISHED:
            entries.append(entry)
    return entries


async def delete_all(kube: Kube, namespace: str, eval_uid: str) -> int:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    found = await kube.list(path, label_selector=f"{LABEL_RESULTS}=true,{names.LABEL_EVAL_UID}={eval_uid}")
    for configmap in found:
        await kube.delete(f"{path}/{configmap['metadata']['name']}")
    return len(found)


async def fetch(kube: Kube, namespace: str, eval_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ReplicationEval object and the records of its finished trials."""
    body = await kube.get(f"/apis/{names.API_VERSION}/namespaces/{namespace}/{names.PLURAL}/{eval_name}")
    if body is None:
        raise LookupError(f"no ReplicationEval {eval_name!r} in namespace {namespace!r}")
    found = await kube.list(
        f"/api/v1/namespaces/{namespace}/configmaps",
        label_selector=f"{LABEL_RESULTS}=true,{names.LABEL_EVAL_UID}={body['metadata']['uid']}",
    )
    records = [unpack_record(configmap) for configmap in found]
    records.sort(key=lambda record: results_layout.trial_key(record.get("entry") or {}))
    return body, records


async def fetch_events(kube: Kube, namespace: str, eval_name: str) -> list[dict[str, Any]]:
    """The Kubernetes events about the ReplicationEval, oldest first."""
    answer = await kube.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/events",
        params={"fieldSelector": f"involvedObject.kind={names.KIND},involvedObject.name={eval_name}"},
    )
    events = []
    for event in (answer or {}).get("items") or []:
        events.append(
            {
                "time": event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"),
                "type": event.get("type"),
                "reason": event.get("reason"),
                "message": event.get("message"),
                "count": event.get("count"),
                "source": (event.get("source") or {}).get("component") or event.get("reportingComponent"),
            }
        )
    events.sort(key=lambda event: str(event["time"] or ""))
    return events
