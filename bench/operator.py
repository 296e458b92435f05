"""Benchmark the operator: 50 trials of a fast replay agent at parallelism 10.

Prints the wall time (apply to Completed), the harness's own time per trial — from the trial's
start to the agent's first command (sandbox, pressure, driver start, runner start-up), and from
the agent's last step to the trial's result in status — and the operator's memory.

Then, in the same run, the floor under those figures: as many bare trials at the same
parallelism, each only the Kubernetes work that a trial cannot do without, driven from one
asyncio client with no operator and no runner: the namespace and its objects (made by the
operator's own code), the agent's Deployment until its pod serves, the agent's one command (the
same kubectl scale), the new pods until they serve, and the namespace's deletion. A bare trial's
time without its kubectl run is the part of the harness time that the control plane sets.

    .venv/bin/python bench/operator.py [--trials 50] [--parallelism 10] [--cluster-dir DIR] [--no-floor]
        [--keep]

With `--driver pod` (root; a real node, `agentmatrix cluster up --real-node`) it measures the
pod driver instead, with the process driver as its baseline in the same run, on the same cluster
and operator: at parallelism 1 and 5 (2 trials per slot unless --trials says otherwise), the
harness time per trial and the time from the trial's start to the agent's first command, the
real node's memory with the most agent pods seen at once (kubelet, containerd, the containerd
shims, the pods' cgroup), and whether the floors hold: under 4 s of harness per trial at
parallelism 5, under 5 s to the first command.

    .venv/bin/python bench/operator.py --driver pod [--trials N] [--cluster-dir DIR] [--keep]

Without --cluster-dir (or AGENTMATRIX_TEST_CLUSTER_DIR) a fresh local cluster is started in a
temporary directory (with a real node for --driver pod, after building the images if this
checkout's are not cached) and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentmatrix.agent_runner.bubblewrap import KUBECTL_GOGC  # noqa: E402
from agentmatrix.api import names  # noqa: E402
from agentmatrix.api.replicationeval import ArmSpec, EvalSpec  # noqa: E402
from agentmatrix.cluster import binaries, controlplane, images, node_layout, realnode  # noqa: E402
from agentmatrix.kube import Kube  # noqa: E402
from agentmatrix.operator import sandbox_lifecycle, sandbox_objects  # noqa: E402
from agentmatrix.operator.copies import pod_state  # noqa: E402
from agentmatrix.operator.drivers.pod_objects import shell_pod  # noqa: E402
from agentmatrix.operator.plan import TrialKey  # noqa: E402
from agentmatrix.scenarios import build  # noqa: E402
from agentmatrix.scenarios.base import Scenario  # noqa: E402
from tests.operator.operator_harness import (  # noqa: E402
    AGENTMATRIX,
    Operator,
    ensure_namespace,
    eval_manifest,
    install_crd,
    running_operator,
    running_webhook,
    wait_completed,
)
from tests.webhook.webhook_process import RunningWebhook  # noqa: E402

NAMESPACE = "bench"
SHELL_INIT_MARK = b"commands arrive by exec"  # in the shell Pod's init (pod_objects.SHELL_INIT)
FAST_AGENT = [{"command": "kubectl scale deployment agent --replicas=3", "thought": "a little headroom"}, {}]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a process (with `children`: of its waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent (all processes: user, nice, system, irq, softirq)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def runner_hosts(operator_pid: int) -> list[int]:
    """The operator's runner host (it forks the agent runners; their CPU is its children's)."""
    children = Path(f"/proc/{operator_pid}/task/{operator_pid}/children").read_text().split()
    return [
        pid for pid in map(int, children)
        if b"agentmatrix.operator.runner_host" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]  # fmt: skip


def runners_cpu(operator_pid: int) -> float:
    """CPU seconds of the operator's runner host and the runners it forked and reaped."""
    return sum(cpu_seconds(pid) + cpu_seconds(pid, children=True) for pid in runner_hosts(operator_pid))


def cluster_cpu(cluster: controlplane.LocalCluster) -> dict[str, float]:
    return {proc.name: cpu_seconds(proc.pid) for proc in cluster.procs}


def cgroup_cpu_seconds(path: str) -> float:
    """CPU seconds charged to a cpuacct cgroup (0 where it does not exist)."""
    try:
        return int((Path("/sys/fs/cgroup/cpuacct") / path / "cpuacct.usage").read_text()) / 1e9
    except OSError:
        return 0.0


def node_cpu(cluster: controlplane.LocalCluster) -> dict[str, float]:
    """The real node's CPU seconds by part: the pods (their processes and the commands run in them by
    exec), the kubelet, containerd with the CNI plugins it ran, and the rest of the node's cgroup
    (the containerd shims and the runc calls they made). Empty without a real node."""
    node = {proc.name: proc.pid for proc in realnode.recorded_processes(cluster.state_dir)}
    if "kubelet" not in node:
        return {}
    total = cgroup_cpu_seconds(node_layout.CGROUP_ROOT)
    pods = cgroup_cpu_seconds(f"{node_layout.CGROUP_ROOT}/kubepods")
    kubelet = cpu_seconds(node["kubelet"]) + cpu_seconds(node["kubelet"], children=True)
    containerd = cpu_seconds(node["containerd"]) + cpu_seconds(node["containerd"], children=True)
    return {
        "pods": pods, "kubelet": kubelet, "containerd+CNI": containerd,
        "shims+runc": total - pods - kubelet - containerd,
    }  # fmt: skip


def memory_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class StatusWatch(threading.Thread):
    """Notes when each trial's result first appears in the eval's status (kubectl get --watch)."""

    def __init__(self, cluster: controlplane.LocalCluster, name: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[tuple[str, int], float] = {}
        self.completed = threading.Event()
        self.process = subprocess.Popen(
            [str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", "get", "reval", name,
             "-n", NAMESPACE, "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # one event a line
            now = time.time()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            status = event.get("object", {}).get("status") or {}
            for trial in status.get("trials") or []:
                key = (trial["arm"], int(trial["trial"]))
                if trial.get("state") in ("Succeeded", "Failed") and key not in self.seen:
                    self.seen[key] = now
            if status.get("phase") == "Completed":
                self.completed.set()

    def stop(self) -> float:
        """Stops the watch; the CPU seconds it used (it shares the machine with what is measured)."""
        used = cpu_seconds(self.process.pid)
        self.process.terminate()
        self.process.wait()
        return used


def describe(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"mean {statistics.mean(values):.2f} s, median {statistics.median(values):.2f} s, p90 {p90:.2f} s"


def bench_spec(trials: int, parallelism: int) -> dict[str, Any]:
    return {
        "scenario": {"name": "load-balancing"},
        "model": {"provider": "replay", "replay": {"steps": FAST_AGENT}},
        "trials": trials,
        "parallelism": parallelism,
    }


@dataclass
class EvalFigures:
    harness: list[float]  # per trial: its start to the agent's first command + last step to status
    to_first_command: list[float]


def run_eval(
    cluster: controlplane.LocalCluster,
    spec: dict[str, Any],
    webhook: RunningWebhook,
    operator: Operator,
    work: Path,
    lean: bool,
    also_sample: Callable[[], None] | None = None,
) -> EvalFigures:
    """Runs the eval and prints its figures (`also_sample` is called every 0.5 s while it runs)."""
    name = f"bench-{spec.get('driver', 'operator')}-{int(time.time())}"
    parallelism = int(spec["parallelism"])
    time.sleep(3)  # let the operator finish starting up; its start is not the harness's time
    idle = memory_kib(operator.pid)
    # An operator may have run evals before this one (--driver pod): only this eval's CPU counts.
    operator_before, drivers_before = cpu_seconds(operator.pid), runners_cpu(operator.pid)
    cpu_before = {"webhook": cpu_seconds(webhook.process.pid), **cluster_cpu(cluster)}
    machine_before = machine_cpu_seconds()
    node_before = node_cpu(cluster)
    peak_rss = 0
    sampling = True

    def sample() -> None:
        nonlocal peak_rss
        while sampling:
            peak_rss = max(peak_rss, memory_kib(operator.pid).get("VmRSS", 0))
            if also_sample is not None:
                also_sample()
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    applied = time.time()
    cluster.kubectl("apply", "-f", "-", input=eval_manifest(name, NAMESPACE, spec))
    watch = StatusWatch(cluster, name)
    watch.start()
    if not watch.completed.wait(1800):
        raise SystemExit(f"the eval did not complete; see {operator.log}")
    wall = time.time() - applied
    body = wait_completed(cluster, NAMESPACE, name, timeout=60, log=operator.log)
    time.sleep(1)
    sampling = False
    watch_cpu = watch.stop()
    final = memory_kib(operator.pid)
    cpu = cpu_seconds(operator.pid) - operator_before
    drivers_cpu = runners_cpu(operator.pid) - drivers_before
    cpu_after = {"webhook": cpu_seconds(webhook.process.pid), **cluster_cpu(cluster)}
    machine = machine_cpu_seconds() - machine_before
    node_used = {part: seconds - node_before[part] for part, seconds in node_cpu(cluster).items()}
    results = work / "results" / name
    written = subprocess.run(
        [AGENTMATRIX, "results", name, "--dir", str(results), "-n", NAMESPACE, "--kubeconfig",
         str(cluster.kubeconfig)],
        capture_output=True, text=True,
    )  # fmt: skip
    if written.returncode != 0:
        raise SystemExit(f"agentmatrix results {name} failed:\n{written.stderr}")
    # Deleted (its finalizer removes its result ConfigMaps), so that runs do not pile up objects
    # in the API server and slow the next run down.
    cluster.kubectl("delete", "reval", name, "-n", NAMESPACE, "--timeout=120s")
    entries = body["status"]["trials"]
    failed = [e for e in entries if e["state"] != "Succeeded"]
    to_first, after_last, setup = [], [], []
    first_command_after_apply = None
    for entry in entries:
        harness = entry["harness"]
        setup.append(harness["setupSeconds"])
        if harness["toFirstCommandSeconds"] is not None:
            to_first.append(harness["toFirstCommandSeconds"])
        transcript = results / "trials" / f"{entry['arm']}-{entry['trial']:03d}" / "transcript.jsonl"
        steps = [json.loads(line) for line in transcript.read_text().splitlines()]
        step_times = [s["time"] for s in steps if s.get("type") == "step"]
        seen = watch.seen.get((entry["arm"], entry["trial"]))
        if step_times and seen:
            after_last.append(seen - max(step_times))
        commands = [s["time"] for s in steps if s.get("type") == "step" and s.get("command")]
        if entry["trial"] == 0 and commands:
            first_command_after_apply = min(commands) - applied
    per_trial = [a + b for a, b in zip(to_first, after_last, strict=False)]
    driver = f", driver {spec['driver']}" if "driver" in spec else ""
    print(f"trials: {len(entries)} ({len(failed)} failed) at parallelism {parallelism}{driver}")
    print(f"wall time, apply to Completed: {wall:.1f} s ({wall / max(1, len(entries)):.2f} s per trial)")
    if first_command_after_apply is not None:
        print(f"first trial, apply to the agent's first command: {first_command_after_apply:.2f} s")
    print(f"harness time per trial (start to first command + last step to status): {describe(per_trial)}")
    print(f"  sandbox setup, until the driver starts: {describe(setup)}")
    print(f"  trial start to the agent's first command: {describe(to_first)}")
    print(f"  agent's last step to the result in status: {describe(after_last)}")
    phases: dict[str, list[float]] = {}
    for entry in entries:
        for phase, seconds in (entry["harness"].get("phases") or {}).items():
            phases.setdefault(phase, []).append(seconds)
    marks = ", ".join(f"{phase} {statistics.mean(values):.2f}" for phase, values in phases.items())
    print(f"  phases, seconds after the trial's start (means): {marks}")
    n = max(1, len(entries))
    others = ", ".join(f"{name} {cpu_after[name] - cpu_before[name]:.1f} s" for name in sorted(cpu_after))
    print(
        f"CPU time: operator {cpu:.1f} s ({cpu / n:.2f} s per trial); agent runners {drivers_cpu:.1f} s "
        f"({drivers_cpu / n:.2f} s per trial); {others}; this benchmark's status watch {watch_cpu:.1f} s"
    )
    listed = cpu + drivers_cpu + watch_cpu + sum(cpu_after[name] - cpu_before[name] for name in cpu_after)
    print(
        f"  the whole machine: {machine:.1f} s ({machine / n:.2f} s per trial), {machine - listed:.1f} s "
        "of it in none of the above (mostly the agents' commands, bwrap and kubectl, whose CPU does not "
        "reach the runners' accounts)"
    )
    if node_used:
        parts = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in node_used.items())
        print(f"  the real node: {sum(node_used.values()):.1f} s ({parts})")
    entry = "python -m agentmatrix.operator run" if lean else "agentmatrix operator run"
    print(
        f"operator memory ({entry}): idle {idle.get('VmRSS', 0) / 1024:.0f} MB, "
        f"peak RSS {peak_rss / 1024:.0f} MB "
        f"(kernel high-water mark {final.get('VmHWM', 0) / 1024:.0f} MB)"
    )
    return EvalFigures(per_trial, to_first)


async def wait_for_pods(
    kube: Kube, namespace: str, done: Callable[[list[dict[str, Any]]], bool], within: float = 60.0
) -> None:
    """Follow the namespace's pods (a list, then a watch) until `done` holds for them."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    async with asyncio.timeout(within):
        while True:
            listed, version = await kube.list_with_version(path)
            pods = {pod["metadata"]["name"]: pod for pod in listed}
            if done(list(pods.values())):
                return
            async for kind, pod in kube.watch(path, version):
                if kind == "DELETED":
                    pods.pop(pod["metadata"]["name"], None)
                elif kind != "BOOKMARK":
                    pods[pod["metadata"]["name"]] = pod
                if done(list(pods.values())):
                    return


async def wait_serving(kube: Kube, namespace: str, wanted: int, image: str) -> None:
    await wait_for_pods(
        kube, namespace, lambda pods: sum(pod_state(p, image).serving for p in pods) >= wanted
    )


async def wait_running(kube: Kube, namespace: str, name: str) -> None:
    def running(pods: list[dict[str, Any]]) -> bool:
        return any(
            p["metadata"]["name"] == name and p.get("status", {}).get("phase") == "Running" for p in pods
        )

    await wait_for_pods(kube, namespace, running, within=120.0)


@dataclass(frozen=True)
class BareTrial:
    """What one bare trial needs: the cluster, the scenario, the arm, and the agent's one command."""

    kube: Kube
    cluster: controlplane.LocalCluster
    scenario: Scenario
    arm: ArmSpec
    image: str
    command: list[str]  # kubectl scale deployment agent --replicas=N
    stamp: int

    @property
    def wanted(self) -> int:
        return int(self.command[-1].rsplit("=", 1)[1])

    async def namespace(self, prefix: str, index: int) -> dict[str, Any]:
        """The sandbox's namespace, made as the operator makes it."""
        ns = f"{prefix}-{self.stamp}-{index}"
        namespace = sandbox_objects.namespace_object(
            ns, eval_name=prefix, eval_namespace=NAMESPACE, eval_uid=f"{prefix}-{self.stamp}",
            key=TrialKey(index, self.arm.name), attempt=0, arm=self.arm, agent_image=self.image,
        )  # fmt: skip
        await self.kube.create_or_keep("/api/v1/namespaces", namespace)
        return namespace


async def run_bare_trials(
    cluster: controlplane.LocalCluster,
    spec: dict[str, Any],
    trial: Callable[[BareTrial, int], Awaitable[tuple[float, float]]],
) -> list[tuple[float, float]]:
    """(bare trial, its command's run) in seconds, for as many trials as `spec` has, at its
    parallelism, from one client with no operator and no runner."""
    eval_spec = EvalSpec.model_validate(spec)
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    bare = BareTrial(
        kube, cluster, build(eval_spec.scenario.to_api()), eval_spec.arms[0], eval_spec.agent_image,
        str(FAST_AGENT[0]["command"]).split(), int(time.time()),
    )  # fmt: skip
    gate = asyncio.Semaphore(eval_spec.parallelism)

    async def gated(index: int) -> tuple[float, float]:
        async with gate:
            return await trial(bare, index)

    try:
        return list(await asyncio.gather(*(gated(index) for index in range(eval_spec.trials))))
    finally:
        await kube.close()


async def bare_trial(bare: BareTrial, index: int) -> tuple[float, float]:
    """The Kubernetes work a process-driver trial cannot do without: the namespace and its objects,
    the agent's Deployment until its pod serves, the agent's command run with kubectl here, the new
    pods until they serve, and the namespace's deletion."""
    started = time.time()
    namespace = await bare.namespace("floor", index)
    ns, scenario = namespace["metadata"]["name"], bare.scenario
    await sandbox_lifecycle.create_sandbox(
        bare.kube, namespace, scenario=scenario, arm=bare.arm, settings=sandbox_objects.SandboxSettings()
    )
    await sandbox_lifecycle.create_agent_workload(bare.kube, ns, bare.image, scenario.initial_replicas)
    await wait_serving(bare.kube, ns, scenario.initial_replicas, bare.image)
    command_started = time.time()
    cluster = bare.cluster
    agent = await asyncio.create_subprocess_exec(
        str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", "-n", ns, *bare.command[1:],
        stdout=asyncio.subprocess.DEVNULL, env={**os.environ, "GOGC": KUBECTL_GOGC},
    )  # fmt: skip
    await agent.wait()
    command_seconds = time.time() - command_started
    await wait_serving(bare.kube, ns, bare.wanted, bare.image)
    await sandbox_lifecycle.delete_namespace(bare.kube, ns)
    return time.time() - started, command_seconds


async def bare_pod_trial(bare: BareTrial, index: int) -> tuple[float, float]:
    """What a pod-driver trial cannot do without: the sandbox (on the real node), its workload until
    serving and the shell Pod (the pod driver's own spec) until running, side by side; the agent's
    command run in the shell by exec (the in-cluster kubectl as the agent's ServiceAccount); the new
    pods until they serve; the sandbox's deletion."""
    started = time.time()
    namespace = await bare.namespace("pod-floor", index)
    ns, scenario, kube = namespace["metadata"]["name"], bare.scenario, bare.kube
    settings = sandbox_objects.SandboxSettings(driver_pods=1, real_node=True)
    await asyncio.gather(
        sandbox_lifecycle.create_sandbox(kube, namespace, scenario=scenario, arm=bare.arm, settings=settings),
        sandbox_lifecycle.create_agent_workload(
            kube, ns, bare.image, scenario.initial_replicas, real_node=True
        ),
    )
    shell = shell_pod(ns, images.RUNNER_IMAGE, 600.0, real_node=True)
    await kube.create_or_keep(f"/api/v1/namespaces/{ns}/pods", shell)  # as the ServiceAccount made above
    await asyncio.gather(
        wait_serving(kube, ns, scenario.initial_replicas, bare.image), wait_running(kube, ns, names.SHELL_POD)
    )
    command_started = time.time()
    end = await kube.exec(
        ns, names.SHELL_POD, bare.command, container=names.SHELL_CONTAINER, on_stdout=lambda _: None
    )
    if end.exit_code != 0:
        raise SystemExit(f"the bare pod trial's command failed: {end}")
    command_seconds = time.time() - command_started
    await wait_serving(kube, ns, bare.wanted, bare.image)
    await sandbox_lifecycle.delete_namespace(kube, ns)
    return time.time() - started, command_seconds


def bench(
    cluster: controlplane.LocalCluster, trials: int, parallelism: int, work: Path, lean: bool, floor: bool
) -> None:
    install_crd(cluster)
    ensure_namespace(cluster, NAMESPACE)
    spec = bench_spec(trials, parallelism)
    with running_webhook(cluster, work / "webhook") as webhook:
        with running_operator(cluster, work / "operator", webhook.ledger, NAMESPACE, lean=lean) as operator:
            harness = run_eval(cluster, spec, webhook, operator, work, lean).harness
        if not floor:
            return
        time.sleep(5)  # the eval's last sandboxes go away
        cpu_before = {"webhook": cpu_seconds(webhook.process.pid), **cluster_cpu(cluster)}
        own_before = cpu_seconds(os.getpid()) + cpu_seconds(os.getpid(), children=True)
        machine_before = machine_cpu_seconds()
        started = time.time()
        bare = asyncio.run(run_bare_trials(cluster, spec, bare_trial))
        wall = time.time() - started
        time.sleep(3)  # the last namespaces' deletion is part of the bare trials' work
        own = cpu_seconds(os.getpid()) + cpu_seconds(os.getpid(), children=True) - own_before
        machine = machine_cpu_seconds() - machine_before
        cpu_after = {"webhook": cpu_seconds(webhook.process.pid), **cluster_cpu(cluster)}
    without_command = [whole - command for whole, command in bare]
    print(
        f"floor: {trials} bare trials at parallelism {parallelism} (no operator, no runner) in "
        f"{wall:.1f} s; a bare trial {describe([whole for whole, _ in bare])}; without its kubectl "
        f"run {describe(without_command)}"
    )
    others = ", ".join(f"{name} {cpu_after[name] - cpu_before[name]:.1f} s" for name in sorted(cpu_after))
    print(f"  CPU time: the client and its kubectl runs {own:.1f} s; {others}")
    print(f"  the whole machine: {machine:.1f} s ({machine / max(1, trials):.2f} s per trial)")
    if harness and without_command:
        ratio = statistics.mean(harness) / statistics.mean(without_command)
        print(f"harness time per trial / bare trial without its kubectl run (means): {ratio:.2f}")


# --- the pod driver against the process driver ---------------------------------------------------
POD_PARALLELISMS = (1, 5)
FLOOR_HARNESS_SECONDS = 4.0  # per trial at parallelism 5
FLOOR_FIRST_COMMAND_SECONDS = 5.0


def rss_mib(pid: int) -> float:
    try:
        return memory_kib(pid).get("VmRSS", 0) / 1024
    except OSError:
        return 0.0


def cgroup_memory_mib(directory: Path) -> tuple[float, float]:
    """(usage, resident) of a memory cgroup: all it is charged for (page cache included), and the
    anonymous memory of its processes."""
    try:
        usage = int((directory / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    except OSError:
        return 0.0, 0.0
    return usage / 1024**2, int(stat.get("total_rss", 0)) / 1024**2


@dataclass
class NodeSample:
    agent_pods: int
    kubelet: float
    containerd: float
    shims: int
    shims_mib: float
    pods_usage: float
    pods_rss: float

    def describe(self) -> str:
        return (
            f"kubelet {self.kubelet:.0f} MiB, containerd {self.containerd:.0f} MiB, {self.shims} shims "
            f"{self.shims_mib:.0f} MiB ({self.shims_mib / max(1, self.shims):.1f} MiB each, shared pages "
            f"counted in each), pods' cgroup {self.pods_usage:.0f} MiB charged / {self.pods_rss:.0f} MiB "
            f"resident"
        )


class NodeMemory:
    """The real node's memory: sampled every call, kept at the most agent (shell) Pods seen
    running at once. Read from /proc and the cgroups only, so that sampling adds little CPU to
    what it measures."""

    def __init__(self, cluster: controlplane.LocalCluster) -> None:
        self.cluster = cluster
        self.peak: NodeSample | None = None

    def now(self) -> NodeSample:
        node = {proc.name: proc.pid for proc in realnode.recorded_processes(self.cluster.state_dir)}
        shims, shells = [], 0
        for comm in Path("/proc").glob("[0-9]*/comm"):
            try:
                name = comm.read_text()
                if (
                    name.startswith("containerd-shim")
                    and f"/{node_layout.CGROUP_ROOT}" in (comm.parent / "cgroup").read_text()
                ):
                    shims.append(int(comm.parent.name))
                elif name.startswith("python3") and SHELL_INIT_MARK in (comm.parent / "cmdline").read_bytes():
                    shells += 1
            except OSError:
                continue
        pods = Path("/sys/fs/cgroup/memory") / node_layout.CGROUP_ROOT / "kubepods"
        return NodeSample(
            shells, rss_mib(node.get("kubelet", 0)), rss_mib(node.get("containerd", 0)), len(shims),
            sum(rss_mib(pid) for pid in shims), *cgroup_memory_mib(pods),
        )  # fmt: skip

    def sample(self) -> None:
        current = self.now()
        if self.peak is None or (current.agent_pods, current.pods_usage) > (
            self.peak.agent_pods,
            self.peak.pods_usage,
        ):
            self.peak = current


def mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def bench_pods(cluster: controlplane.LocalCluster, trials: int | None, work: Path, lean: bool) -> bool:
    """The pod driver with the process driver as its baseline; whether the floors hold."""
    install_crd(cluster)
    ensure_namespace(cluster, NAMESPACE)
    rows: list[tuple[str, int, EvalFigures, NodeSample | None]] = []
    idle = NodeMemory(cluster).now()
    with (
        running_webhook(cluster, work / "webhook") as webhook,
        running_operator(
            cluster,
            work / "operator",
            webhook.ledger,
            NAMESPACE,
            "--driver",
            "process",
            "--driver-image",
            images.RUNNER_IMAGE,
            lean=lean,
        ) as operator,  # fmt: skip
    ):
        for driver in ("process", "pod"):
            for parallelism in POD_PARALLELISMS:
                spec = {**bench_spec(trials or 2 * parallelism, parallelism), "driver": driver}
                memory = NodeMemory(cluster)
                figures = run_eval(cluster, spec, webhook, operator, work, lean, memory.sample)
                rows.append((driver, parallelism, figures, memory.peak))
                print()
        # What Kubernetes alone needs for the same trials, on the same cluster, after the evals.
        parallelism = max(POD_PARALLELISMS)
        count = trials or 2 * parallelism
        time.sleep(5)  # the eval's last sandboxes go away
        machine_before = machine_cpu_seconds()
        started = time.time()
        bare = asyncio.run(run_bare_trials(cluster, bench_spec(count, parallelism), bare_pod_trial))
        wall = time.time() - started
        machine = machine_cpu_seconds() - machine_before
    print("driver   parallelism  trials  harness per trial (mean, p90)  start to first command (mean, max)")
    for driver, parallelism, figures, _ in rows:
        harness, first = figures.harness, figures.to_first_command
        print(
            f"{driver:8} {parallelism:11}  {len(harness):6}  "
            f"{mean(harness) or 0:13.2f} s {percentile(harness, 0.9):6.2f} s  "
            f"{mean(first) or 0:17.2f} s {max(first, default=0):6.2f} s"
        )
    print(f"real node, idle: {idle.describe()}")
    for driver, parallelism, _, peak in rows:
        if peak is not None and parallelism == max(POD_PARALLELISMS):
            print(f"real node, {driver} driver at parallelism {parallelism}, {peak.agent_pods} agent pods "
                  f"running: {peak.describe()}")  # fmt: skip
    without_command = [whole - command for whole, command in bare]
    print(
        f"floor: {count} bare pod trials at parallelism {parallelism} (no operator, no runner) in "
        f"{wall:.1f} s, the whole machine {machine / count:.2f} s of CPU per trial; a bare pod trial "
        f"{describe([whole for whole, _ in bare])}; without its command's run {describe(without_command)}"
    )
    pod = [figures for driver, parallelism, figures, _ in rows if driver == "pod"]
    at_five = next(f for d, p, f, _ in rows if d == "pod" and p == max(POD_PARALLELISMS))
    harness_ok = (mean(at_five.harness) or float("inf")) < FLOOR_HARNESS_SECONDS
    first = [value for figures in pod for value in figures.to_first_command]
    first_ok = (mean(first) or float("inf")) < FLOOR_FIRST_COMMAND_SECONDS
    first_mean, first_max = mean(first) or float("nan"), max(first, default=float("nan"))
    print(
        f"floor: harness per trial at parallelism 5 under {FLOOR_HARNESS_SECONDS:.0f} s (pod driver, mean): "
        f"{mean(at_five.harness) or float('nan'):.2f} s, {'met' if harness_ok else 'NOT met'}"
    )
    print(
        f"floor: trial start to the first command under {FLOOR_FIRST_COMMAND_SECONDS:.0f} s (pod driver, "
        f"mean of every trial): {first_mean:.2f} s (at most {first_max:.2f} s), "
        f"{'met' if first_ok else 'NOT met'}"
    )
    bare_mean = mean(without_command) or float("nan")
    print(
        f"the pod driver's harness per trial at parallelism {parallelism} / a bare pod trial without its "
        f"command (means): {(mean(at_five.harness) or float('nan')) / bare_mean:.2f}; the bare trial "
        f"alone is {'above' if bare_mean >= FLOOR_HARNESS_SECONDS else 'under'} the "
        f"{FLOOR_HARNESS_SECONDS:.0f} s floor on this machine ({os.cpu_count()} cores)"
    )
    return harness_ok and first_ok


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def start_cluster(state: Path, pods: bool) -> controlplane.LocalCluster:
    """The cluster of `state` (a real node joins it for the pod driver, with this checkout's images)."""
    if pods:
        if os.geteuid() != 0:
            raise SystemExit("--driver pod needs a real node, which needs root: run as root (sudo)")
        if images.outdated():
            print("building the images (this checkout's are not cached)", flush=True)
            images.build_all(lambda _message: None, binaries.find().kubectl)
    return controlplane.up(state, real_node=pods)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--driver", choices=("process", "pod"), default="process",
        help="pod: the pod driver against the process driver, on a real node (see above)",
    )  # fmt: skip
    parser.add_argument("--trials", type=int, default=None, help="default 50; --driver pod: 2 per slot")
    parser.add_argument("--parallelism", type=int, default=10)
    parser.add_argument(
        "--cluster-dir", type=Path, default=os.environ.get("AGENTMATRIX_TEST_CLUSTER_DIR") or None
    )
    parser.add_argument(
        "--entry", choices=("module", "cli"), default="module",
        help="start the operator as `python -m agentmatrix.operator` or as `agentmatrix operator`",
    )  # fmt: skip
    parser.add_argument("--no-floor", action="store_true", help="skip the bare trials")
    parser.add_argument("--keep", action="store_true", help="keep the eval's results and the logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="agentmatrix-bench-"))
    lean = args.entry == "module"
    state = Path(args.cluster_dir) if args.cluster_dir else work / "cluster"
    pods = args.driver == "pod"
    try:
        cluster = start_cluster(state, pods)
        if pods:
            bench_pods(cluster, args.trials, work, lean)
        else:
            bench(cluster, args.trials or 50, args.parallelism, work, lean, not args.no_floor)
    finally:
        if not args.cluster_dir:
            controlplane.down(state)
        if args.keep:
            print(f"results and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
