"""A local cluster's state directory: where it is by default, what `up` writes into it (and `down`
removes, nothing else), and where each part of the state lies."""

from __future__ import annotations

from pathlib import Path

from agentmatrix.cluster import binaries
from agentmatrix.cluster.errors import ClusterError

# Everything `up` writes into a state directory; `down` removes these and nothing else.
STATE_ENTRIES = frozenset(
    {
        "pki",
        "admission",
        "etcd",
        "logs",
        "processes.json",
        "cluster.json",
        "admin.kubeconfig",
        "controller-manager.kubeconfig",
        "scheduler.kubeconfig",
        "serviceaccounts",
        "node",  # a real node's state (agentmatrix.cluster.realnode)
    }
)


def default_state_dir() -> Path:
    return binaries.cache_dir() / "clusters" / "default"


def foreign_entries(state_dir: Path) -> list[str]:
    """What in `state_dir` a local cluster did not put there (sorted names)."""
    if not state_dir.is_dir():
        return []
    return sorted(entry.name for entry in state_dir.iterdir() if entry.name not in STATE_ENTRIES)


def refuse_foreign(state_dir: Path) -> None:
    strangers = foreign_entries(state_dir)
    if strangers:
        shown = ", ".join(strangers[:5]) + (", ..." if len(strangers) > 5 else "")
        raise ClusterError(
            f"{state_dir} is not a local cluster's state directory (it holds {shown}); "
            "give a new or empty directory"
        )


def state_paths(state_dir: Path) -> dict[str, Path]:
    return {
        "pki": state_dir / "pki",
        "admission": state_dir / "admission",
        "etcd": state_dir / "etcd",
        "logs": state_dir / "logs",
        "pids": state_dir / "processes.json",
        "meta": state_dir / "cluster.json",
    }
