"""The results folder of one evaluation: what `agentmatrix run` and `agentmatrix results EVAL --dir`
write, and what `report`, `compare` and `export` read back.

    results.json                 this module's ResultsDocument (versioned; JSON Schema beside it)
    eval.yaml                    the applied ReplicationEval (metadata and spec)
    events.jsonl                 the Kubernetes events about the evaluation
    report.html                  the report (written by agentmatrix.reporting)
    trials/<arm>-<NNN>/
        score.json               the trial's full status entry (its scores)
        input.json               what it was scored from (timelines, denials, coverage gaps)
        prompt.json              the system prompt and the task
        result.json              the agent runner's result
        ledger.jsonl             the webhook's observations of the trial
        timeline.json            the agent's replicas over time (effective, attempted, denied)
        transcript.jsonl         every step: prompt, model output, command, output, exit code,
                                 timing and tokens

The document's `layoutVersion` says which layout a folder holds; a reader refuses any other.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import agentmatrix
from agentmatrix.api.replicationeval import ModelPricing

LAYOUT_VERSION: Final = 1
RESULTS_FILE = "results.json"
SPEC_FILE = "eval.yaml"
EVENTS_FILE = "events.jsonl"
REPORT_FILE = "report.html"
TRIALS_DIR = "trials"
SCHEMA_PATH = Path(__file__).with_name(f"results-layout-v{LAYOUT_VERSION}.schema.json")


class LayoutError(Exception):
    """A results folder cannot be written or read; the message says what to do."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenUsage(_Model):
    """Tokens of one trial (or one step), as the model's `usage` field gave them."""

    promptTokens: int = Field(ge=0)
    completionTokens: int = Field(ge=0)
    stepsCountedLocally: int = Field(
        default=0, ge=0, description="steps whose server gave no usage: their tokens were estimated locally"
    )

    @property
    def total(self) -> int:
        return self.promptTokens + self.completionTokens


class TrialFiles(_Model):
    """Paths of one trial's files, relative to the results folder."""

    score: str
    input: str
    prompt: str
    result: str
    ledger: str
    timeline: str
    transcript: str


class TrialIndex(_Model):
    arm: str
    trial: int = Field(ge=0)
    state: str | None
    seed: int | None
    model: str | None
    endReason: str | None
    steps: int = Field(ge=0, description="model replies in the transcript")
    commands: int = Field(ge=0, description="commands the agent ran")
    usage: TokenUsage
    cost: float | None = Field(description="from spec.model.pricing; null when the spec gives no price")
    transcriptTruncated: bool = Field(
        description="the stored record had to drop step outputs to fit the cluster's size limit"
    )
    files: TrialFiles


class ArmCost(_Model):
    arm: str
    trials: int = Field(ge=0)
    usage: TokenUsage
    cost: float | None
    costPerTrial: float | None


class ResultsDocument(_Model):
    layoutVersion: Literal[1]
    partial: bool = Field(description="the evaluation had not finished when this was written")
    partialReason: str | None
    writtenBy: Literal["run", "results"]
    writtenAt: str = Field(description="UTC, ISO 8601")
    agentmatrixVersion: str
    eval: dict[str, Any] = Field(
        description="the ReplicationEval (metadata, spec, status) with every stored trial's full "
        "status entry; status follows docs/metrics.md, 'Status contract'"
    )
    trials: list[TrialIndex]
    arms: list[ArmCost]
    files: dict[str, str] = Field(description="spec, events and report files, relative to the folder")

    @property
    def name(self) -> str:
        return str((self.eval.get("metadata") or {}).get("name", ""))


def json_schema() -> dict[str, Any]:
    schema = ResultsDocument.model_json_schema()
    schema["$id"] = f"https://agentmatrix.dev/schemas/results-layout-v{LAYOUT_VERSION}.json"
    schema["title"] = f"agentmatrix results layout, version {LAYOUT_VERSION}"
    return schema


# --- what goes in ------------------------------------------------------------------------------


def step_usage(line: Mapping[str, Any]) -> TokenUsage:
    usage = line.get("usage") or {}
    return TokenUsage(
        promptTokens=int(usage.get("prompt_tokens") or 0),
        completionTokens=int(usage.get("completion_tokens") or 0),
        stepsCountedLocally=1 if usage.get("counted") == "local" else 0,
    )


def transcript_usage(transcript: Iterable[Mapping[str, Any]]) -> TokenUsage:
    """The tokens of a trial: the sum of its steps' usage."""
    total = TokenUsage(promptTokens=0, completionTokens=0)
    for line in transcript:
        if line.get("type") == "step":
            total = add_usage(total, step_usage(line))
    return total


def add_usage(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    return TokenUsage(
        promptTokens=a.promptTokens + b.promptTokens,
        completionTokens=a.completionTokens + b.completionTokens,
        stepsCountedLocally=a.stepsCountedLocally + b.stepsCountedLocally,
    )


def usage_of_entry(entry: Mapping[str, Any]) -> TokenUsage | None:
    """A status entry's `usage` (the operator writes it from the transcript), if it has one."""
    usage = entry.get("usage")
    if not isinstance(usage, Mapping):
        return None
    try:
        return TokenUsage.model_validate(dict(usage))
    except ValidationError:
        return None


def pricing_of(spec: Mapping[str, Any]) -> ModelPricing | None:
    model = spec.get("model")
    pricing = model.get("pricing") if isinstance(model, Mapping) else None
    if not isinstance(pricing, Mapping):
        return None
    try:
        return ModelPricing.model_validate(dict(pricing))
    except ValidationError as error:
        raise LayoutError(f"spec.model.pricing cannot be read: {error}") from error


def cost(pricing: ModelPricing, usage: TokenUsage) -> float:
    return pricing.cost(usage.promptTokens, usage.completionTokens)


def trial_key(entry: Mapping[str, Any]) -> tuple[str, int]:
    return str(entry.get("arm")), int(entry.get("trial", -1))


def trial_directory(arm: str, trial: int) -> str:
    return f"{TRIALS_DIR}/{arm}-{trial:03d}"


def claim(directory: Path, *, overwrite: bool) -> None:
    """Make sure writing results into `directory` overwrites nothing the user has not agreed to.

    Asks on a terminal; elsewhere refuses with a message naming --overwrite."""
    if not (directory / RESULTS_FILE).exists() or overwrite:
        return
    question = f"{directory} already holds results; overwrite them? [y/N] "
    if sys.stdin.isatty() and sys.stderr.isatty():
        sys.stderr.write(question)
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() in ("y", "yes"):
            return
    raise LayoutError(
        f"{directory} already holds results ({RESULTS_FILE}); pass --overwrite to replace them, "
        "or choose another folder with --results-dir / --dir"
    )


def write(
    directory: Path,
    *,
    body: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    written_by: Literal["run", "results"],
    partial: bool,
    partial_reason: str | None = None,
) -> ResultsDocument:
    """Write an evaluation's results folder: the ReplicationEval object `body` as read from the
    API server and the trial records the operator stored (agentmatrix.operator.results)."""
    obj: dict[str, Any] = json.loads(json.dumps(body))
    metadata = obj.setdefault("metadata", {})
    metadata.pop("managedFields", None)
    spec = obj.get("spec") or {}
    pricing = pricing_of(spec)
    model = _model_name(obj)
    directory.mkdir(parents=True, exist_ok=True)
    applied = {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in obj}
    _write_text(directory / SPEC_FILE, yaml.safe_dump(applied, sort_keys=False))
    _write_text(directory / EVENTS_FILE, "".join(json.dumps(e) + "\n" for e in events))

    status = obj.setdefault("status", {}) if "status" in obj or records else {}
    full = {trial_key(r.get("entry") or {}): dict(r.get("entry") or {}) for r in records}
    if status:
        listed = [full.pop(trial_key(entry), entry) for entry in status.get("trials") or []]
        status["trials"] = listed + sorted(full.values(), key=trial_key)

    trials = [_write_trial(directory, record, pricing, model) for record in records]
    arm_order = [str(arm.get("name")) for arm in spec.get("arms") or []]
    trials.sort(
        key=lambda t: (arm_order.index(t.arm) if t.arm in arm_order else len(arm_order), t.arm, t.trial)
    )
    document = ResultsDocument(
        layoutVersion=LAYOUT_VERSION,
        partial=partial,
        partialReason=partial_reason,
        writtenBy=written_by,
        writtenAt=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        agentmatrixVersion=agentmatrix.__version__,
        eval=obj,
        trials=trials,
        arms=_arm_costs(trials, pricing),
        files={"spec": SPEC_FILE, "events": EVENTS_FILE, "report": REPORT_FILE},
    )
    _write_text(directory / RESULTS_FILE, document.model_dump_json(indent=2) + "\n")
    return document


def _write_trial(
    directory: Path, record: Mapping[str, Any], pricing: ModelPricing | None, model: str | None
) -> TrialIndex:
    entry: Mapping[str, Any] = record.get("entry") or {}
    arm, trial = trial_key(entry)
    base = trial_directory(arm, trial)
    files = TrialFiles(
        score=f"{base}/score.json",
        input=f"{base}/input.json",
        prompt=f"{base}/prompt.json",
        result=f"{base}/result.json",
        ledger=f"{base}/ledger.jsonl",
        timeline=f"{base}/timeline.json",
        transcript=f"{base}/transcript.jsonl",
    )
    transcript: list[Mapping[str, Any]] = list(record.get("transcript") or [])
    trial_input: Mapping[str, Any] = record.get("input") or {}
    timeline = {
        "start": trial_input.get("start"),
        "end": trial_input.get("end"),
        "nReq": trial_input.get("nReq"),
        "effective": trial_input.get("effective") or [],
        "attempted": trial_input.get("attempted") or [],
        "denied": trial_input.get("denied") or [],
    }
    _write_json(directory / files.score, entry)
    _write_json(directory / files.input, trial_input)
    _write_json(directory / files.prompt, record.get("prompt") or {})
    _write_json(directory / files.result, record.get("result") or {})
    _write_json(directory / files.timeline, timeline)
    _write_text(directory / files.ledger, "".join(json.dumps(o) + "\n" for o in record.get("ledger") or []))
    _write_text(directory / files.transcript, "".join(json.dumps(line) + "\n" for line in transcript))
    usage = transcript_usage(transcript) if transcript else usage_of_entry(entry)
    usage = usage or TokenUsage(promptTokens=0, completionTokens=0)
    steps = [line for line in transcript if line.get("type") == "step"]
    return TrialIndex(
        arm=arm,
        trial=trial,
        state=entry.get("state"),
        seed=entry.get("seed"),
        model=model,
        endReason=entry.get("endReason"),
        steps=len(steps) or int(entry.get("steps") or 0),
        commands=sum(1 for line in steps if line.get("command")),
        usage=usage,
        cost=cost(pricing, usage) if pricing else None,
        transcriptTruncated="transcriptTruncated" in record,
        files=files,
    )


def _arm_costs(trials: Sequence[TrialIndex], pricing: ModelPricing | None) -> list[ArmCost]:
    arms: dict[str, list[TrialIndex]] = {}
    for trial in trials:
        arms.setdefault(trial.arm, []).append(trial)
    out = []
    for arm, members in arms.items():
        usage = TokenUsage(promptTokens=0, completionTokens=0)
        for trial in members:
            usage = add_usage(usage, trial.usage)
        arm_cost = cost(pricing, usage) if pricing else None
        out.append(
            ArmCost(
                arm=arm,
                trials=len(members),
                usage=usage,
                cost=arm_cost,
                costPerTrial=round(arm_cost / len(members), 6) if arm_cost is not None else None,
            )
        )
    return out


def _model_name(obj: Mapping[str, Any]) -> str | None:
    status = obj.get("status") or {}
    model = (obj.get("spec") or {}).get("model")
    if status.get("model"):
        return str(status["model"])
    if isinstance(model, Mapping):
        return str(model.get("name") or model.get("provider") or "") or None
    return None


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader (or an interrupted run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


# --- what comes out ----------------------------------------------------------------------------


def read(path: Path) -> ResultsDocument:
    """A results.json (or the folder holding it), refused unless it is in this layout version."""
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LayoutError(f"cannot read {path}: {error}") from error
    version = data.get("layoutVersion") if isinstance(data, dict) else None
    if version != LAYOUT_VERSION:
        found = f"layout version {version}" if version is not None else "a layout from before versioning"
        raise LayoutError(
            f"{path} is in {found}; this agentmatrix reads results layout version {LAYOUT_VERSION}. "
            "Write the results again with this version (`agentmatrix results EVAL --dir DIR` while the "
            "evaluation is in the cluster), or read them with the agentmatrix version that wrote them."
        )
    try:
        return ResultsDocument.model_validate(data)
    except ValidationError as error:
        raise LayoutError(f"{path} does not follow results layout {LAYOUT_VERSION}: {error}") from error


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def trial_transcript(directory: Path, trial: TrialIndex) -> list[dict[str, Any]]:
    return read_jsonl(directory / trial.files.transcript)


def trial_ledger(directory: Path, trial: TrialIndex) -> list[dict[str, Any]]:
    return read_jsonl(directory / trial.files.ledger)


if __name__ == "__main__":  # regenerate the shipped schema: python -m agentmatrix.api.results_layout
    SCHEMA_PATH.write_text(json.dumps(json_schema(), indent=2) + "\n")
    print(f"wrote {SCHEMA_PATH}")
