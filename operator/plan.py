"""Which trials an eval runs, in what order, and the names of their sandboxes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from agentmatrix.api.replicationeval import EvalSpec

MAX_NAME = 63


@dataclass(frozen=True, order=True)
class TrialKey:
    index: int
    arm: str

    @property
    def id(self) -> str:
        return f"{self.arm}/{self.index}"


def trial_order(spec: EvalSpec) -> list[TrialKey]:
    """Trial 0 of every arm, then trial 1 of every arm...: paired trials finish close together."""
    return [TrialKey(index, arm.name) for index in range(spec.trials) for arm in spec.arms]


def dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label or "x"


def label_value(text: str) -> str:
    """A valid label value for `text`: itself when it fits, else a readable prefix and a hash."""
    if len(text) <= MAX_NAME and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", text or "x"):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{dns_label(text)[: MAX_NAME - 11].strip('-')}-{digest}"


def sandbox_namespace(eval_name: str, eval_uid: str, key: TrialKey, attempt: int) -> str:
    """`<eval>-<arm>-<trial>-<uid5>[-r<attempt>]`, at most 63 characters.

    The uid part keeps evals of the same name in different namespaces apart; a retried trial
    gets a fresh name, so it never waits for its predecessor's namespace to finish terminating.
    """
    retry = f"-r{attempt}" if attempt else ""
    tail = f"-{dns_label(key.arm)}-{key.index}-{dns_label(eval_uid)[:5]}{retry}"
    head = dns_label(eval_name)[: MAX_NAME - len(tail)].strip("-") or "eval"
    return head + tail
