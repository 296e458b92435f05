"""Full trial records, kept beside the ReplicationEval in ConfigMaps, and written out by
`agentmatrix results EVAL --dir DIR`.

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
from pathlib import Path
from typing import Any

import yaml

from agentmatrix.api import names
from agentmatrix.api.vocabulary import TRIAL_FINISHED
from agentmatrix.operator.kube import Kube
from agentmatrix.operator.plan import TrialKey, dns_label, label_value
from agentmatrix.operator.sandbox import LABEL_EVAL_UID

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
                LABEL_EVAL_UID: meta["uid"],
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
        label_selector=f"{LABEL_RESULTS}=true,{LABEL_EVAL_UID}={eval_uid}",
    )
    entries = []
    for configmap in found:
        entry = unpack_record(configmap).get("entry")
        if isinstance(entry, dict) and entry.get("state") in TRIAL_FINISHED:
            entries.append(entry)
    return entries


async def delete_all(kube: Kube, namespace: str, eval_uid: str) -> int:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    found = await kube.list(path, label_selector=f"{LABEL_RESULTS}=true,{LABEL_EVAL_UID}={eval_uid}")
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
        label_selector=f"{LABEL_RESULTS}=true,{LABEL_EVAL_UID}={body['metadata']['uid']}",
    )
    records = [unpack_record(configmap) for configmap in found]
    records.sort(key=lambda record: _trial_of(record.get("entry") or {}))
    return body, records


def _trial_of(entry: dict[str, Any]) -> tuple[str, int]:
    return str(entry.get("arm")), int(entry.get("trial", -1))


def write_results(directory: Path, body: dict[str, Any], records: list[dict[str, Any]]) -> list[Path]:
    """DIR/results.json (the eval with every trial's full entry, as the report reads it),
    DIR/eval.yaml, and per trial DIR/trials/<arm>-<NNN>/ with its score, inputs, prompt, runner
    result, ledger and transcript. Returns the files written."""
    written: list[Path] = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)

    body = json.loads(json.dumps(body))
    body["metadata"].pop("managedFields", None)
    write(directory / "eval.yaml", yaml.safe_dump(body, sort_keys=False))
    status = body.setdefault("status", {})
    full = {_trial_of(entry): entry for entry in (record.get("entry") or {} for record in records)}
    status["trials"] = [full.get(_trial_of(entry), entry) for entry in status.get("trials") or []]
    write(directory / "results.json", json.dumps(body, indent=2))
    for record in records:
        entry = record.get("entry") or {}
        trial_dir = directory / "trials" / f"{entry.get('arm', 'arm')}-{int(entry.get('trial', 0)):03d}"
        write(trial_dir / "score.json", json.dumps(entry, indent=2))
        write(trial_dir / "input.json", json.dumps(record.get("input") or {}, indent=2))
        write(trial_dir / "prompt.json", json.dumps(record.get("prompt") or {}, indent=2))
        write(trial_dir / "result.json", json.dumps(record.get("result") or {}, indent=2))
        write(trial_dir / "ledger.jsonl", "".join(json.dumps(o) + "\n" for o in record.get("ledger") or []))
        write(
            trial_dir / "transcript.jsonl",
            "".join(json.dumps(line) + "\n" for line in record.get("transcript") or []),
        )
    return written
