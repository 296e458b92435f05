"""`openai`: any OpenAI-compatible endpoint; the key, if any, from the Secret in the eval's namespace."""

from __future__ import annotations

import base64

from agentmatrix.api.replicationeval import ModelSpec
from agentmatrix.operator.providers.base import ModelAccess, ProviderContext


class OpenAiCompatible:
    def label(self, model: ModelSpec) -> str:
        return model.name or model.provider

    async def access(self, model: ModelSpec, context: ProviderContext) -> ModelAccess:
        assert model.endpoint is not None and model.name is not None  # the CRD requires both
        key = await api_key(model, context)
        return ModelAccess(base_url=model.endpoint, model_name=model.name, api_key=key)


async def api_key(model: ModelSpec, context: ProviderContext) -> str | None:
    reference = model.api_key_secret_ref
    if reference is None:
        return None
    secret = await context.kube.get(f"/api/v1/namespaces/{context.eval_namespace}/secrets/{reference.name}")
    if secret is None:
        raise RuntimeError(f"Secret {reference.name!r} (spec.model.apiKeySecretRef) not found")
    data = (secret.get("data") or {}).get(reference.key)
    if data is None:
        raise RuntimeError(f"Secret {reference.name!r} has no key {reference.key!r}")
    return base64.b64decode(data).decode().strip()
