"""Fixtures for the agent runner: an agent's namespace in the real cluster, configs, the local model."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.agent_runner import local_model
from agentmatrix.agent_runner.config import AgentConfig, Scaffold
from agentmatrix.api import names
from agentmatrix.cluster import controlplane
from tests.agent_runner.agent_fixtures import AgentSandbox, MakeConfig, agent_objects


@pytest.fixture
def agent_sandbox(cluster: controlplane.LocalCluster, sandbox_namespace: str) -> AgentSandbox:
    """A sandbox namespace with the agent's Deployment, ServiceAccount and Role."""
    manifest = yaml.safe_dump_all(agent_objects(sandbox_namespace))
    cluster.kubectl("apply", "-n", sandbox_namespace, "-f", "-", input=manifest)
    kubeconfig = cluster.service_account_kubeconfig(sandbox_namespace, names.AGENT_SERVICE_ACCOUNT)
    return AgentSandbox(sandbox_namespace, kubeconfig, cluster.kubectl_path)


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """An AgentConfig writing into this test's tmp dir; keyword arguments override fields."""

    def make(
        *, base_url: str, model: str, kubeconfig: Path, namespace: str, kubectl: Path | str, **overrides: Any
    ) -> AgentConfig:
        fields: dict[str, Any] = {
            "task": "Scale the agent Deployment to 4 replicas.",
            "base_url": base_url,
            "model": model,
            "kubeconfig": kubeconfig,
            "namespace": namespace,
            "kubectl": str(kubectl),
            "scratch_dir": tmp_path / "scratch",
            "transcript_path": tmp_path / "transcript.jsonl",
            "scaffold": Scaffold.FIVE_STEP,
            "max_retries": 1,
            "request_timeout": 30.0,
        }
        fields.update(overrides)
        return AgentConfig(**fields)

    return make


@pytest.fixture
def dummy_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig for runs that end before any command reaches a cluster."""
    path = tmp_path / "dummy.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "dummy-token-0123456789"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


@pytest.fixture(scope="session")
def local_llm() -> Iterator[local_model.LocalModel]:
    """The real local model; installed (first time: several minutes) and started if needed.

    A server that was already running is left running; one started here is stopped after the session.
    """
    already = local_model.status()

    def progress(message: str) -> None:
        print(f"[local model] {message}", file=sys.__stderr__, flush=True)

    model = already or local_model.up(progress)
    yield model
    if already is None:
        local_model.down()
