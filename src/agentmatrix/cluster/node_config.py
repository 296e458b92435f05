"""The real node's configuration files: the CNI bridge, containerd and the kubelet."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agentmatrix.cluster import images, processes
from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.cluster.errors import ClusterError
from agentmatrix.cluster.node_layout import (
    BRIDGE,
    CGROUP_ROOT,
    CNI_BIN_DIR,
    GATEWAY,
    POD_SUBNET,
    TAINT_KEY,
    NodePaths,
)


def cni_config(paths: NodePaths) -> Path:
    conf_dir = paths.root / "cni" / "net.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "0.4.0",
        "name": "agentmatrix",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                # The gateway address is ours (set before the kubelet starts, as its node IP); the
                # plugin would otherwise also switch on IP forwarding, which nothing here needs.
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}],
                    "dataDir": str(paths.root / "cni" / "ipam"),
                },
            }
        ],
    }
    (conf_dir / "10-agentmatrix.conflist").write_text(json.dumps(conflist, indent=2))
    return conf_dir


def containerd_config(paths: NodePaths) -> Path:
    base = paths.root / "containerd"
    cni_conf = cni_config(paths)
    config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
# Plugins that would write outside the state directory, or that nothing here uses.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{base / "containerd.sock.ttrpc"}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  # The VM lacks CAP_SYS_RESOURCE: the pause container's oom_score_adj of -998 would fail.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{base / "runc"}"
"""
    path = base / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config)
    return path


def quantity_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def reserved(cpu: str, memory: str) -> dict[str, str]:
    """systemReserved that leaves the pods `cpu` cores and `memory`, the rest being the host's."""
    cores = os.cpu_count() or 1
    total = quantity_bytes(
        next(
            line.split()[1] + "Ki"
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
    )
    pods_memory = quantity_bytes(memory)
    pods_millicores = int(float(cpu) * 1000)
    if pods_millicores > cores * 1000 or pods_memory > total:
        raise ClusterError(
            f"the node cannot give pods {cpu} CPU and {memory}: the machine has {cores} cores and "
            f"{total // 1024**2} MiB"
        )
    return {
        "cpu": f"{cores * 1000 - pods_millicores}m",
        "memory": f"{(total - pods_memory) // 1024**2}Mi",
    }


POD_PIDS_LIMIT = 1024


def kubelet_config(paths: NodePaths, cluster: LocalCluster, cpu: str, memory: str) -> Path:
    port = processes.free_port()
    healthz = processes.free_port()
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz,
        "tlsCertFile": str(paths.root / "pki" / "kubelet.crt"),
        "tlsPrivateKeyFile": str(paths.root / "pki" / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(cluster.state_dir / "pki" / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        # The VM has cgroup v1 (hybrid); Kubernetes 1.36 refuses it unless told otherwise.
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(paths.root / "pod-logs"),
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        "systemReserved": reserved(cpu, memory),
        "enforceNodeAllocatable": ["pods"],
        # Images are imported, never pulled: garbage-collecting one would lose it for good.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "serializeImagePulls": False,
        "resolvConf": "",
        "maxPods": 110,
        # A fork bomb in one pod (the agent's shell, or a pod the agent made) cannot take the node's pids.
        "podPidsLimit": POD_PIDS_LIMIT,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
    }
    path = paths.root / "kubelet-config.json"
    path.write_text(json.dumps(config, indent=2))
    return path
