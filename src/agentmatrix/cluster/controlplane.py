"""A real local control plane: etcd, kube-apiserver, controller manager, scheduler and kwok.

Everything binds to 127.0.0.1 on free ports, keeps its state in one directory, and is recorded
by pid so that `down` stops exactly what `up` started. etcd speaks only TLS and answers only
client certificates of its own CA, which signs nothing but etcd's and the API server's; the API
server presents a client certificate of another dedicated CA to every admission webhook
(`webhook_client_ca` is what a webhook must trust).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentmatrix.cluster import admission, binaries, kubeconfig, kwok, node_layout, pki, processes
from agentmatrix.cluster.certificates import make_certificates
from agentmatrix.cluster.controllers import spawn_controller_manager, spawn_scheduler
from agentmatrix.cluster.errors import ClusterError
from agentmatrix.cluster.etcd import spawn_etcd
from agentmatrix.cluster.health import api_get, wait_for
from agentmatrix.cluster.state_layout import STATE_ENTRIES, default_state_dir, refuse_foreign, state_paths

KWOK_NODE_COUNT = 2
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"

# The admission plugins of a production cluster, webhooks and CEL policies included.
ADMISSION_PLUGINS = ",".join(
    [
        "NamespaceLifecycle",
        "LimitRanger",
        "ServiceAccount",
        "NodeRestriction",
        "TaintNodesByCondition",
        "PodSecurity",
        "Priority",
        "DefaultTolerationSeconds",
        "DefaultStorageClass",
        "StorageObjectInUseProtection",
        "PersistentVolumeClaimResize",
        "RuntimeClass",
        "DefaultIngressClass",
        "MutatingAdmissionWebhook",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionWebhook",
        "ResourceQuota",
    ]
)

Progress = Callable[[str], None]


@dataclass
class LocalCluster:
    state_dir: Path
    binaries: binaries.Binaries
    server: str = ""
    procs: list[processes.RecordedProcess] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def webhook_client_ca(self) -> Path:
        """The CA of the client certificate the API server presents to admission webhooks."""
        return state_paths(self.state_dir)["pki"] / "webhook-client-ca.crt"

    @property
    def webhook_client(self) -> pki.CertPair:
        """The API server's client certificate toward admission webhooks."""
        directory = state_paths(self.state_dir)["pki"]
        return pki.CertPair(
            directory / "apiserver-webhook-client.crt", directory / "apiserver-webhook-client.key"
        )

    @property
    def etcd_url(self) -> str:
        """etcd's client URL (TLS; it refuses any caller without a client certificate of its CA)."""
        return str(json.loads(state_paths(self.state_dir)["meta"].read_text())["etcd"])

    @property
    def kubectl_path(self) -> Path:
        return self.binaries.kubectl

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.kubectl_path), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def service_account_kubeconfig(self, namespace: str, name: str, duration_seconds: int = 3600) -> Path:
        path = self.state_dir / "serviceaccounts" / f"{namespace}.{name}.kubeconfig"
        return kubeconfig.for_service_account(
            self.kubeconfig, namespace, name, path, duration_seconds=duration_seconds
        )


def _running(state_dir: Path) -> LocalCluster | None:
    """The cluster recorded in `state_dir`, if all its processes run and it answers /readyz."""
    paths = state_paths(state_dir)
    procs = processes.load(paths["pids"])
    if not procs or not paths["meta"].exists():
        return None
    if not all(processes.is_alive(p) for p in procs):
        return None
    meta = json.loads(paths["meta"].read_text())
    server = str(meta["server"])
    status, _ = api_get(state_dir, server, "/readyz")
    if status != 200:
        return None
    return LocalCluster(state_dir=state_dir, binaries=binaries.find(), server=server, procs=procs)


START_ATTEMPTS = 2


def up(
    state_dir: Path | None = None,
    *,
    bin_dir: Path | None = None,
    progress: Progress | None = None,
    nodes: int = KWOK_NODE_COUNT,
    real_node: bool = False,
) -> LocalCluster:
    """Start a cluster in `state_dir`, or reuse the one already running there. With `real_node`,
    a node that runs containers joins it (agentmatrix.cluster.realnode)."""
    from agentmatrix.cluster import realnode

    say: Progress = progress or (lambda _msg: None)
    if real_node:
        realnode.require_root()
    state_dir = (state_dir or default_state_dir()).resolve()
    existing = _running(state_dir)
    if existing is not None:
        say(f"reusing the running cluster in {state_dir} at {existing.server}")
        if real_node:
            realnode.up(existing, say)
        return existing
    if real_node and not realnode.running(state_dir):
        realnode.check_prerequisites()
    refuse_foreign(state_dir)
    bins = binaries.find(bin_dir)
    for attempt in range(1, START_ATTEMPTS + 1):
        down(state_dir)  # clears anything half-started from an earlier `up`
        try:
            return _start(state_dir, bins, say, nodes, real_node)
        except BaseException as exc:
            # Stop what this attempt started; its state and logs stay for a look.
            down(state_dir, keep_state=True)
            if not isinstance(exc, Exception) or attempt == START_ATTEMPTS or not _lost_a_port(state_dir):
                raise
            say("a port picked for the cluster was taken by another program meanwhile: starting again")
    raise AssertionError("unreachable")


def _lost_a_port(state_dir: Path) -> bool:
    """Whether a component could not bind its port: ports are picked free, then handed to the
    component, and another program on the host may take one in between."""
    logs = state_paths(state_dir)["logs"]
    return any("address already in use" in log.read_text(errors="replace") for log in logs.glob("*.log"))


def _start(
    state_dir: Path, bins: binaries.Binaries, say: Progress, nodes: int, real_node: bool
) -> LocalCluster:
    from agentmatrix.cluster import realnode

    paths = state_paths(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    ports = {
        name: processes.free_port()
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
    }
    server = f"https://127.0.0.1:{ports['apiserver']}"
    certs = make_certificates(state_dir, ports["apiserver"])
    admission_config = admission.write(paths["admission"], certs["apiserver-webhook-client"])
    pki_dir = paths["pki"]
    etcd_url = f"https://127.0.0.1:{ports['etcd']}"
    peer_url = f"https://127.0.0.1:{ports['etcd-peer']}"
    paths["meta"].write_text(json.dumps({"server": server, "etcd": etcd_url, "ports": ports}, indent=2))
    procs: list[processes.RecordedProcess] = []

    def record(proc: processes.RecordedProcess) -> None:
        procs.append(proc)
        processes.save(paths["pids"], procs)

    say("starting etcd")
    etcd_ports = (ports["etcd"], ports["etcd-peer"])
    record(spawn_etcd(bins["etcd"], paths["etcd"], certs, etcd_url, peer_url, paths["logs"], etcd_ports))
    say("starting kube-apiserver")
    record(
        processes.spawn(
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--etcd-cafile={certs['etcd-ca'].cert}",
                f"--etcd-certfile={certs['apiserver-etcd-client'].cert}",
                f"--etcd-keyfile={certs['apiserver-etcd-client'].key}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={certs['apiserver'].cert}",
                f"--tls-private-key-file={certs['apiserver'].key}",
                f"--client-ca-file={certs['ca'].cert}",
                f"--kubelet-client-certificate={certs['apiserver-kubelet-client'].cert}",
                f"--kubelet-client-key={certs['apiserver-kubelet-client'].key}",
                f"--service-account-key-file={pki_dir / 'service-accounts.pub'}",
                f"--service-account-signing-key-file={pki_dir / 'service-accounts.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={ADMISSION_PLUGINS}",
                f"--admission-control-config-file={admission_config}",
                "--allow-privileged=true",
                f"--cert-dir={pki_dir}",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
                # No kube-proxy routes a Service's ClusterIP: the API server calls webhooks (and
                # aggregated APIs) served by pods at their endpoints' addresses instead.
                "--enable-aggregator-routing=true",
                # A real node's name does not resolve; its InternalIP is where its kubelet listens.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--v=0",
            ],
            paths["logs"],
            (ports["apiserver"],),
        )
    )
    wait_for(
        "kube-apiserver /readyz",
        lambda: api_get(state_dir, server, "/readyz")[0] == 200,
        120,
        procs,
        paths["logs"],
    )
    say("starting kube-controller-manager, kube-scheduler and kwok")
    record(
        spawn_controller_manager(
            bins["kube-controller-manager"],
            state_dir,
            certs,
            SERVICE_CIDR,
            POD_CIDR,
            ports["controller-manager"],
            paths["logs"],
        )
    )
    record(spawn_scheduler(bins["kube-scheduler"], state_dir, ports["scheduler"], paths["logs"]))
    record(
        kwok.spawn_kwok(bins["kwok"], state_dir / "admin.kubeconfig", POD_CIDR, ports["kwok"], paths["logs"])
    )
    cluster = LocalCluster(state_dir=state_dir, binaries=bins, server=server, procs=procs)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=kwok.nodes_yaml(nodes))

    def ready() -> bool:
        out = cluster.kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name", check=False)
        nodes_ready = cluster.kubectl(
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
            check=False,
        )
        return out.returncode == 0 and nodes_ready.stdout.split().count("True") >= nodes

    wait_for("default ServiceAccount and Ready kwok nodes", ready, 120, procs, paths["logs"])
    if real_node:
        realnode.up(cluster, say)
    say(f"cluster ready at {server}; kubeconfig {cluster.kubeconfig}")
    return cluster


def down(state_dir: Path | None = None, *, keep_state: bool = False) -> list[str]:
    """Stop the processes `up` recorded in `state_dir` and remove the state. Returns what was stopped.

    Only what `up` writes is removed; a directory that holds anything else is refused, untouched."""
    from agentmatrix.cluster import realnode

    state_dir = (state_dir or default_state_dir()).resolve()
    refuse_foreign(state_dir)
    node_error: ClusterError | None = None
    try:
        stopped = realnode.down(state_dir)
    except ClusterError as exc:  # the control plane still stops; the node's state stays for a look
        stopped, node_error = [], exc
    paths = state_paths(state_dir)
    procs = processes.load(paths["pids"])
    # Reverse start order: clients first, etcd last.
    for proc in reversed(procs):
        if processes.is_alive(proc):
            stopped.append(proc.name)
        processes.stop(proc)
    if not keep_state and state_dir.exists():
        for name in STATE_ENTRIES - ({node_layout.STATE_ENTRY} if node_error else set()):
            entry = state_dir / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
        with contextlib.suppress(OSError):
            state_dir.rmdir()
    if node_error is not None:
        raise node_error
    return stopped


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    running: bool
    ports: tuple[int, ...]


@dataclass(frozen=True)
class ClusterStatus:
    state_dir: Path
    server: str | None
    components: list[ComponentStatus]
    healthy: bool
    detail: str


def status(state_dir: Path | None = None) -> ClusterStatus:
    """The control plane's processes, and a real node's if it has one."""
    from agentmatrix.cluster import realnode

    state_dir = (state_dir or default_state_dir()).resolve()
    paths = state_paths(state_dir)
    procs = processes.load(paths["pids"]) + realnode.recorded_processes(state_dir)
    components = [ComponentStatus(p.name, p.pid, processes.is_alive(p), p.ports) for p in procs]
    if not procs:
        return ClusterStatus(state_dir, None, [], False, "no cluster recorded in this state directory")
    server = json.loads(paths["meta"].read_text())["server"] if paths["meta"].exists() else None
    code, body = api_get(state_dir, server, "/readyz") if server else (0, "")
    healthy = code == 200 and all(c.running for c in components)
    detail = "ready" if healthy else f"/readyz answered {code or 'nothing'}: {body.strip()[:200]}"
    return ClusterStatus(state_dir, server, components, healthy, detail)
