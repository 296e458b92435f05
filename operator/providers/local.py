"""`local`: the bundled small model, served once per operator (or at `spec.model.endpoint`)."""

from __future__ import annotations

from agentmatrix.agent_runner.local_model import MODEL_NAME
from agentmatrix.api.replicationeval import ModelSpec
from agentmatrix.operator.providers.base import ModelAccess, ProviderContext


class Local:
    def label(self, model: ModelSpec) -> str:
        return model.name or MODEL_NAME

    async def access(self, model: ModelSpec, context: ProviderContext) -> ModelAccess:
        url = model.endpoint or await context.local_model_url()
        return ModelAccess(base_url=url, model_name=model.name or MODEL_NAME)
