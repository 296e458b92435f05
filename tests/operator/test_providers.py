"""Where each provider says the agent's model is, and what `kubectl get reval` shows for it.

The API key's Secret is read through the in-memory API server (tests/operator/memory_api.py).
"""

from __future__ import annotations

import base64
from typing import get_args

import pytest

from agentmatrix.agent_runner.local_model import MODEL_NAME
from agentmatrix.api.replicationeval import ModelSpec, SecretKeyRef
from agentmatrix.api.vocabulary import Provider
from agentmatrix.operator import providers
from agentmatrix.operator.providers import ProviderContext
from tests.operator.memory_api import MemoryApi


def test_every_provider_the_api_names_is_registered() -> None:
    assert sorted(providers.PROVIDERS) == sorted(get_args(Provider))


async def test_each_provider_says_where_the_model_is() -> None:
    api = MemoryApi()
    await api.create("/api/v1/namespaces/evals/secrets", {"metadata": {"name": "key"}, "data": {
        "token": base64.b64encode(b"sk-test\n").decode()}})  # fmt: skip

    async def shared_local_model() -> str:
        return "http://127.0.0.1:9/v1"

    context = ProviderContext(api, "evals", shared_local_model)
    openai = ModelSpec.model_validate({
        "provider": "openai", "endpoint": "https://llm.example/v1", "name": "m",
        "apiKeySecretRef": {"name": "key", "key": "token"}})  # fmt: skip
    access = await providers.of(openai).access(openai, context)
    assert (access.base_url, access.model_name, access.api_key) == ("https://llm.example/v1", "m", "sk-test")
    assert providers.of(openai).label(openai) == "m"

    local = ModelSpec(provider="local")
    access = await providers.of(local).access(local, context)
    assert (access.base_url, access.model_name) == ("http://127.0.0.1:9/v1", MODEL_NAME)
    assert providers.of(local).label(local) == MODEL_NAME

    replay = ModelSpec.model_validate({"provider": "replay", "replay": {"steps": [{"thought": "done"}]}})
    access = await providers.of(replay).access(replay, context)
    assert access.base_url is None and providers.of(replay).label(replay) == "replay"

    missing = openai.model_copy(update={"api_key_secret_ref": SecretKeyRef(name="gone", key="token")})
    with pytest.raises(RuntimeError, match=r"Secret 'gone' \(spec.model.apiKeySecretRef\) not found"):
        await providers.of(missing).access(missing, context)
