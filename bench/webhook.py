"""Benchmark of the admission webhook. Prints, in one run:

1. direct AdmissionReview throughput and p50/p99 latency over HTTPS on loopback (the real
   `agentmatrix webhook serve` process, ledger commits included), at several concurrencies and
   for both ledger sync settings;
2. the API server's latency for `deployments/scale` requests with the webhook registered (observe
   mode) divided by its latency without it, p50 and p99, on a local control plane; and the same
   for a webhook that allows everything and records nothing (`noop_webhook.py`, same stack), the
   floor that the webhook's own work adds to.

Usage: python bench/webhook.py [--seconds S] [--scale-requests N] [--state-dir DIR] [--skip-cluster]
       [--skip-direct]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agentmatrix.api import names
from agentmatrix.cluster import controlplane, pki
from agentmatrix.cluster.processes import free_port
from agentmatrix.kube import KubeAccess
from agentmatrix.measurement import admission_config
from agentmatrix.measurement.ledger import read_observations
from agentmatrix.measurement.model import Mode
from agentmatrix.webhook import launch, register
from agentmatrix.webhook.review import request_body

AGENTMATRIX = str(Path(sys.executable).parent / "agentmatrix")
IMAGE = names.DEFAULT_AGENT_IMAGE


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_webhook(directory: Path, *args: str) -> tuple[subprocess.Popen[str], launch.Ready]:
    log = directory / f"webhook-{uuid.uuid4().hex[:6]}.log"
    options = ["--port", "0", "--cert-dir", str(directory / "certs"), *args]
    try:
        return launch.start(options, log, command=(AGENTMATRIX,), timeout=120)
    except launch.LaunchError as exc:
        raise SystemExit(str(exc)) from exc


stop = launch.stop


def review_bodies(count: int) -> list[bytes]:
    """A realistic mix: mostly scale requests of the agent, some creates and patches of copies."""
    bodies = []
    user = names.service_account_username("bench", "agent")
    template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": IMAGE}]}}
    for i in range(count):
        uid = str(uuid.uuid4())
        if i % 4:
            body = request_body(
                uid=uid,
                operation="UPDATE",
                resource="deployments",
                subresource="scale",
                namespace="bench",
                name="agent",
                username=user,
                kind="Scale",
                obj={"spec": {"replicas": 1 + i % 3}},
                old={"spec": {"replicas": 1 + (i + 1) % 3}},
            )
        else:
            deployment = {
                "metadata": {"name": f"copy-{i % 50}"},
                "spec": {"replicas": 1, "template": template},
            }
            body = request_body(
                uid=uid,
                operation="CREATE",
                resource="deployments",
                namespace="bench",
                name=f"copy-{i % 50}",
                username=user,
                kind="Deployment",
                obj=deployment,
            )
        bodies.append(json.dumps(body).encode())
    return bodies


AIM_RATE = 2000
AIM_P99_MS = 5.0
OPEN_LOOP_RATES = (1000, 2000, 3000, 4000)
CLOSED_LOOP_WORKERS = (1, 8)


def vegeta() -> str:
    """vegeta, the load generator: wrk cannot present a client certificate, vegeta can."""
    found = shutil.which("vegeta") or str(tools_dir() / "vegeta")
    if not Path(found).is_file():
        raise SystemExit(
            "the direct benchmark needs vegeta (scripts/setup.sh builds it into the tools cache)"
        )
    return found


def tools_dir() -> Path:
    from agentmatrix.cluster.binaries import cache_dir

    return cache_dir() / "tools"


@dataclass
class LoadResult:
    rate: float  # answered reviews per second
    p50_ms: float
    p99_ms: float
    requests: int
    server_cpu_us: float  # the webhook process's CPU time per review
    failed: int = 0  # requests not answered 200 within vegeta's 5 s timeout


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Caller:
    """What the load generator presents: the CA to check the webhook, and a client certificate."""

    ca: Path
    cert: Path
    key: Path


def write_targets(path: Path, url: str, bodies: list[bytes]) -> None:
    header = {"Content-Type": ["application/json"]}
    with path.open("w") as out:
        for body in bodies:
            target = {"method": "POST", "url": f"{url}/validate", "header": header,
                      "body": base64.b64encode(body).decode()}  # fmt: skip
            out.write(json.dumps(target) + "\n")


def vegeta_load(
    url: str, caller: Caller, seconds: float, pid: int, work: Path, *, rate: int = 0, workers: int = 0
) -> LoadResult:
    """Open loop at `rate` reviews/s, or (rate 0) closed loop with `workers` connections kept alive."""
    # Distinct uids: a repeated uid is a retry, which the ledger answers without a write.
    count = int((rate or 6000) * seconds * 1.2) + 100
    targets = work / "targets.jsonl"
    write_targets(targets, url, review_bodies(count))
    # Open loop over at most 16 kept-alive connections, as an API server's pool would use: an
    # unbounded pool opens a new connection (a TLS handshake) whenever the answers lag.
    pacing = [f"-rate={rate}/s", "-max-connections=16"] if rate else [
        "-rate=0", f"-max-workers={workers}", f"-workers={workers}", f"-connections={workers}"]  # fmt: skip
    cpu_before = process_cpu_seconds(pid)
    attack = subprocess.run(
        [vegeta(), "attack", "-format=json", f"-targets={targets}", f"-duration={seconds:g}s",
         "-timeout=5s", f"-root-certs={caller.ca}", f"-cert={caller.cert}", f"-key={caller.key}",
         "-keepalive=true", *pacing],
        capture_output=True, check=True,
    )  # fmt: skip
    cpu = process_cpu_seconds(pid) - cpu_before
    summary = json.loads(
        subprocess.run(
            [vegeta(), "report", "-type=json"], input=attack.stdout, capture_output=True, check=True
        ).stdout
    )
    codes = summary.get("status_codes") or {}
    latencies = summary["latencies"]
    requests = int(summary["requests"])
    return LoadResult(
        rate=float(summary["throughput"]),
        p50_ms=latencies["50th"] / 1e6,
        p99_ms=latencies["99th"] / 1e6,
        requests=requests,
        server_cpu_us=cpu / max(1, requests) * 1e6,
        failed=requests - int(codes.get("200", 0)),
    )


def bench_direct(seconds: float) -> None:
    print("== direct AdmissionReview over HTTPS with client certificates (mTLS) on 127.0.0.1")
    print("   the webhook process, ledger commit per request; load from vegeta with the API server's")
    print("   kind of client certificate; mix: 3 of 4 agent scale requests, 1 of 4 creates")
    print(
        f"{'sync':<7} {'load':>16} {'reviews/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/review':>14} "
        f"{'failed':>7}"
    )
    for sync in ("normal", "full"):
        with tempfile.TemporaryDirectory(prefix="agentmatrix-bench-") as tmp:
            directory = Path(tmp)
            client_ca, client = pki.client_cert_with_own_ca(directory / "client", "bench-apiserver")
            process, started = start_webhook(
                directory, "--no-watch", "--sandbox", "bench", "--sync", sync,
                "--ledger", str(directory / "ledger.sqlite3"), "--client-ca", str(client_ca.cert),
            )  # fmt: skip
            assert started.ca is not None
            caller = Caller(started.ca, client.cert, client.key)
            try:
                vegeta_load(started.url, caller, 1.0, process.pid, directory, workers=4)  # warm up
                best: tuple[str, LoadResult] | None = None
                loads = [(f"open {r}/s", r, 0) for r in OPEN_LOOP_RATES]
                loads += [(f"closed {w} conn", 0, w) for w in CLOSED_LOOP_WORKERS]
                for label, rate, workers in loads:
                    result = vegeta_load(
                        started.url, caller, seconds, process.pid, directory, rate=rate, workers=workers
                    )
                    print(
                        f"{sync:<7} {label:>16} {result.rate:>10.0f} {result.p50_ms:>8.2f} "
                        f"{result.p99_ms:>8.2f} {result.server_cpu_us:>14.0f} {result.failed:>7}"
                    )
                    fine = result.p99_ms < AIM_P99_MS and not result.failed
                    if fine and (best is None or result.rate > best[1].rate):
                        best = (label, result)
                if best is None:
                    print(f"{sync:<7} no run had p99 under {AIM_P99_MS:g} ms")
                else:
                    met = "meets" if best[1].rate >= AIM_RATE else "misses"
                    print(
                        f"{sync:<7} most reviews/s with p99 under {AIM_P99_MS:g} ms: {best[1].rate:.0f} "
                        f"({best[0]}; {met} the floor of {AIM_RATE}/s)"
                    )
            finally:
                stop(process)


async def scale_latencies(access: KubeAccess, namespace: str, count: int) -> list[float]:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/agent/scale"
    headers = {**access.headers, "Content-Type": "application/merge-patch+json"}
    latencies = []
    connector = aiohttp.TCPConnector(ssl=access.ssl_context, limit=1)
    async with aiohttp.ClientSession(base_url=access.server, connector=connector) as session:
        for i in range(count):
            body = json.dumps({"spec": {"replicas": 1 + i % 2}})
            started = time.perf_counter()
            async with session.patch(path, data=body, headers=headers) as reply:
                await reply.read()
                if reply.status != 200:
                    raise SystemExit(f"scale failed: {reply.status}")
            latencies.append(time.perf_counter() - started)
    return latencies


@dataclass
class Arms:
    without: list[float]
    with_webhook: list[float]
    seen_while_registered: int
    seen_while_not: int


def interleaved(
    cluster: controlplane.LocalCluster,
    access: KubeAccess,
    namespace: str,
    documents: list[dict[str, Any]],
    scales_seen: Callable[[], int],
    scale_requests: int,
) -> Arms:
    """Blocks of scale requests, alternately without and with the webhook registered."""
    arms = Arms([], [], 0, 0)
    block = 50

    def settle(active: bool) -> None:
        """Probe until the API server calls the webhook (or stops calling it) for sure."""
        agreed = 0
        while agreed < 3:
            seen = scales_seen()
            asyncio.run(scale_latencies(access, namespace, 1))
            agreed = agreed + 1 if (scales_seen() > seen) == active else 0

    for _ in range(max(1, scale_requests // block)):
        register.remove(documents, cluster.kubeconfig)
        settle(active=False)
        seen = scales_seen()
        arms.without += asyncio.run(scale_latencies(access, namespace, block))
        arms.seen_while_not += scales_seen() - seen
        register.apply(documents, cluster.kubeconfig)
        settle(active=True)
        seen = scales_seen()
        arms.with_webhook += asyncio.run(scale_latencies(access, namespace, block))
        arms.seen_while_registered += scales_seen() - seen
    register.remove(documents, cluster.kubeconfig)
    return arms


def report(label: str, arms: Arms) -> None:
    p50a, p99a = percentile(arms.without, 0.5), percentile(arms.without, 0.99)
    p50b, p99b = percentile(arms.with_webhook, 0.5), percentile(arms.with_webhook, 0.99)
    print(f"-- {label}")
    print(f"{'':<16} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in (("without webhook", arms.without), ("with webhook", arms.with_webhook)):
        print(
            f"{name:<16} {len(values):>5} {percentile(values, 0.5) * 1e3:>8.2f} "
            f"{percentile(values, 0.99) * 1e3:>8.2f} {statistics.mean(values) * 1e3:>8.2f}"
        )
    print(f"ratio with/without: p50 {p50b / p50a:.3f}  p99 {p99b / p99a:.3f}")
    print(
        f"scale reviews it saw: {arms.seen_while_registered} of {len(arms.with_webhook)} sent while "
        f"registered, {arms.seen_while_not} of {len(arms.without)} sent while not"
    )


AIM_RATIO_OF_RATIOS = 1.05


def ratios(arms: Arms) -> tuple[float, float]:
    return (
        percentile(arms.with_webhook, 0.5) / percentile(arms.without, 0.5),
        percentile(arms.with_webhook, 0.99) / percentile(arms.without, 0.99),
    )


def compare(ours: Arms, noop: Arms) -> None:
    """This webhook's with/without ratio next to the no-op's: what the webhook's own work adds."""
    (ours50, ours99), (noop50, noop99) = ratios(ours), ratios(noop)
    print("-- this webhook next to the no-op, both over mTLS")
    for label, mine, floor in (("p50", ours50, noop50), ("p99", ours99, noop99)):
        within = "within" if mine / floor <= AIM_RATIO_OF_RATIOS else "NOT within"
        print(
            f"{label}: ratio {mine:.3f} against the no-op's {floor:.3f}: {mine / floor:.3f}x "
            f"({within} {AIM_RATIO_OF_RATIOS:g}x)"
        )


def bench_api_server(scale_requests: int, state_dir: Path | None) -> None:
    print("== API server latency of deployments/scale (PATCH), webhook registered (observe) vs not")
    own = state_dir is None
    state = state_dir or Path(tempfile.mkdtemp(prefix="agentmatrix-bench-cluster-"))
    cluster = controlplane.up(state)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    suffix = uuid.uuid4().hex[:6]
    registered: list[dict[str, Any]] = []
    processes_started: list[subprocess.Popen[Any]] = []
    try:
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("label", "namespace", namespace, f"{names.LABEL_SANDBOX}=true")
        cluster.kubectl("create", "deployment", "agent", f"--image={IMAGE}", "-n", namespace)
        access = KubeAccess.load(cluster.kubeconfig)
        with tempfile.TemporaryDirectory(prefix="agentmatrix-bench-") as tmp:
            ledger_path = Path(tmp) / "ledger.sqlite3"
            process, started = start_webhook(
                Path(tmp), "--kubeconfig", str(cluster.kubeconfig), "--ledger", str(ledger_path),
                "--client-ca", str(cluster.webhook_client_ca),
            )  # fmt: skip
            processes_started.append(process)
            ca = started.ca.read_bytes() if started.ca else None
            ours = [admission_config.webhook_configuration(
                Mode.OBSERVE, admission_config.ClientTarget(url=started.url, ca_bundle=ca),
                name=f"agentmatrix-webhook-bench-{suffix}",
            )]  # fmt: skip
            registered += ours
            asyncio.run(scale_latencies(access, namespace, 50))  # warm up

            def ledger_scales() -> int:
                return sum(1 for o in read_observations(ledger_path, namespace) if o.subresource == "scale")

            ours_arms = interleaved(cluster, access, namespace, ours, ledger_scales, scale_requests)
            report("agentmatrix webhook (ledger, watches, caps; mTLS)", ours_arms)
            stop(process)

            # The same registration pointing at a webhook that does nothing: the floor.
            port = free_port()
            certs = Path(tmp) / "certs"
            noop = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("noop_webhook.py")),
                 str(certs / "agentmatrix-webhook.crt"), str(certs / "agentmatrix-webhook.key"),
                 str(cluster.webhook_client_ca), str(port)],
            )  # fmt: skip
            processes_started.append(noop)
            noop_url = f"https://127.0.0.1:{port}"
            context = ssl.create_default_context(cafile=str(started.ca))
            context.load_cert_chain(cluster.webhook_client.cert, cluster.webhook_client.key)

            def noop_scales() -> int:
                with urllib.request.urlopen(f"{noop_url}/scales", context=context, timeout=10) as reply:
                    return int(reply.read())

            deadline = time.monotonic() + 30
            while True:
                try:
                    noop_scales()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            floor = [admission_config.webhook_configuration(
                Mode.OBSERVE, admission_config.ClientTarget(url=noop_url, ca_bundle=ca),
                name=f"agentmatrix-noop-bench-{suffix}",
            )]  # fmt: skip
            registered += floor
            noop_arms = interleaved(cluster, access, namespace, floor, noop_scales, scale_requests)
            report(
                "no-op webhook on the same stack (aiohttp, uvloop, mTLS; allows all, records nothing)",
                noop_arms,
            )
            compare(ours_arms, noop_arms)
    finally:
        for started_process in processes_started:
            stop(started_process)
        if registered:
            try:
                register.remove(registered, cluster.kubeconfig)
            except Exception as exc:  # the cluster may be going away
                print(f"could not remove the registration: {exc}", file=sys.stderr)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        if own:
            controlplane.down(state)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each direct run")
    parser.add_argument("--scale-requests", type=int, default=600, help="scale requests per arm")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=os.environ.get("AGENTMATRIX_TEST_CLUSTER_DIR") or None,
        help="reuse the local cluster in this state directory",
    )
    parser.add_argument("--skip-cluster", action="store_true", help="only the direct benchmark")
    parser.add_argument("--skip-direct", action="store_true", help="only the API server benchmark")
    args = parser.parse_args()
    one, five, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {one:.1f} (1 min), {five:.1f} (5 min) at start")
    if not args.skip_direct:
        bench_direct(args.seconds)
    if not args.skip_cluster:
        bench_api_server(args.scale_requests, Path(args.state_dir) if args.state_dir else None)


if __name__ == "__main__":
    main()
