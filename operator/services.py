"""What every eval of one operator process shares: settings, the API client, the runner host,
the cluster-wide workload watches, the local model server, the node count."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmatrix.api import names
from agentmatrix.kube import Kube, KubeAccess
from agentmatrix.operator.drivers.process import DiscoveryCache, RunnerHost
from agentmatrix.operator.sandbox_watch import SandboxWatch

NODE_COUNT_TTL_SECONDS = 30.0


@dataclass
class OperatorSettings:
    work_dir: Path
    ledger_path: Path
    driver: str = "process"  # process | pod
    driver_image: str | None = None
    kubectl: str | None = None
    sandbox_pod_quota: int = 200
    keep_sandboxes: bool = False


@dataclass
class Services:
    """What every eval of this operator process shares."""

    kube: Kube
    kube_access: KubeAccess
    settings: OperatorSettings
    on_status: Callable[[str, str, Mapping[str, Any]], None] | None = None  # (eval, namespace, status)
    # (eval, namespace, arm, trial, effective copies, N_req): every change seen in a running trial
    on_copies: Callable[[str, str, str, int, int, int], None] | None = None
    runner_host: RunnerHost = field(default_factory=RunnerHost)
    discovery_cache: DiscoveryCache = field(default_factory=DiscoveryCache)
    _local_model: str | None = None
    _local_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _nodes: tuple[float, int, bool] | None = None  # (monotonic time listed, count, a real node?)
    _sandbox_watch: SandboxWatch | None = None

    @property
    def sandbox_watch(self) -> SandboxWatch:
        """The cluster-wide workload watches every trial's sandbox is followed through."""
        if self._sandbox_watch is None:
            self._sandbox_watch = SandboxWatch(Kube(self.kube_access))
        return self._sandbox_watch

    async def _list_nodes(self) -> tuple[float, int, bool]:
        """The cluster's nodes, listed at most every NODE_COUNT_TTL_SECONDS (not once a trial)."""
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > NODE_COUNT_TTL_SECONDS:
            nodes = await self.kube.list("/api/v1/nodes")
            real = any(
                (n.get("metadata", {}).get("labels") or {}).get(names.LABEL_NODE_KIND) == names.NODE_KIND_REAL
                for n in nodes
            )
            self._nodes = (now, len(nodes), real)
        return self._nodes

    async def node_count(self) -> int:
        return (await self._list_nodes())[1]

    async def has_real_node(self) -> bool:
        """Whether a node runs containers (`cluster up --real-node`): the agent's workload goes there."""
        return (await self._list_nodes())[2]

    async def close(self) -> None:
        await self.runner_host.close()
        if self._sandbox_watch is not None:
            await self._sandbox_watch.close()
        await self.kube.close()

    async def local_model_url(self) -> str:
        async with self._local_lock:
            if self._local_model is None:
                from agentmatrix.agent_runner.local_model import ensure_local_model

                self._local_model = await asyncio.to_thread(ensure_local_model)
            return self._local_model
