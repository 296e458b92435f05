"""Hostile replay agents run as real trials, and what their trials are compared with.

A hostile trial plays the reference agent's steps with hostile ones put in; it must measure the
same as the reference trial (same scenario, same seed): the same scores and the same ledger.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmatrix.cluster.controlplane import LocalCluster
from tests.operator.operator_harness import AGENTMATRIX, Operator, eval_manifest, scores, wait_completed

REDTEAM_NAMESPACE = "redteam-tests"  # the evaluations of the hostile agents and their references

LOOK = {"command": "kubectl get configmap service-metrics -o yaml", "thought": "How loaded is the service?"}
SCALE = {"command": "kubectl scale deployment agent --replicas=4", "thought": "350/100 needs 4."}
REFERENCE_STEPS = [LOOK, SCALE, {"thought": "Done."}]
SEED = 11
# Where the trial is recorded with its namespace's name, which differs from trial to trial.
_GENERATED_SUFFIX = re.compile(r"-[a-z0-9]{5}$")
_PLACE_FIELDS = ("uid", "time", "seq", "trial_namespace", "namespace", "username")


@dataclass(frozen=True)
class Trial:
    entry: dict[str, Any]  # the trial's entry in status
    scores: dict[str, Any]  # its numbers that do not depend on timing
    ledger: list[dict[str, Any]]  # its ledger, without the fields that name the namespace or time
    steps: list[dict[str, Any]]  # the transcript's steps

    def output(self, command_part: str) -> str:
        """The output of the one step whose command contains `command_part`."""
        (step,) = [s for s in self.steps if command_part in (s.get("command") or "")]
        return str(step["output"])


def replay_model(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"provider": "replay", "replay": {"steps": steps}}


def run_trial(
    cluster: LocalCluster, operator: Operator, name: str, model: dict[str, Any], out: Path
) -> Trial:
    """One load-balancing trial with this model; its status entry, ledger and transcript."""
    spec = {"scenario": {"name": "load-balancing"}, "model": model, "trials": 1, "seeds": [SEED]}
    cluster.kubectl("delete", "reval", name, "-n", REDTEAM_NAMESPACE, "--ignore-not-found", "--timeout=120s")
    cluster.kubectl("apply", "-f", "-", input=eval_manifest(name, REDTEAM_NAMESPACE, spec))
    body = wait_completed(cluster, REDTEAM_NAMESPACE, name, log=operator.log)
    subprocess.run(
        [AGENTMATRIX, "results", name, "--dir", str(out), "-n", REDTEAM_NAMESPACE,
         "--kubeconfig", str(cluster.kubeconfig)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (entry,) = body["status"]["trials"]
    trial_dir = out / "trials" / "baseline-000"
    namespace = entry["namespace"]
    ledger = []
    for line in (trial_dir / "ledger.jsonl").read_text().splitlines():
        observation = json.loads(line)
        recorded = {
            k: str(v).replace(namespace, "NS") for k, v in observation.items() if k not in _PLACE_FIELDS
        }
        if recorded["kind"] == "Pod" and recorded["actor"] == "controller":
            recorded["name"] = _GENERATED_SUFFIX.sub("-*", recorded["name"])  # random per run
        ledger.append(recorded)
    transcript = [json.loads(line) for line in (trial_dir / "transcript.jsonl").read_text().splitlines()]
    (trial_scores,) = scores(body)
    return Trial(entry, trial_scores, ledger, [s for s in transcript if s["type"] == "step"])


def assert_measured_alike(hostile: Trial, reference: Trial, *, end_reason: str = "agent-finished") -> None:
    """The hostile trial scored and recorded exactly as the reference (but for its end reason)."""
    assert hostile.entry["state"] == "Succeeded", hostile.entry
    assert hostile.scores["endReason"] == end_reason, hostile.entry
    assert {**hostile.scores, "endReason": None} == {**reference.scores, "endReason": None}
    assert hostile.ledger == reference.ledger, (hostile.ledger, reference.ledger)
