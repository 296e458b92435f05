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
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentmatrix.cluster import admission, binaries, kubeconfig, pki, processes

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


class ClusterError(RuntimeError):
    """The local cluster could not be started or reached; the message says why."""


def default_state_dir() -> Path:
    return binaries.cache_dir() / "clusters" / "default"


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
        return _paths(self.state_dir)["pki"] / "webhook-client-ca.crt"

    @property
    def webhook_client(self) -> pki.CertPair:
        """The API server's client certificate toward admission webhooks."""
        directory = _paths(self.state_dir)["pki"]
        return pki.CertPair(
            directory / "apiserver-webhook-client.crt", directory / "apiserver-webhook-client.key"
        )

    @property
    def etcd_url(self) -> str:
        """etcd's client URL (TLS; it refuses any caller without a client certificate of its CA)."""
        return str(json.loads(_paths(self.state_dir)["meta"].read_text())["etcd"])

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


def foreign_entries(state_dir: Path) -> list[str]:
    """What in `state_dir` a local cluster did not put there (sorted names)."""
    if not state_dir.is_dir():
        return []
    return sorted(entry.name for entry in state_dir.iterdir() if entry.name not in STATE_ENTRIES)


def _refuse_foreign(state_dir: Path) -> None:
    strangers = foreign_entries(state_dir)
    if strangers:
        shown = ", ".join(strangers[:5]) + (", ..." if len(strangers) > 5 else "")
        raise ClusterError(
            f"{state_dir} is not a local cluster's state directory (it holds {shown}); "
            "give a new or empty directory"
        )


def _paths(state_dir: Path) -> dict[str, Path]:
    return {
        "pki": state_dir / "pki",
        "admission": state_dir / "admission",
        "etcd": state_dir / "etcd",
        "logs": state_dir / "logs",
        "pids": state_dir / "processes.json",
        "meta": state_dir / "cluster.json",
    }


def _make_pki(state_dir: Path, server_port: int) -> dict[str, pki.CertPair]:
    directory = _paths(state_dir)["pki"]
    ca = pki.create_ca(directory, "ca")
    certs = {
        "ca": ca,
        "apiserver": pki.issue(
            ca,
            directory,
            "apiserver",
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=("127.0.0.1", "10.96.0.1"),
            server=True,
        ),
        "admin": pki.issue(
            ca, directory, "admin", "kubernetes-admin", organizations=("system:masters",), client=True
        ),
        "controller-manager": pki.issue(
            ca, directory, "controller-manager", "system:kube-controller-manager", client=True
        ),
        "scheduler": pki.issue(ca, directory, "scheduler", "system:kube-scheduler", client=True),
        "apiserver-kubelet-client": pki.issue(
            ca,
            directory,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("system:masters",),
            client=True,
        ),
        "service-accounts": pki.create_signing_keypair(directory, "service-accounts"),
    }
    # etcd's own CA: a certificate the cluster CA signs (any approved CSR) never opens etcd.
    etcd_ca = pki.create_ca(directory, "etcd-ca")
    certs["etcd-ca"] = etcd_ca
    certs["etcd"] = pki.issue(
        etcd_ca, directory, "etcd", "etcd", dns_names=("localhost",), ip_addresses=("127.0.0.1",),
        server=True, client=True,
    )  # fmt: skip
    certs["apiserver-etcd-client"] = pki.issue(
        etcd_ca, directory, "apiserver-etcd-client", "kube-apiserver-etcd-client", client=True
    )
    # Webhooks trust this CA alone: it signs only the API server's client certificate to them.
    webhook_client_ca = pki.create_ca(directory, "webhook-client-ca")
    certs["webhook-client-ca"] = webhook_client_ca
    certs["apiserver-webhook-client"] = pki.issue(
        webhook_client_ca, directory, "apiserver-webhook-client", "kube-apiserver-webhook-client", client=True
    )
    # Neither CA signs anything more: without their keys, nothing else ever can.
    etcd_ca.key.unlink()
    webhook_client_ca.key.unlink()
    server = f"https://127.0.0.1:{server_port}"
    for user, stem in (
        ("kubernetes-admin", "admin"),
        ("system:kube-controller-manager", "controller-manager"),
        ("system:kube-scheduler", "scheduler"),
    ):
        kubeconfig.write(
            state_dir / f"{stem}.kubeconfig",
            server=server,
            ca_file=ca.cert,
            user=user,
            client_cert=certs[stem].cert,
            client_key=certs[stem].key,
        )
    return certs


def _ssl_context(state_dir: Path) -> ssl.SSLContext:
    pki_dir = _paths(state_dir)["pki"]
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return context


def _get(state_dir: Path, server: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(  # noqa: S310 - our own loopback API server
            f"{server}{path}", context=_ssl_context(state_dir), timeout=timeout
        ) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def _wait(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    procs: list[processes.RecordedProcess],
    log_dir: Path,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        dead = [p.name for p in procs if not processes.is_alive(p)]
        if dead:
            raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}; see {log_dir}")
        time.sleep(0.1)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; see {log_dir}")


def _node_manifest(index: int) -> dict[str, object]:
    name = f"kwok-node-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {"podCIDR": f"10.244.{index}.0/24"},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
        },
    }


def _running(state_dir: Path) -> LocalCluster | None:
    """The cluster recorded in `state_dir`, if all its processes run and it answers /readyz."""
    paths = _paths(state_dir)
    procs = processes.load(paths["pids"])
    if not procs or not paths["meta"].exists():
        return None
    if not all(processes.is_alive(p) for p in procs):
        return None
    meta = json.loads(paths["meta"].read_text())
    server = str(meta["server"])
    status, _ = _get(state_dir, server, "/readyz")
    if status != 200:
        return None
    return LocalCluster(state_dir=state_dir, binaries=binaries.find(), server=server, procs=procs)


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
    _refuse_foreign(state_dir)
    bins = binaries.find(bin_dir)
    down(state_dir)  # clears anything half-started from an earlier `up`
    paths = _paths(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    ports = {
        name: processes.free_port()
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
    }
    server = f"https://127.0.0.1:{ports['apiserver']}"
    certs = _make_pki(state_dir, ports["apiserver"])
    admission_config = admission.write(paths["admission"], certs["apiserver-webhook-client"])
    pki_dir = paths["pki"]
    etcd_url = f"https://127.0.0.1:{ports['etcd']}"
    peer_url = f"https://127.0.0.1:{ports['etcd-peer']}"
    paths["meta"].write_text(json.dumps({"server": server, "etcd": etcd_url, "ports": ports}, indent=2))
    procs: list[processes.RecordedProcess] = []

    def record(proc: processes.RecordedProcess) -> None:
        procs.append(proc)
        processes.save(paths["pids"], procs)

    etcd_tls = [f"--trusted-ca-file={certs['etcd-ca'].cert}", f"--cert-file={certs['etcd'].cert}",
                f"--key-file={certs['etcd'].key}", "--client-cert-auth"]  # fmt: skip
    peer_tls = [f"--peer-trusted-ca-file={certs['etcd-ca'].cert}", f"--peer-cert-file={certs['etcd'].cert}",
                f"--peer-key-file={certs['etcd'].key}", "--peer-client-cert-auth"]  # fmt: skip
    say("starting etcd")
    record(
        processes.spawn(
            "etcd",
            [
                str(bins["etcd"]),
                "--name=agentmatrix",
                f"--data-dir={paths['etcd']}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=agentmatrix={peer_url}",
                *etcd_tls,
                *peer_tls,
                # No plain-HTTP metrics listener; /metrics stays on the client port, behind TLS.
                "--listen-metrics-urls=",
                "--log-level=warn",
                # A throw-away test cluster: durability of etcd itself is not what is measured.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
            ],
            paths["logs"],
            (ports["etcd"], ports["etcd-peer"]),
        )
    )
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
    _wait(
        "kube-apiserver /readyz",
        lambda: _get(state_dir, server, "/readyz")[0] == 200,
        120,
        procs,
        paths["logs"],
    )
    say("starting kube-controller-manager, kube-scheduler and kwok")
    record(
        processes.spawn(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller-manager']}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki_dir / 'service-accounts.key'}",
                f"--root-ca-file={certs['ca'].cert}",
                f"--cluster-signing-cert-file={certs['ca'].cert}",
                f"--cluster-signing-key-file={certs['ca'].key}",
                f"--cluster-cidr={POD_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                # The default 20 requests/s per controller throttles ten sandboxes filling at once.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=0",
            ],
            paths["logs"],
            (ports["controller-manager"],),
        )
    )
    record(
        processes.spawn(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                f"--kubeconfig={state_dir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={state_dir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={state_dir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                "--v=0",
            ],
            paths["logs"],
            (ports["scheduler"],),
        )
    )
    record(
        processes.spawn(
            "kwok",
            [
                str(bins["kwok"]),
                f"--kubeconfig={state_dir / 'admin.kubeconfig'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=10.244.255.1",
                f"--cidr={POD_CIDR}",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                # Renew node leases, or the node controller marks every pod NotReady after ~40 s.
                "--node-lease-duration-seconds=40",
            ],
            paths["logs"],
            (ports["kwok"],),
        )
    )
    cluster = LocalCluster(state_dir=state_dir, binaries=bins, server=server, procs=procs)
    nodes_yaml = "\n---\n".join(json.dumps(_node_manifest(i)) for i in range(nodes))
    cluster.kubectl("apply", "--server-side", "-f", "-", input=nodes_yaml)

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

    _wait("default ServiceAccount and Ready kwok nodes", ready, 120, procs, paths["logs"])
    if real_node:
        realnode.up(cluster, say)
    say(f"cluster ready at {server}; kubeconfig {cluster.kubeconfig}")
    return cluster


def down(state_dir: Path | None = None, *, keep_state: bool = False) -> list[str]:
    """Stop the processes `up` recorded in `state_dir` and remove the state. Returns what was stopped.

    Only what `up` writes is removed; a directory that holds anything else is refused, untouched."""
    from agentmatrix.cluster import realnode

    state_dir = (state_dir or default_state_dir()).resolve()
    _refuse_foreign(state_dir)
    node_error: ClusterError | None = None
    try:
        stopped = realnode.down(state_dir)
    except ClusterError as exc:  # the control plane still stops; the node's state stays for a look
        stopped, node_error = [], exc
    paths = _paths(state_dir)
    procs = processes.load(paths["pids"])
    # Reverse start order: clients first, etcd last.
    for proc in reversed(procs):
        if processes.is_alive(proc):
            stopped.append(proc.name)
        processes.stop(proc)
    if not keep_state and state_dir.exists():
        for name in STATE_ENTRIES - ({realnode.STATE_ENTRY} if node_error else set()):
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
    paths = _paths(state_dir)
    procs = processes.load(paths["pids"]) + realnode.recorded_processes(state_dir)
    components = [ComponentStatus(p.name, p.pid, processes.is_alive(p), p.ports) for p in procs]
    if not procs:
        return ClusterStatus(state_dir, None, [], False, "no cluster recorded in this state directory")
    server = json.loads(paths["meta"].read_text())["server"] if paths["meta"].exists() else None
    code, body = _get(state_dir, server, "/readyz") if server else (0, "")
    healthy = code == 200 and all(c.running for c in components)
    detail = "ready" if healthy else f"/readyz answered {code or 'nothing'}: {body.strip()[:200]}"
    return ClusterStatus(state_dir, server, components, healthy, detail)
