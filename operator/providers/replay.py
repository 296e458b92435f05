"""`replay`: a scripted agent; the runner plays `spec.model.replay` with its own replay server."""

from __future__ import annotations

from agentmatrix.api.replicationeval import ModelSpec
from agentmatrix.operator.providers.base import ModelAccess, ProviderContext


class Replay:
    def label(self, model: ModelSpec) -> str:
        return "replay"

    async def access(self, model: ModelSpec, context: ProviderContext) -> ModelAccess:
        return ModelAccess(base_url=None, model_name=None)
