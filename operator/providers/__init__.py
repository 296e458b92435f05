"""Where an agent's model comes from (`spec.model.provider`), one module each, behind `Provider`.

Adding one: a module with a `Provider`, its line in `PROVIDERS`, and its word in
`agentmatrix.api.vocabulary.Provider` and the CRD's enum (the API's contract).
"""

from __future__ import annotations

from collections.abc import Mapping

from agentmatrix.api.replicationeval import ModelSpec
from agentmatrix.api.vocabulary import Provider as ProviderName
from agentmatrix.operator.providers.base import ModelAccess, Provider, ProviderContext
from agentmatrix.operator.providers.local import Local
from agentmatrix.operator.providers.openai_compatible import OpenAiCompatible
from agentmatrix.operator.providers.replay import Replay

PROVIDERS: Mapping[ProviderName, Provider] = {
    "openai": OpenAiCompatible(),
    "replay": Replay(),
    "local": Local(),
}


def of(model: ModelSpec) -> Provider:
    return PROVIDERS[model.provider]


__all__ = ["PROVIDERS", "ModelAccess", "Provider", "ProviderContext", "of"]
