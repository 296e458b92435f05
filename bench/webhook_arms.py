"""The API server's latency for `deployments/scale` with each webhook arm, measured interleaved.

Every arm has its own sandbox namespace (names of one length, the same Deployment, the same
object sizes), of an eval of its own, and every webhook configuration stays registered for the
whole run, each scoped to its arm's namespace by one extra namespaceSelector expression; apart
from that expression and the URL the configurations are the generated one for the arm's eval
(observe mode: same entries, failure policy, timeout, serving certificate and mTLS). A webhook
arm serves its eval's sandboxes only, as `agentmatrix run` starts it, so it watches the workloads
of its own arm and not the others' (the controllers' work of every arm still shares the cores).
So a request in any arm passes the same admission chain, calls exactly one webhook (none in the
`none` arm), over the same kept-alive client connection.

Rounds: the arms in a random order, one block of requests each; the first requests of a block
are not counted (the controllers' follow-up work of the previous block, a ReplicaSet update and a
pod created or deleted per scale, still passes the previous arm's webhook). Ratios of p50 and
p99 between arms come with a percentile bootstrap interval over whole rounds. Each webhook
process's CPU time during the rounds shows what it costs the shared cores, its watches included.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from agentmatrix.kube import KubeAccess
from agentmatrix.scoring import Estimate
from agentmatrix.scoring.stats import bootstrap_estimate, resamples

ARM_LABEL = "bench-arm"
AIM_RATIO = 1.05
CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 1000


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def scoped(configuration: dict[str, Any], arm: str) -> dict[str, Any]:
    """`configuration` with every entry restricted to namespaces labelled `bench-arm=<arm>`."""
    scoped_configuration = copy.deepcopy(configuration)
    for entry in scoped_configuration["webhooks"]:
        entry["namespaceSelector"]["matchExpressions"].append(
            {"key": ARM_LABEL, "operator": "In", "values": [arm]}
        )
    return scoped_configuration


@dataclass
class Arm:
    name: str
    namespace: str
    # Scale reviews of `namespace` that the arm's webhook answered (None: the arm has no webhook).
    scales_seen: Callable[[str], int] | None
    pid: int | None = None  # the webhook's process
    cpu_seconds: float = 0.0  # its CPU time during the rounds (its own reviews, watches, ledger)
    rounds: list[list[float]] = field(default_factory=list)  # counted latencies, per round
    sent: int = 0  # scale requests sent after the warm-up, counted or not

    @property
    def latencies(self) -> list[float]:
        return [value for block in self.rounds for value in block]


class Scaler:
    """PATCHes `deployments/agent/scale` in any arm's namespace over one kept-alive connection."""

    def __init__(self, access: KubeAccess) -> None:
        self.access = access
        self.headers = {**access.headers, "Content-Type": "application/merge-patch+json"}
        self.replicas: dict[str, int] = {}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Scaler:
        connector = aiohttp.TCPConnector(ssl=self.access.ssl_context, limit=1)
        self.session = aiohttp.ClientSession(base_url=self.access.server, connector=connector)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def scale(self, namespace: str) -> float:
        """One scale request (replicas alternate 1, 2); its latency in seconds."""
        assert self.session is not None
        replicas = 3 - self.replicas.get(namespace, 2)
        self.replicas[namespace] = replicas
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/agent/scale"
        body = json.dumps({"spec": {"replicas": replicas}})
        started = time.perf_counter()
        async with self.session.patch(path, data=body, headers=self.headers) as reply:
            await reply.read()
            if reply.status != 200:
                raise SystemExit(f"scale in {namespace} failed: HTTP {reply.status}")
        return time.perf_counter() - started


class Pace:
    """Starts requests on a fixed schedule of `rate` a second (an open loop, as an agent's requests
    come, however long each takes); a request answered late is followed at once, not skipped."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.due = time.monotonic()

    async def next(self) -> None:
        if not self.interval:
            return
        self.due = max(self.due + self.interval, time.monotonic() - self.interval)
        delay = self.due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class Run:
    arms: list[Arm]
    block: int
    settle: int
    warm_up: int
    seed: int
    rate: float = 0.0  # requests started per second; 0: each as soon as the previous is answered
    load: list[float] = field(default_factory=list)  # 1-minute load average, once per round
    before_counts: dict[str, int] = field(default_factory=dict)


async def _routed(scaler: Scaler, arms: list[Arm], patience: float = 60.0) -> None:
    """Send requests until each webhook sees its own arm's (the API server loads configurations
    asynchronously)."""
    deadline = time.monotonic() + patience
    for arm in arms:
        if arm.scales_seen is None:
            continue
        while True:
            seen = arm.scales_seen(arm.namespace)
            await scaler.scale(arm.namespace)
            if arm.scales_seen(arm.namespace) > seen:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the API server never called the {arm.name} webhook")
            await asyncio.sleep(0.2)


async def measure(access: KubeAccess, run: Run, requests_per_arm: int) -> None:
    rng = random.Random(run.seed)
    rounds = max(2, -(-requests_per_arm // run.block))
    async with Scaler(access) as scaler:
        await _routed(scaler, run.arms)
        for _ in range(run.warm_up):
            for arm in run.arms:
                await scaler.scale(arm.namespace)
        for arm in run.arms:
            if arm.scales_seen is not None:
                run.before_counts[arm.name] = arm.scales_seen(arm.namespace)
        cpu_before = {arm.name: process_cpu_seconds(arm.pid) for arm in run.arms if arm.pid}
        pace = Pace(run.rate)
        for _ in range(rounds):
            run.load.append(os.getloadavg()[0])
            for arm in rng.sample(run.arms, len(run.arms)):
                block = []
                for _ in range(run.settle + run.block):
                    await pace.next()
                    block.append(await scaler.scale(arm.namespace))
                arm.sent += len(block)
                arm.rounds.append(block[run.settle :])
        for arm in run.arms:
            if arm.pid:
                arm.cpu_seconds = process_cpu_seconds(arm.pid) - cpu_before[arm.name]


def _quantiles(run: Run, picked: list[int]) -> dict[str, tuple[float, float]]:
    table = {}
    for arm in run.arms:
        values = [value for index in picked for value in arm.rounds[index]]
        table[arm.name] = (percentile(values, 0.5), percentile(values, 0.99))
    return table


def _ratio(table: dict[str, tuple[float, float]], top: str, bottom: str, which: int) -> float:
    return table[top][which] / table[bottom][which]


def _estimate(
    point: dict[str, tuple[float, float]],
    tables: list[dict[str, tuple[float, float]]],
    top: str,
    bottom: str,
    which: int,
) -> Estimate:
    return bootstrap_estimate(
        _ratio(point, top, bottom, which),
        lambda table: _ratio(table, top, bottom, which),
        tables,
        CONFIDENCE,
    )


def ratios(run: Run, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[Estimate, Estimate]]:
    """p50 and p99 ratios of each (top, bottom) pair, with bootstrap intervals over rounds."""
    count = len(run.arms[0].rounds)
    point = _quantiles(run, list(range(count)))
    tables = [_quantiles(run, picked) for picked in resamples(count, BOOTSTRAP_SAMPLES, run.seed)]
    return {
        (top, bottom): (_estimate(point, tables, top, bottom, 0), _estimate(point, tables, top, bottom, 1))
        for top, bottom in pairs
    }


def _shown(estimate: Estimate) -> str:
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def verdict(estimate: Estimate) -> str:
    assert estimate.value is not None and estimate.low is not None and estimate.high is not None
    if estimate.high <= AIM_RATIO:
        return f"within {AIM_RATIO:g}x"
    if estimate.low > AIM_RATIO:
        return f"NOT within {AIM_RATIO:g}x"
    side = "under" if estimate.value <= AIM_RATIO else "over"
    return f"undecided: {side} {AIM_RATIO:g}x, the interval spans it"


def report(run: Run, ours: str, floor: str, none: str) -> None:
    counted = len(run.arms[0].latencies)
    pacing = f"{run.rate:g} requests/s" if run.rate else "each request once the previous one is answered"
    print(f"   load: one connection, {pacing}")
    print(
        f"   {len(run.arms[0].rounds)} rounds, seed {run.seed}: the arms in a random order, "
        f"{run.settle} + {run.block} requests each, the first {run.settle} not counted; "
        f"{run.warm_up} warm-up requests per arm before"
    )
    print(
        f"   {counted} requests per arm counted; load average (1 min) during the run: "
        f"min {min(run.load):.1f}, median {statistics.median(run.load):.1f}, max {max(run.load):.1f}"
    )
    print(f"{'arm':<14} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'CPU s':>6}  scale reviews")
    for arm in run.arms:
        values = arm.latencies
        if arm.scales_seen is None:
            seen = "(no webhook)"
        else:
            reviews = arm.scales_seen(arm.namespace) - run.before_counts[arm.name]
            # More reviews than requests: a PATCH that meets a write conflict is admitted again.
            seen = f"{reviews} for {arm.sent} requests" + (" (SOME MISSED)" if reviews < arm.sent else "")
        print(
            f"{arm.name:<14} {len(values):>6} {percentile(values, 0.5) * 1e3:>8.2f} "
            f"{percentile(values, 0.99) * 1e3:>8.2f} {statistics.mean(values) * 1e3:>8.2f} "
            f"{arm.cpu_seconds if arm.pid else float('nan'):>6.1f}  {seen}"
        )
    strays = [
        f"{webhook.name} saw {webhook.scales_seen(arm.namespace)} of the {arm.name} arm"
        for webhook in run.arms
        if webhook.scales_seen is not None
        for arm in run.arms
        if arm is not webhook and webhook.scales_seen(arm.namespace)
    ]
    if strays:
        print(f"   NOT isolated: {'; '.join(strays)}")
    pairs = [(arm.name, none) for arm in run.arms if arm.name != none]
    pairs += [(arm.name, floor) for arm in run.arms if arm.name not in (none, floor)]
    pairs += [(ours, arm.name) for arm in run.arms if arm.name not in (ours, none, floor)]
    found = ratios(run, pairs)
    print(f"ratios, {CONFIDENCE:.0%} bootstrap interval over rounds ({BOOTSTRAP_SAMPLES} resamples):")
    for (top, bottom), (p50, p99) in found.items():
        print(f"{top + ' / ' + bottom:<28} p50 {_shown(p50)}   p99 {_shown(p99)}")
    p50, p99 = found[(ours, floor)]
    print(
        f"{ours} over {floor} (= its ratio to {none} over the {floor}'s, measured together): "
        f"p50 {verdict(p50)}; p99 {verdict(p99)}"
    )
