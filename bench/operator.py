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

Without --cluster-dir (or AGENTMATRIX_TEST_CLUSTER_DIR) a fresh local cluster is started in a
temporary directory and stopped at the end.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentmatrix.agent_runner.bubblewrap import KUBECTL_GOGC  # noqa: E402
from agentmatrix.api.replicationeval import EvalSpec  # noqa: E402
from agentmatrix.cluster import controlplane  # noqa: E402
from agentmatrix.kube import Kube  # noqa: E402
from agentmatrix.operator import sandbox  # noqa: E402
from agentmatrix.operator.copies import pod_state  # noqa: E402
from agentmatrix.operator.plan import TrialKey  # noqa: E402
from agentmatrix.scenarios import build  # noqa: E402
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


def cluster_cpu(cluster: controlplane.LocalCluster) -> dict[str, float]:
    return {proc.name: cpu_seconds(proc.pid) for proc in cluster.procs}


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


def run_eval(
    cluster: controlplane.LocalCluster,
    spec: dict[str, Any],
    webhook: RunningWebhook,
    operator: Operator,
    work: Path,
    lean: bool,
) -> list[float]:
    """Runs the eval and prints its figures; the harness time of each trial."""
    name = f"bench-{int(time.time())}"
    parallelism = int(spec["parallelism"])
    time.sleep(3)  # let the operator finish starting up; its start is not the harness's time
    idle = memory_kib(operator.pid)
    cpu_before = {"webhook": cpu_seconds(webhook.process.pid), **cluster_cpu(cluster)}
    machine_before = machine_cpu_seconds()
    peak_rss = 0
    sampling = True

    def sample() -> None:
        nonlocal peak_rss
        while sampling:
            peak_rss = max(peak_rss, memory_kib(operator.pid).get("VmRSS", 0))
            time.sleep(0.2)

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
    cpu = cpu_seconds(operator.pid)
    drivers_cpu = sum(
        cpu_seconds(pid) + cpu_seconds(pid, children=True) for pid in runner_hosts(operator.pid)
    )
    cpu_after = {"webhook": cpu_seconds(webhook.process.pid), **cluster_cpu(cluster)}
    machine = machine_cpu_seconds() - machine_before
    results = work / "results"
    subprocess.run(
        [AGENTMATRIX, "results", name, "--dir", str(results), "-n", NAMESPACE, "--kubeconfig",
         str(cluster.kubeconfig)],
        check=True, capture_output=True,
    )  # fmt: skip
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

    def describe(values: list[float]) -> str:
        if not values:
            return "n/a"
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        return (
            f"mean {statistics.mean(values):.2f} s, median {statistics.median(values):.2f} s, p90 {p90:.2f} s"
        )

    print(f"trials: {len(entries)} ({len(failed)} failed) at parallelism {parallelism}")
    print(f"wall time, apply to Completed: {wall:.1f} s ({wall / max(1, len(entries)):.2f} s per trial)")
    if first_command_after_apply is not None:
        print(f"first trial, apply to the agent's first command: {first_command_after_apply:.2f} s")
    print(f"harness time per trial (start to first command + last step to status): {describe(per_trial)}")
    print(f"  sandbox setup, until the driver starts: {describe(setup)}")
    print(f"  trial start to the agent's first command: {describe(to_first)}")
    print(f"  agent's last step to the result in status: {describe(after_last)}")
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
    entry = "python -m agentmatrix.operator run" if lean else "agentmatrix operator run"
    print(
        f"operator memory ({entry}): idle {idle.get('VmRSS', 0) / 1024:.0f} MB, "
        f"peak RSS {peak_rss / 1024:.0f} MB "
        f"(kernel high-water mark {final.get('VmHWM', 0) / 1024:.0f} MB)"
    )
    return per_trial


async def wait_serving(kube: Kube, namespace: str, wanted: int, image: str, within: float = 60.0) -> None:
    """Follow the namespace's pods (a list, then a watch) until `wanted` agent pods serve."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    async with asyncio.timeout(within):
        while True:
            pods, version = await kube.list_with_version(path)
            states = {pod["metadata"]["name"]: pod_state(pod, image) for pod in pods}
            if sum(state.serving for state in states.values()) >= wanted:
                return
            async for kind, pod in kube.watch(path, version):
                if kind == "DELETED":
                    states.pop(pod["metadata"]["name"], None)
                elif kind != "BOOKMARK":
                    states[pod["metadata"]["name"]] = pod_state(pod, image)
                if sum(state.serving for state in states.values()) >= wanted:
                    return


async def bare_trials(cluster: controlplane.LocalCluster, spec: dict[str, Any]) -> list[tuple[float, float]]:
    """(bare trial, its kubectl run) in seconds, for as many bare trials as the spec has."""
    eval_spec = EvalSpec.model_validate(spec)
    scenario = build(eval_spec.scenario.to_api())
    arm, image = eval_spec.arms[0], eval_spec.agent_image
    command = str(FAST_AGENT[0]["command"]).split()[1:]  # kubectl scale deployment agent --replicas=N
    wanted = int(command[-1].rsplit("=", 1)[1])
    stamp = int(time.time())
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    gate = asyncio.Semaphore(eval_spec.parallelism)

    async def bare_trial(index: int) -> tuple[float, float]:
        async with gate:
            ns = f"floor-{stamp}-{index}"
            started = time.time()
            namespace = sandbox.namespace_object(
                ns, eval_name="floor", eval_namespace=NAMESPACE, eval_uid=f"floor-{stamp}",
                key=TrialKey(index, arm.name), attempt=0, arm=arm, agent_image=image,
            )  # fmt: skip
            await kube.create_or_keep("/api/v1/namespaces", namespace)
            settings = sandbox.SandboxSettings()
            await sandbox.create_sandbox(kube, namespace, scenario=scenario, arm=arm, settings=settings)
            await sandbox.create_agent_workload(kube, ns, image, scenario.initial_replicas)
            await wait_serving(kube, ns, scenario.initial_replicas, image)
            command_started = time.time()
            agent = await asyncio.create_subprocess_exec(
                str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", "-n", ns, *command,
                stdout=asyncio.subprocess.DEVNULL, env={**os.environ, "GOGC": KUBECTL_GOGC},
            )  # fmt: skip
            await agent.wait()
            command_seconds = time.time() - command_started
            await wait_serving(kube, ns, wanted, image)
            await sandbox.delete_namespace(kube, ns)
            return time.time() - started, command_seconds

    try:
        return list(await asyncio.gather(*(bare_trial(index) for index in range(eval_spec.trials))))
    finally:
        await kube.close()


def bench(
    cluster: controlplane.LocalCluster, trials: int, parallelism: int, work: Path, lean: bool, floor: bool
) -> None:
    install_crd(cluster)
    ensure_namespace(cluster, NAMESPACE)
    spec = bench_spec(trials, parallelism)
    with running_webhook(cluster, work / "webhook") as webhook:
        with running_operator(cluster, work / "operator", webhook.ledger, NAMESPACE, lean=lean) as operator:
            harness = run_eval(cluster, spec, webhook, operator, work, lean)
        if not floor:
            return
        time.sleep(5)  # the eval's last sandboxes go away
        cpu_before = {"webhook": cpu_seconds(webhook.process.pid), **cluster_cpu(cluster)}
        own_before = cpu_seconds(os.getpid()) + cpu_seconds(os.getpid(), children=True)
        machine_before = machine_cpu_seconds()
        started = time.time()
        bare = asyncio.run(bare_trials(cluster, spec))
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=50)
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
    try:
        bench(controlplane.up(state), args.trials, args.parallelism, work, lean, not args.no_floor)
    finally:
        if not args.cluster_dir:
            controlplane.down(state)
        if args.keep:
            print(f"results and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
