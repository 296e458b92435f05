"""`agentmatrix export DIR --format csv|parquet|inspect`: results folders in the formats
researchers' tools read.

- csv, parquet: one row per trial with every metric of its status entry (flattened, e.g.
  `m3_reached`), the eval, arm, model, seed, end reason, tokens and cost.
- inspect: an Inspect evaluation log (inspect_ai's own log types, so `inspect view` opens it):
  one sample per trial, its transcript as chat messages, its scores and metrics.

Parquet needs pyarrow and Inspect needs inspect_ai: `pip install 'agentmatrix[export]'`.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentmatrix.api import results_layout
from agentmatrix.api.results_layout import ResultsDocument, TrialIndex

if TYPE_CHECKING:
    from inspect_ai.log import EvalLog, EvalSample
    from inspect_ai.model import ChatMessage

# Nested status fields that are not per-trial metrics (the timeline has its own file).
SKIPPED_FIELDS = frozenset({"timeline", "harness", "usage"})
EXTRA_HINT = "pip install 'agentmatrix[export]'"


class ExportError(Exception):
    """The export cannot be made; the message says what to fix."""


@dataclass(frozen=True)
class Folder:
    path: Path
    document: ResultsDocument


def folders(directory: Path) -> list[Folder]:
    """The results folder `directory`, or every results folder directly inside it."""
    candidates = (
        [directory]
        if (directory / results_layout.RESULTS_FILE).is_file()
        else sorted(p for p in directory.iterdir() if (p / results_layout.RESULTS_FILE).is_file())
        if directory.is_dir()
        else []
    )
    if not candidates:
        raise ExportError(
            f"no {results_layout.RESULTS_FILE} in {directory} or in a folder directly inside it"
        )
    try:
        return [Folder(path, results_layout.read(path)) for path in candidates]
    except results_layout.LayoutError as error:
        raise ExportError(str(error)) from error


def _entries(document: ResultsDocument) -> dict[tuple[str, int], Mapping[str, Any]]:
    status = document.eval.get("status") or {}
    return {results_layout.trial_key(entry): entry for entry in status.get("trials") or []}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}_{key}" if prefix else str(key), inner, out)
    elif isinstance(value, list):
        out[prefix] = len(value)  # lists (phases, gaps) export as their length
    else:
        out[prefix] = value


def trial_rows(sources: Sequence[Folder]) -> list[dict[str, Any]]:
    rows = []
    for folder in sources:
        document = folder.document
        metadata = document.eval.get("metadata") or {}
        scenario = ((document.eval.get("spec") or {}).get("scenario") or {}).get("name")
        entries = _entries(document)
        for trial in document.trials:
            entry = entries.get((trial.arm, trial.trial), {})
            row: dict[str, Any] = {
                "eval": metadata.get("name"),
                "eval_namespace": metadata.get("namespace"),
                "scenario": scenario,
                "model": trial.model,
                "arm": trial.arm,
                "trial": trial.trial,
                "seed": trial.seed,
                "state": trial.state,
                "end_reason": trial.endReason,
                "steps": trial.steps,
                "commands": trial.commands,
                "prompt_tokens": trial.usage.promptTokens,
                "completion_tokens": trial.usage.completionTokens,
                "steps_tokens_counted_locally": trial.usage.stepsCountedLocally,
                "cost": trial.cost,
                "partial": document.partial,
                "transcript": str(folder.path / trial.files.transcript),
            }
            metrics: dict[str, Any] = {}
            for key, value in entry.items():
                if key not in SKIPPED_FIELDS and key not in ("arm", "trial", "seed", "state", "endReason"):
                    _flatten(_snake(key), value, metrics)
            for key, value in metrics.items():
                row.setdefault(key, value)
            rows.append(row)
    return rows


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_parquet(rows: Sequence[Mapping[str, Any]], target: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ExportError(f"Parquet needs pyarrow: {EXTRA_HINT}") from error
    columns = _columns(rows)
    table = pa.Table.from_pylist([{column: row.get(column) for column in columns} for row in rows])
    pq.write_table(table, target)


# --- Inspect ------------------------------------------------------------------------------------


def inspect_log(folder: Folder) -> EvalLog:
    """The results folder as an Inspect evaluation log, one sample per trial."""
    try:
        from inspect_ai.log import (
            EvalConfig,
            EvalDataset,
            EvalLog,
            EvalMetric,
            EvalResults,
            EvalScore,
            EvalSpec,
        )
    except ImportError as error:
        raise ExportError(f"the Inspect log needs inspect_ai: {EXTRA_HINT}") from error
    document = folder.document
    metadata = document.eval.get("metadata") or {}
    spec = document.eval.get("spec") or {}
    scenario = (spec.get("scenario") or {}).get("name") or "replication"
    samples = [_sample(folder, trial) for trial in document.trials]
    entries = _entries(document)
    overuse = [
        1.0 if entry["overuse"] else 0.0
        for entry in (entries.get((trial.arm, trial.trial), {}) for trial in document.trials)
        if "overuse" in entry
    ]
    scores = [
        EvalScore(
            name="overuse",
            scorer="agentmatrix",
            metrics={"mean": EvalMetric(name="mean", value=sum(overuse) / len(overuse))} if overuse else {},
        )
    ]
    model = _inspect_model(spec)
    return EvalLog(
        version=2,
        status="started" if document.partial else "success",
        eval=EvalSpec(
            created=document.writtenAt,
            task=f"agentmatrix/{scenario}",
            task_id=_log_id(document),
            run_id=_log_id(document),
            dataset=EvalDataset(name=document.name, samples=len(samples)),
            model=model,
            config=EvalConfig(),
            metadata={
                "eval": document.name,
                "eval_namespace": metadata.get("namespace"),
                "arms": [arm.get("name") for arm in spec.get("arms") or []],
                "partial": document.partial,
                "agentmatrix_version": document.agentmatrixVersion,
            },
        ),
        results=EvalResults(total_samples=len(samples), completed_samples=len(samples), scores=scores),
        samples=samples,
    )


def _log_id(document: ResultsDocument) -> str:
    """An id without separators (Inspect reads `<created>_<task>_<id>` file names)."""
    uid = (document.eval.get("metadata") or {}).get("uid") or ""
    return hashlib.sha256(f"{document.name}/{uid}/{document.writtenAt}".encode()).hexdigest()[:22]


def _inspect_model(spec: Mapping[str, Any]) -> str:
    model = spec.get("model") or {}
    provider = str(model.get("provider") or "unknown")
    name = str(model.get("name") or provider)
    return f"{provider}/{name}"


def _sample(folder: Folder, trial: TrialIndex) -> EvalSample:
    from inspect_ai.log import EvalSample
    from inspect_ai.model import ModelUsage
    from inspect_ai.scorer import Score

    entry = _entries(folder.document).get((trial.arm, trial.trial), {})
    prompt = _read_json(folder.path / trial.files.prompt)
    transcript = results_layout.trial_transcript(folder.path, trial)
    messages = list(_messages(prompt, transcript))
    milestones = entry.get("milestones") or {}
    scores = {
        name: Score(value=1.0 if (milestones.get(name) or {}).get("reached") else 0.0,
                    explanation=(milestones.get(name) or {}).get("evidence"))
        for name in ("m1", "m2", "m3", "m4")
    }  # fmt: skip
    if "overuse" in entry:
        scores["overuse"] = Score(value=1.0 if entry["overuse"] else 0.0)
        scores["excess"] = Score(value=float(entry.get("excess") or 0))
    flat: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in SKIPPED_FIELDS and key != "milestones":
            _flatten(_snake(key), value, flat)
    usage = ModelUsage(
        input_tokens=trial.usage.promptTokens,
        output_tokens=trial.usage.completionTokens,
        total_tokens=trial.usage.total,
        total_cost=trial.cost,
    )
    return EvalSample(
        id=f"{trial.arm}-{trial.trial:03d}",
        epoch=1,
        input=str(prompt.get("task") or ""),
        target="",
        messages=messages,
        scores=scores,
        metadata={**flat, "arm": trial.arm, "trial": trial.trial, "seed": trial.seed,
                  "end_reason": trial.endReason, "state": trial.state},
        model_usage={trial.model or "model": usage},
    )  # fmt: skip


def _messages(prompt: Mapping[str, Any], transcript: Sequence[Mapping[str, Any]]) -> Iterator[ChatMessage]:
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser

    if prompt.get("system"):
        yield ChatMessageSystem(content=str(prompt["system"]))
    yield ChatMessageUser(content=str(prompt.get("task") or ""))
    for line in transcript:
        if line.get("type") != "step":
            continue
        reply = line.get("reply") or {}
        yield ChatMessageAssistant(content=str(reply.get("content") or ""), model=None)
        if line.get("command"):
            yield ChatMessageUser(
                content=f"$ {line['command']}\nexit code {line.get('exit_code')}\n{line.get('output') or ''}"
            )
        elif line.get("parse_error"):
            yield ChatMessageUser(content=f"Your reply could not be read: {line['parse_error']}")


def _read_json(path: Path) -> dict[str, Any]:
    import json

    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def write_inspect(folder: Folder, target_dir: Path) -> Path:
    from inspect_ai.log import write_eval_log

    log = inspect_log(folder)
    created = datetime.datetime.fromisoformat(folder.document.writtenAt.replace("Z", "+00:00"))
    # Inspect's own file naming: <created>_<task>_<id>.eval
    name = f"{created:%Y-%m-%dT%H-%M-%S}+00-00_agentmatrix-{folder.document.name}_{log.eval.task_id}.eval"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / name
    write_eval_log(log, target, format="eval")
    return target
