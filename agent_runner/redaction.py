"""Remove secrets from everything that is written down: known values and token-shaped text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from agentmatrix.cluster import kubeconfig as kubeconfig_file

REDACTED = "[REDACTED]"

# Shapes of secrets that may turn up in model replies or command output (for example
# `kubectl config view --raw`, or a ServiceAccount token read by the agent).
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),  # JWT
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # OpenAI-style API keys
    re.compile(
        r"(?i)((?:token|password|client-key-data|client-certificate-data|api[_-]?key)"
        r"\"?\s*[:=]\s*\"?)([^\s\"',}]{8,})"
    ),
)


def kubeconfig_secrets(path: Path) -> list[str]:
    """Credential values in a kubeconfig (tokens, passwords, client keys and certificates)."""
    try:
        data = kubeconfig_file.load(path)
    except (OSError, yaml.YAMLError):
        return []
    found: list[str] = []
    for entry in (data or {}).get("users") or []:
        user = (entry or {}).get("user") or {}
        for key in ("token", "password", "client-key-data", "client-certificate-data"):
            value = user.get(key)
            if isinstance(value, str) and value:
                found.append(value)
    return found


class Redactor:
    def __init__(self, secrets: list[str] | None = None) -> None:
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted({s for s in (secrets or []) if len(s) >= 4}, key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            if pattern.groups >= 1:
                value = pattern.sub(lambda m: m.group(1) + REDACTED, value)
            else:
                value = pattern.sub(REDACTED, value)
        return value

    def value(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
