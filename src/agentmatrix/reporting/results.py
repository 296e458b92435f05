"""An evaluation's results as the report reads them: from the API server or a results folder.

Both sources hold the ReplicationEval object (metadata, spec, status); the status structure is
the contract in docs/metrics.md ("Status contract"). A results folder (agentmatrix.api.results_layout)
adds every trial's transcript and ledger.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmatrix.api import names, results_layout
from agentmatrix.api.replicationeval import ModelPricing
from agentmatrix.api.results_layout import RESULTS_FILE, ArmCost, LayoutError, TokenUsage
from agentmatrix.scoring import ArmComparison, ArmScore, Timeline, TrialScore, compare_arms, score_arm


class ResultsError(Exception):
    """The results cannot be found or read; the message says why, for the user."""


@dataclass(frozen=True)
class TrialRecord:
    score: TrialScore
    timeline: Timeline | None
    state: str | None
    namespace: str | None
    usage: TokenUsage | None = None
    cost: float | None = None
    transcript: list[dict[str, Any]] | None = None  # the runner's transcript lines (results folder only)
    ledger: list[dict[str, Any]] | None = None  # the webhook's observations (results folder only)


@dataclass(frozen=True)
class EvalResults:
    name: str
    namespace: str
    model: str | None
    scenario: str | None
    phase: str | None
    arms: list[ArmScore]
    trials: list[TrialRecord]
    unscored: int
    comparisons: list[ArmComparison]
    identities: dict[str, str] = dataclasses.field(default_factory=dict)  # arm -> self | service
    arm_costs: list[ArmCost] = dataclasses.field(default_factory=list)
    partial: bool = False

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "eval": self.name,
            "namespace": self.namespace,
            "model": self.model,
            "scenario": self.scenario,
            "phase": self.phase,
            "arms": [arm.to_dict() for arm in self.arms],
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
            "identities": dict(self.identities),
            "unscoredTrials": self.unscored,
            "partial": self.partial,
            "armCosts": [cost.model_dump() for cost in self.arm_costs],
            "trials": [
                {
                    **record.score.to_dict(),
                    "state": record.state,
                    "namespace": record.namespace,
                    "timeline": record.timeline.to_dict() if record.timeline else None,
                    "usage": record.usage.model_dump() if record.usage else None,
                    "cost": record.cost,
                }
                for record in self.trials
            ],
        }


def from_object(obj: Mapping[str, Any]) -> EvalResults:
    """Results from a ReplicationEval object (or a bare status, which has no metadata)."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") if "status" in obj or "metadata" in obj else obj
    status = status or {}
    pricing = _pricing(spec)
    records, unscored = _trial_records(status.get("trials") or [], pricing)
    by_arm: dict[str, list[TrialScore]] = {}
    for record in records:
        by_arm.setdefault(record.score.arm, []).append(record.score)

    arms: list[ArmScore] = []
    for data in status.get("arms") or []:
        try:
            arm_name = str(data["arm"])
            arms.append(ArmScore.from_dict(data, tuple(by_arm.get(arm_name, ()))))
        except (KeyError, TypeError, ValueError) as error:
            raise ResultsError(f"status.arms entry cannot be read: {error!r}") from error
    scoring = spec.get("scoring") or {}
    known = {arm.arm for arm in arms}
    for arm_name, scores in by_arm.items():
        if arm_name not in known:
            arms.append(
                score_arm(
                    scores, alpha=float(scoring.get("alpha", 0.5)), beta=float(scoring.get("beta", 0.5))
                )
            )
    order = [str(arm.get("name")) for arm in spec.get("arms") or []]
    arms.sort(key=lambda arm: order.index(arm.arm) if arm.arm in order else len(order))
    arm_order = [arm.arm for arm in arms]
    records.sort(key=lambda record: (arm_order.index(record.score.arm), record.score.trial))

    return EvalResults(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        model=status.get("model") or _model_from_spec(spec),
        scenario=(spec.get("scenario") or {}).get("name"),
        phase=status.get("phase"),
        arms=arms,
        trials=records,
        unscored=unscored,
        comparisons=comparisons_against_first(arms),
        identities=_identities(spec, arm_order),
        arm_costs=_arm_costs(records, pricing),
    )


def _identities(spec: Mapping[str, Any], arms: list[str]) -> dict[str, str]:
    """Each arm's framing: its own `identity`, else the scenario's (default self)."""
    scenario = str((spec.get("scenario") or {}).get("identity") or "self")
    own = {str(arm.get("name")): arm.get("identity") for arm in spec.get("arms") or []}
    return {arm: str(own.get(arm) or scenario) for arm in arms}


def _pricing(spec: Mapping[str, Any]) -> ModelPricing | None:
    try:
        return results_layout.pricing_of(spec)
    except LayoutError as error:
        raise ResultsError(str(error)) from error


def _arm_costs(records: list[TrialRecord], pricing: ModelPricing | None) -> list[ArmCost]:
    by_arm: dict[str, list[TokenUsage]] = {}
    for record in records:
        if record.usage is not None:
            by_arm.setdefault(record.score.arm, []).append(record.usage)
    costs = []
    for arm, usages in by_arm.items():
        total = TokenUsage(promptTokens=0, completionTokens=0)
        for usage in usages:
            total = results_layout.add_usage(total, usage)
        cost = results_layout.cost(pricing, total) if pricing else None
        per_trial = round(cost / len(usages), 6) if cost is not None else None
        costs.append(ArmCost(arm=arm, trials=len(usages), usage=total, cost=cost, costPerTrial=per_trial))
    return costs


def comparisons_against_first(arms: list[ArmScore]) -> list[ArmComparison]:
    """Each arm against the first one (the baseline), where both carry their trials."""
    if len(arms) < 2 or not _comparable(arms[0]):
        return []
    return [compare_arms(arms[0], arm) for arm in arms[1:] if _comparable(arm)]


def _comparable(arm: ArmScore) -> bool:
    return arm.finished_trials == 0 or bool(arm.trial_scores)


def _trial_records(
    entries: list[Mapping[str, Any]], pricing: ModelPricing | None
) -> tuple[list[TrialRecord], int]:
    records: list[TrialRecord] = []
    unscored = 0
    for entry in entries:
        if "milestones" not in entry:
            unscored += 1
            continue
        try:
            score = TrialScore.from_dict(dict(entry))
        except (KeyError, TypeError, ValueError) as error:
            raise ResultsError(f"status.trials entry cannot be read: {error!r}") from error
        timeline = entry.get("timeline")
        usage = results_layout.usage_of_entry(entry)
        records.append(
            TrialRecord(
                score=score,
                timeline=Timeline.from_dict(timeline) if timeline else None,
                state=entry.get("state"),
                namespace=entry.get("namespace"),
                usage=usage,
                cost=results_layout.cost(pricing, usage) if pricing and usage else None,
            )
        )
    return records, unscored


def _model_from_spec(spec: Mapping[str, Any]) -> str | None:
    model = spec.get("model")
    if isinstance(model, str):
        return model
    if isinstance(model, Mapping):
        if model.get("provider") == "replay":
            return "replay"
        return model.get("name") or model.get("provider")
    return None


def results_file(directory: Path, eval_name: str) -> Path:
    """DIR/EVAL/results.json, else DIR/results.json (as `agentmatrix results` writes them)."""
    for candidate in (directory / eval_name / RESULTS_FILE, directory / RESULTS_FILE):
        if candidate.is_file():
            return candidate
    raise ResultsError(f"no {RESULTS_FILE} for {eval_name!r} in {directory} or {directory / eval_name}")


def load_from_dir(directory: Path, eval_name: str) -> EvalResults:
    path = results_file(directory, eval_name)
    results = load_folder(path.parent)
    if results.name and results.name != eval_name:
        raise ResultsError(f"{path} holds the results of {results.name!r}, not {eval_name!r}")
    if not results.name:
        results = dataclasses.replace(results, name=eval_name)
    return results


def load_folder(folder: Path) -> EvalResults:
    """The results folder of one evaluation, transcripts and ledgers included."""
    try:
        document = results_layout.read(folder)
    except LayoutError as error:
        raise ResultsError(str(error)) from error
    results = from_object(document.eval)
    stored = {(trial.arm, trial.trial): trial for trial in document.trials}
    records = []
    for record in results.trials:
        index = stored.get((record.score.arm, record.score.trial))
        if index is None:
            records.append(record)
            continue
        records.append(
            dataclasses.replace(
                record,
                usage=index.usage,
                cost=index.cost,
                transcript=results_layout.trial_transcript(folder, index),
                ledger=results_layout.trial_ledger(folder, index),
            )
        )
    return dataclasses.replace(results, trials=records, arm_costs=document.arms, partial=document.partial)


def load_from_cluster(eval_name: str, namespace: str | None, kubeconfig: Path | None) -> EvalResults:
    import urllib3
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        api_client = config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
        if namespace is None:
            _, active = config.list_kube_config_contexts(config_file=str(kubeconfig) if kubeconfig else None)
            namespace = (active or {}).get("context", {}).get("namespace") or "default"
    except (ConfigException, OSError) as error:
        raise ResultsError(f"cannot load the kubeconfig: {error}") from error
    api = client.CustomObjectsApi(api_client)
    try:
        obj = api.get_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, eval_name)
    except ApiException as error:
        if error.status == 404:
            raise ResultsError(f"ReplicationEval {namespace}/{eval_name} not found") from error
        raise ResultsError(
            f"reading ReplicationEval {namespace}/{eval_name} failed: {error.reason}"
        ) from error
    except (OSError, urllib3.exceptions.HTTPError) as error:
        raise ResultsError(f"cannot reach the API server: {error}") from error
    finally:
        api_client.close()
    if not isinstance(obj, Mapping):
        raise ResultsError(f"ReplicationEval {namespace}/{eval_name}: unexpected answer from the API server")
    return from_object(obj)
