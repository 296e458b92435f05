"""What a model provider gives a trial: where the model is (`ModelAccess`), and its name for
`kubectl get reval`'s Model column."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from agentmatrix.api.replicationeval import ModelSpec
from agentmatrix.kube import Kube


@dataclass(frozen=True)
class ModelAccess:
    """Where the agent's model is for this trial, and how to release it afterwards."""

    base_url: str | None  # None: the runner plays the replay script itself
    model_name: str | None
    api_key: str | None = None
    release: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class ProviderContext:
    kube: Kube
    eval_namespace: str  # where spec.model.apiKeySecretRef's Secret is
    local_model_url: Callable[[], Awaitable[str]]  # the operator's shared local model server


class Provider(Protocol):
    def label(self, model: ModelSpec) -> str: ...

    async def access(self, model: ModelSpec, context: ProviderContext) -> ModelAccess: ...
