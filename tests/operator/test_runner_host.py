"""The process driver's runner host: one warm process that forks each trial's agent runner.

These runs need no cluster: the agent's only commands are `sleep`, run in its bubblewrap sandbox,
and its model is the runner's own replay server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import yaml

from agentmatrix.cluster import processes
from agentmatrix.operator.drivers.base import API_KEY_ENV, Launch
from agentmatrix.operator.drivers.process import RunnerHost, RunningProcess, stop_orphan
from agentmatrix.operator.runner_host import PROCESS_TITLE
from tests.operator.operator_harness import wait_for

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: ns}}]
current-context: c
"""
SECRET = "sk-runner-host-test-7f3a9c"


def runner_arguments(work: Path, steps: list[dict[str, str]], *extra: str) -> list[str]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "kubeconfig").write_text(KUBECONFIG)
    (work / "system.txt").write_text("You operate a service.")
    (work / "task.txt").write_text("Keep it healthy.")
    (work / "replay.yaml").write_text(yaml.safe_dump(steps))
    return [
        "--namespace", "ns", "--kubeconfig", str(work / "kubeconfig"),
        "--system-prompt-file", str(work / "system.txt"), "--task-file", str(work / "task.txt"),
        "--transcript", str(work / "transcript.jsonl"), "--result", str(work / "result.json"),
        "--scratch-dir", str(work / "scratch"), "--replay-script", str(work / "replay.yaml"),
        "--max-steps", "5", *extra,
    ]  # fmt: skip


def title_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def titled(pid: int, text: str) -> None:
    await asyncio.to_thread(
        wait_for, f"runner {pid} to show {text!r}", lambda: text.encode() in title_of(pid), 20.0, 0.05
    )


async def test_each_run_is_a_process_of_its_own_with_its_exit_code_and_log(tmp_path: Path) -> None:
    host = RunnerHost()
    try:
        ok = runner_arguments(tmp_path / "ok", [{"command": "sleep 1"}, {}], "--api-key-env", API_KEY_ENV)
        log = tmp_path / "ok" / "driver.log"
        pid, ticks, exited = await host.spawn("sandbox-a", ok, log, {API_KEY_ENV: SECRET})
        bad_pid, _, bad_exit = await host.spawn("sandbox-b", ["--no-such-option"], tmp_path / "bad.log", {})
        assert pid != bad_pid and os.getpgid(pid) == pid  # its own session, stopped with killpg
        await titled(pid, f"{PROCESS_TITLE} sandbox-a")
        assert await bad_exit == 2
        assert "No such option" in (tmp_path / "bad.log").read_text()
        assert await exited == 0
        result = json.loads((tmp_path / "ok" / "result.json").read_text())
        assert result["end_reason"] == "finished" and result["commands_run"] == 1
        # The key reached the runner (it refuses to start without it) and nothing it wrote.
        for written in (log, tmp_path / "ok" / "transcript.jsonl", tmp_path / "ok" / "result.json"):
            assert SECRET not in written.read_text()
        assert ticks > 0
    finally:
        await host.close()


async def test_a_malformed_request_is_refused_and_the_host_keeps_serving(tmp_path: Path) -> None:
    host = RunnerHost()
    try:
        proc = await host._ensure()
        loop = asyncio.get_running_loop()
        answers = {98: loop.create_future(), 99: loop.create_future()}
        host._spawns.update(answers)
        assert proc.stdin is not None
        proc.stdin.write(
            b"not json\n"
            b'{"id": 98, "arguments": "kubectl", "log": "x", "namespace": "ns"}\n'
            b'{"id": 99, "arguments": [], "log": 7, "namespace": "ns"}\n'
        )
        await proc.stdin.drain()
        assert (await answers[98])["error"] == "arguments must be a list of strings"
        assert (await answers[99])["error"] == "log and namespace must be strings"
        _, _, exited = await host.spawn("ns", ["--help"], tmp_path / "help.log", {})
        assert await exited == 0
        assert "--replay-script" in (tmp_path / "help.log").read_text()
    finally:
        await host.close()


async def test_runners_outlive_a_killed_host_and_are_followed_and_stopped_by_pid(tmp_path: Path) -> None:
    host = RunnerHost()
    args = runner_arguments(tmp_path, [{"command": "sleep 30"}, {}])
    pid, ticks, exited = await host.spawn("sandbox-c", args, tmp_path / "driver.log", {})
    running = RunningProcess(
        Launch("sandbox-c", tmp_path, "", "", None, None, None, None, 5, 60.0),  # type: ignore[arg-type]
        processes.RecordedProcess("driver", pid, ticks, ()),
        exited,
    )
    await titled(pid, "sandbox-c")
    assert host.proc is not None
    host.proc.send_signal(signal.SIGKILL)
    assert await exited is None  # the host is gone: the exit code cannot be known
    assert processes.is_alive(running.process)
    # An operator that restarted finds the runner from the namespace's record and stops it.
    assert not stop_orphan(running.describe(), "some-other-namespace")
    waiter = asyncio.ensure_future(running.wait())
    assert await asyncio.to_thread(stop_orphan, running.describe(), "sandbox-c")
    async with asyncio.timeout(10):
        await waiter
    assert not processes.is_alive(running.process)
    # The next trial gets a new host.
    _, _, again = await host.spawn("sandbox-d", ["--help"], tmp_path / "again.log", {})
    assert await again == 0
    await host.close()
