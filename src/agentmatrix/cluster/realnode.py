"""A real node for the local control plane: containerd, runc, the CNI bridge and a kubelet.

Pods on it run as containers. The node is tainted, so only pods that tolerate
`agentmatrix.dev/real-node` land on it and kwok nodes keep everything else.

Networking: pods sit on the bridge `agentmatrix0` (10.244.254.0/24, the host is .1). The API
server stays bound to 127.0.0.1; pod traffic for the `kubernetes` Service (10.96.0.1:443) and for
the gateway's API-server port is DNATed to 127.0.0.1, which the kernel allows for packets from
the bridge only (`route_localnet` on that one interface). No kube-proxy: one Service needs one
rule, which is simpler to own and undo than kube-proxy's chains. Pods may reach the API server
and each other and nothing else on the host or beyond it.

Everything the node changes on the host is recorded before it starts and undone at `down`
(`agentmatrix.cluster.hostchanges`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from agentmatrix.api import names
from agentmatrix.cluster import binaries, hostchanges, images, kubeconfig, node_config, oci, pki, processes
from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.cluster.errors import ClusterError
from agentmatrix.cluster.health import wait_for
from agentmatrix.cluster.node_layout import (
    BRIDGE,
    CGROUP_ROOT,
    CHAIN_DNAT,
    CHAIN_FORWARD,
    CHAIN_INPUT,
    CNI_BIN_DIR,
    GATEWAY,
    KUBERNETES_SERVICE_IP,
    NODE_LABEL,
    NODE_NAME,
    POD_SUBNET,
    NodePaths,
    ctr_command,
    node_dir,
)

# PersistentVolumes the node offers (hostPath, Retain: a released one is not reused).
VOLUME_PREFIX = "agentmatrix-node-volume-"
VOLUME_COUNT = 8
VOLUME_SIZE = "10Gi"  # what a claim may ask for; hostPath enforces no size

# What a real node allots its pods (the rest of the machine is reserved for everything else).
DEFAULT_CPU = "1"
DEFAULT_MEMORY = "2Gi"

# Debian package of each program the node runs.
PREREQUISITES = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    str(CNI_BIN_DIR / "bridge"): "containernetworking-plugins",
    str(CNI_BIN_DIR / "host-local"): "containernetworking-plugins",
    str(CNI_BIN_DIR / "loopback"): "containernetworking-plugins",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "nft": "nftables",
    "ip": "iproute2",
    "umoci": "umoci",
    "gcc": "gcc",
}

Progress = Callable[[str], None]

ROOT_NEEDED = "a real node needs root (containerd, cgroups, iptables)"


def require_root() -> None:
    if os.geteuid() != 0:
        raise ClusterError(
            f"{ROOT_NEEDED}: run `sudo agentmatrix cluster up --real-node`, or leave out --real-node "
            "for kwok nodes"
        )


def unavailable(state_dir: Path | None = None) -> str | None:
    """Why a real node cannot start here, in one line naming what to install or how to run (None:
    it can): no root, a missing Debian package, no kubelet, or the one real node of this host
    already running for another cluster than the one in `state_dir`."""
    if os.geteuid() != 0:
        return f"{ROOT_NEEDED}: run as root (sudo)"
    missing = sorted({package for program, package in PREREQUISITES.items() if not _installed(program)})
    if missing:
        packages = " ".join(missing)
        return f"a real node needs the Debian packages {packages}: apt-get install {packages}"
    try:
        binaries.find_node()
    except binaries.BuildError as exc:
        return str(exc)
    if Path("/sys/class/net", BRIDGE).exists():
        owner = Path("/sys/class/net", BRIDGE, "ifalias").read_text().strip() or "unknown"
        if state_dir is None or owner != str(state_dir.resolve()):
            return (
                f"a real node already runs on this host (cluster state {owner}); "
                f"stop it with `agentmatrix cluster down --state-dir {owner}`"
            )
    return None


def check_prerequisites() -> None:
    """Refuse with one line naming what is missing: root, a Debian package, or the kubelet."""
    require_root()
    reason = unavailable()
    if reason is not None:
        raise ClusterError(reason)


def _installed(program: str) -> bool:
    if program.startswith("/"):
        return os.access(program, os.X_OK)
    return shutil.which(program) is not None


def _run(*cmd: str) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
    return result.stdout


def _api_port(cluster: LocalCluster) -> int:
    return int(cluster.server.rsplit(":", 1)[1])


def _make_certs(cluster: LocalCluster, paths: NodePaths) -> Path:
    """The kubelet's client certificate (its node identity), serving certificate and kubeconfig."""
    ca = pki.CertPair(cluster.state_dir / "pki" / "ca.crt", cluster.state_dir / "pki" / "ca.key")
    directory = paths.root / "pki"
    client = pki.issue(
        ca,
        directory,
        "kubelet-client",
        f"system:node:{NODE_NAME}",
        organizations=("system:nodes",),
        client=True,
    )
    pki.issue(
        ca, directory, "kubelet", NODE_NAME, dns_names=(NODE_NAME,), ip_addresses=(GATEWAY,), server=True
    )
    return kubeconfig.write(
        paths.root / "kubelet.kubeconfig",
        server=cluster.server,
        ca_file=ca.cert,
        user=f"system:node:{NODE_NAME}",
        client_cert=client.cert,
        client_key=client.key,
    )


def _setup_network(journal: hostchanges.Journal, api_port: int) -> None:
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    journal.add_interface(BRIDGE)
    _run("ip", "link", "set", BRIDGE, "alias", str(journal.path.parent.parent))
    _run("ip", "addr", "add", f"{GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # Lets the DNAT below deliver pod packets to 127.0.0.1; this interface only, gone with it.
    hostchanges.set_sysctl(f"net.ipv4.conf.{BRIDGE}.route_localnet", "1")
    ipt = hostchanges.iptables
    target = f"127.0.0.1:{api_port}"
    ipt("iptables", "-t", "nat", "-N", CHAIN_DNAT)
    for destination, port in ((KUBERNETES_SERVICE_IP, 443), (GATEWAY, api_port)):
        match = ["-d", f"{destination}/32", "-p", "tcp", "--dport", str(port)]
        ipt("iptables", "-t", "nat", "-A", CHAIN_DNAT, *match, "-j", "DNAT", "--to-destination", target)
    ipt("iptables", "-t", "nat", "-I", "PREROUTING", "1", "-i", BRIDGE, "-j", CHAIN_DNAT)
    # From the bridge, the host answers only the API server (DNATed) and replies to its own
    # connections (the kubelet's probes, the API server's calls to pods).
    ipt("iptables", "-N", CHAIN_INPUT)
    ipt(
        "iptables",
        "-A",
        CHAIN_INPUT,
        "-m",
        "conntrack",
        "--ctstate",
        "ESTABLISHED,RELATED,DNAT",
        "-j",
        "RETURN",
    )
    ipt("iptables", "-A", CHAIN_INPUT, "-j", "DROP")
    ipt("iptables", "-I", "INPUT", "1", "-i", BRIDGE, "-j", CHAIN_INPUT)
    # Pods talk among themselves on the bridge; nothing is forwarded off it or onto it.
    ipt("iptables", "-N", CHAIN_FORWARD)
    ipt("iptables", "-A", CHAIN_FORWARD, "-i", BRIDGE, "-o", BRIDGE, "-j", "RETURN")
    ipt("iptables", "-A", CHAIN_FORWARD, "-j", "DROP")
    ipt("iptables", "-I", "FORWARD", "1", "-i", BRIDGE, "-j", CHAIN_FORWARD)
    ipt("iptables", "-I", "FORWARD", "1", "-o", BRIDGE, "-j", CHAIN_FORWARD)
    ipt("ip6tables", "-N", CHAIN_INPUT)
    ipt("ip6tables", "-A", CHAIN_INPUT, "-j", "DROP")
    ipt("ip6tables", "-I", "INPUT", "1", "-i", BRIDGE, "-j", CHAIN_INPUT)


def _node_ready(cluster: LocalCluster) -> bool:
    out = cluster.kubectl(
        "get",
        "node",
        NODE_NAME,
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        check=False,
    )
    return out.returncode == 0 and out.stdout.strip() == "True"


def _publish_api_endpoint(cluster: LocalCluster, api_port: int) -> None:
    """The `kubernetes` Service's endpoint as pods reach it: the gateway and the API server's port."""
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "agentmatrix",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [GATEWAY], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
    }
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(slice_))


def _volume(index: int, directory: Path) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{VOLUME_PREFIX}{index}", "labels": {NODE_LABEL: names.NODE_KIND_REAL}},
        "spec": {
            "capacity": {"storage": VOLUME_SIZE},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "volumeMode": "Filesystem",
            "hostPath": {"path": str(directory), "type": "Directory"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": NODE_LABEL, "operator": "In", "values": [names.NODE_KIND_REAL]}
                            ]
                        }
                    ]
                }
            },
        },
    }


def _provide_volumes(cluster: LocalCluster, paths: NodePaths) -> None:
    """PersistentVolumes on the node's disk for claims without a storage class (no provisioner runs
    here): directories below the node's state, gone at `down`. Any user may write them, as pods
    run as users of their own and a hostPath volume takes no fsGroup."""
    volumes = []
    for index in range(VOLUME_COUNT):
        directory = paths.volumes / str(index)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o1777)
        volumes.append(json.dumps(_volume(index, directory)))
    cluster.kubectl("apply", "--server-side", "-f", "-", input="\n---\n".join(volumes))


def recorded_processes(state_dir: Path) -> list[processes.RecordedProcess]:
    return processes.load(NodePaths(node_dir(state_dir)).pids)


def running(state_dir: Path) -> bool:
    procs = recorded_processes(state_dir)
    return bool(procs) and all(processes.is_alive(p) for p in procs)


def up(
    cluster: LocalCluster,
    progress: Progress | None = None,
    *,
    cpu: str = DEFAULT_CPU,
    memory: str = DEFAULT_MEMORY,
) -> None:
    """Start the real node and wait until it is Ready (or reuse the one running for this cluster)."""
    say: Progress = progress or (lambda _msg: None)
    if running(cluster.state_dir) and _node_ready(cluster):
        say(f"reusing the running real node {NODE_NAME}")
        return
    down(cluster.state_dir)
    check_prerequisites()
    kubelet = binaries.find_node()
    paths = NodePaths(node_dir(cluster.state_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    journal = hostchanges.begin(paths.journal, CGROUP_ROOT, [paths.root])
    api_port = _api_port(cluster)
    procs: list[processes.RecordedProcess] = []

    def record(proc: processes.RecordedProcess) -> None:
        hostchanges.join_cgroup(CGROUP_ROOT, proc.pid)
        procs.append(proc)
        processes.save(paths.pids, procs)

    try:
        kubelet_kubeconfig = _make_certs(cluster, paths)
        say(f"real node: bridge {BRIDGE} ({POD_SUBNET}), iptables chains AGENTMATRIX-NODE-*")
        _setup_network(journal, api_port)
        hostchanges.make_cgroup_root(CGROUP_ROOT)
        say("real node: starting containerd")
        containerd_config = node_config.containerd_config(paths)
        record(processes.spawn("containerd", ["containerd", "--config", str(containerd_config)], paths.logs))
        wait_for("containerd's socket", paths.containerd_socket.exists, 30, procs, paths.logs)
        ctr = ctr_command(cluster.state_dir)
        wait_for(
            "containerd to answer",
            lambda: subprocess.run([*ctr, "version"], capture_output=True).returncode == 0,
            30,
            procs,
            paths.logs,
        )
        images.ensure_small(say)
        archives = images.built_archives()
        say(f"real node: importing {len(archives)} images ({', '.join(a.name for a in archives)})")
        for archive in archives:
            oci.load(ctr, archive)
        say("real node: starting the kubelet")
        config = node_config.kubelet_config(paths, cluster, cpu, memory)
        record(
            processes.spawn(
                "kubelet",
                [
                    str(kubelet),
                    f"--config={config}",
                    f"--kubeconfig={kubelet_kubeconfig}",
                    f"--root-dir={paths.kubelet_root}",
                    f"--cert-dir={paths.root / 'pki'}",
                    f"--hostname-override={NODE_NAME}",
                    f"--node-ip={GATEWAY}",
                    f"--node-labels={NODE_LABEL}={names.NODE_KIND_REAL}",
                    "--v=1",
                ],
                paths.logs,
            )
        )
        wait_for(f"node {NODE_NAME} Ready", lambda: _node_ready(cluster), 120, procs, paths.logs)
        _publish_api_endpoint(cluster, api_port)
        _provide_volumes(cluster, paths)
    except BaseException as exc:
        try:
            down(cluster.state_dir)
        except ClusterError as cleanup:
            exc.add_note(f"and undoing the node's changes failed: {cleanup}")
        raise
    say(f"real node {NODE_NAME} Ready (containerd, runc, pods on {POD_SUBNET})")


def down(state_dir: Path) -> list[str]:
    """Stop the node's processes and everything they started, and undo its changes to the host.
    Returns what was stopped."""
    paths = NodePaths(node_dir(state_dir))
    if not paths.root.exists():
        return []
    procs = processes.load(paths.pids)
    stopped = [p.name for p in reversed(procs) if processes.is_alive(p)]
    for proc in reversed(procs):  # the kubelet first, then containerd
        processes.stop(proc)
    journal = hostchanges.Journal.load(paths.journal)
    problems: list[str] = []
    if journal is not None:
        hostchanges.undo(journal, problems)
        for destination in (KUBERNETES_SERVICE_IP, GATEWAY):
            subprocess.run(["conntrack", "-D", "--orig-dst", destination], capture_output=True)
    if any(p == str(paths.root) or p.startswith(f"{paths.root}/") for p in hostchanges.mount_points()):
        problems.append(f"mounts remain under {paths.root}; it was left in place")
    else:
        shutil.rmtree(paths.root, ignore_errors=True)
    if problems:
        raise ClusterError("the real node's changes were not all undone: " + "; ".join(problems))
    return stopped
