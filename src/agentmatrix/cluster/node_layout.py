"""Where the real node keeps its state, and the names it gives the host and the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentmatrix.api import names

NODE_NAME = "agentmatrix-node"
BRIDGE = "agentmatrix0"
POD_SUBNET = "10.244.254.0/24"
GATEWAY = "10.244.254.1"
KUBERNETES_SERVICE_IP = "10.96.0.1"
TAINT_KEY = names.TAINT_REAL_NODE
NODE_LABEL = names.LABEL_NODE_KIND  # names.NODE_KIND_REAL on this node
CGROUP_ROOT = "agentmatrix-node"
STATE_ENTRY = "node"  # the node's directory inside the cluster's state directory
CHAIN_INPUT = "AGENTMATRIX-NODE-IN"
CHAIN_FORWARD = "AGENTMATRIX-NODE-FWD"
CHAIN_DNAT = "AGENTMATRIX-NODE-DNAT"
CNI_BIN_DIR = Path("/usr/lib/cni")

NODE_TOLERATION: dict[str, str] = {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
NODE_SELECTOR: dict[str, str] = {NODE_LABEL: names.NODE_KIND_REAL}


def node_dir(state_dir: Path) -> Path:
    return state_dir / STATE_ENTRY


@dataclass(frozen=True)
class NodePaths:
    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "host.json"

    @property
    def pids(self) -> Path:
        return self.root / "processes.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"


def ctr_command(state_dir: Path) -> list[str]:
    return ["ctr", "--address", str(NodePaths(node_dir(state_dir)).containerd_socket)]
