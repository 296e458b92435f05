"""`local`: the bundled small model, served once per operator (or at `spec.model.endpoint`)."""

from __future__ import annotations

import asyncio

from agentmatrix.api.replicationeval import ModelSpec
from agentmatrix.operator.providers.base import ModelAccess, ProviderContext


class Local:
    def label(self, model: ModelSpec) -> str:
        return model.name or served_name()

    async def access(self, model: ModelSpec, context: ProviderContext) -> ModelAccess:
        url = model.endpoint or await context.local_model_url()
        key = await asyncio.to_thread(served_key)
        return ModelAccess(base_url=url, model_name=model.name or served_name(), api_key=key)


def served_name() -> str:
    # Here, not at the top: the operator process does not load the agent runner's package.
    from agentmatrix.agent_runner.local_model import MODEL_NAME

    return MODEL_NAME


def served_key() -> str | None:
    """The random key the local model server was started with (None for a server without one)."""
    from agentmatrix.agent_runner.local_model import api_key

    return api_key()
