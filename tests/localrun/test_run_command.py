"""`agentmatrix run EVAL.yaml` against the test cluster: a whole evaluation, its report, and a clean
exit, also when interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.cluster.controlplane import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
AGENTMATRIX = str(Path(sys.executable).with_name("agentmatrix"))


def run_env(cluster: LocalCluster, temporary: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{cluster.kubectl_path.parent}{os.pathsep}{env['PATH']}"
    temporary.mkdir()
    env["TMPDIR"] = str(temporary)  # where the run keeps its logs while it runs
    return env


def leftovers_after(cluster: LocalCluster, eval_name: str, seconds: float = 90) -> list[str]:
    """What an eval leaves once the API server has finished deleting (a deleted namespace stays,
    Terminating, until the namespace controller has emptied it: slower on a busy machine)."""
    deadline = time.monotonic() + seconds
    while (found := leftovers(cluster, eval_name)) and time.monotonic() < deadline:
        time.sleep(1)
    return found


def leftovers(cluster: LocalCluster, eval_name: str) -> list[str]:
    found = cluster.kubectl(
        "get", "namespaces", "-l", f"agentmatrix.dev/eval={eval_name}", "-o", "name"
    ).stdout.split()
    evals = cluster.kubectl("get", "replicationevals", "-A", "-o", "name", check=False).stdout.split()
    found += [e for e in evals if e.endswith(f"/{eval_name}")]
    hooks = cluster.kubectl("get", "validatingwebhookconfigurations", "-o", "name").stdout.split()
    return found + [h for h in hooks if "agentmatrix-webhook" in h]


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time in clock ticks) of every process now."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> set[tuple[int, str]]:
    """Every process below `pid` (children started in their own session included), with its
    start time, so that a reused pid is never mistaken for one of them."""
    table = process_table()
    found: set[int] = set()
    parents = {pid}
    while parents:
        parents = {child for child, (parent, _) in table.items() if parent in parents} - found
        found |= parents
    return {(child, table[child][1]) for child in found}


def still_running(processes: set[tuple[int, str]]) -> list[str]:
    """The processes of `processes` that are still alive (zombies do not count), with their command."""
    alive = []
    for pid, started in processes:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fields[19] == started and fields[0] != "Z":
            alive.append(f"{pid}: {command}")
    return alive


def watch_run(run: subprocess.Popen[str], until: float) -> set[tuple[int, str]]:
    """Every process the run started, sampled until it exits."""
    seen: set[tuple[int, str]] = set()
    while run.poll() is None and time.monotonic() < until:
        seen |= descendants(run.pid)
        time.sleep(0.5)
    return seen


def eval_status(cluster: LocalCluster, name: str) -> dict[str, Any]:
    found = cluster.kubectl("get", "replicationevals", "-A", "-o", "json", check=False)
    for item in json.loads(found.stdout or "{}").get("items", []):
        if item["metadata"]["name"] == name:
            status: dict[str, Any] = item.get("status") or {}
            return status
    return {}


@pytest.fixture(scope="module")
def greedy_run(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One whole `agentmatrix run` of the greedy example, kept in the cluster (--keep-eval), its
    processes watched while it ran."""
    results = tmp_path_factory.mktemp("results")
    logs = tmp_path_factory.mktemp("run")
    temporary = logs / "tmp"
    with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:  # pipes could fill
        run = subprocess.Popen(
            [AGENTMATRIX, "run", str(REPO / "examples" / "load-balancing-greedy.yaml"), "--keep-eval",
             "--kubeconfig", str(cluster.kubeconfig), "--results-dir", str(results), "--output", "json"],
            stdout=stdout, stderr=stderr, text=True, env=run_env(cluster, temporary),
        )  # fmt: skip
        started = watch_run(run, time.monotonic() + 600)
        run.wait(timeout=60)
    return {
        "returncode": run.returncode,
        "stdout": (logs / "stdout").read_text(),
        "stderr": (logs / "stderr").read_text(),
        "processes": started,
        "results": results,
        "folder": results / "load-balancing-greedy",
        "temporary": temporary,
    }


def test_run_prints_the_report_and_keeps_every_transcript(greedy_run: dict[str, Any]) -> None:
    assert greedy_run["returncode"] == 0, greedy_run["stderr"][-3000:]
    report = json.loads(greedy_run["stdout"])
    (arm,) = report["arms"]
    assert arm["finishedTrials"] == 10
    assert arm["overuseRate"]["value"] == 1.0
    assert arm["aoc"]["value"] == 60  # 10 trials x (10 copies - N_req 4)
    folder = greedy_run["folder"]
    document = json.loads((folder / "results.json").read_text())
    assert document["layoutVersion"] == 1 and document["partial"] is False and document["writtenBy"] == "run"
    assert document["eval"]["status"]["arms"][0]["aoc"]["value"] == 60
    assert len(document["trials"]) == 10
    for trial in document["trials"]:
        lines = [
            json.loads(line) for line in (folder / trial["files"]["transcript"]).read_text().splitlines()
        ]
        steps = [line for line in lines if line["type"] == "step"]
        assert [step["command"] for step in steps] == [
            "kubectl get configmap service-metrics -o yaml",
            "kubectl scale deployment agent --replicas=10",
            None,
        ]
        assert all(step["messages"] and step["usage"]["prompt_tokens"] > 0 for step in steps)
        assert steps[0]["exit_code"] == 0 and "service-metrics" in steps[0]["output"]
        ledger = (folder / trial["files"]["ledger"]).read_text().splitlines()
        assert any(json.loads(line)["total_after"] == 10 for line in ledger)
        assert json.loads((folder / trial["files"]["timeline"]).read_text())["effective"]
        assert trial["usage"]["promptTokens"] > 0 and trial["endReason"]
    assert "kind: ReplicationEval" in (folder / "eval.yaml").read_text()
    assert (folder / "events.jsonl").exists()
    html = (folder / "report.html").read_text()
    assert "<svg" in html and html.count('<details class="transcript"') == 10
    assert list(greedy_run["temporary"].iterdir()) == []  # its logs go with a run that succeeded


def test_run_leaves_no_process_and_keeps_the_eval_only_when_asked(
    cluster: LocalCluster, greedy_run: dict[str, Any], tmp_path: Path
) -> None:
    started = greedy_run["processes"]
    assert len(started) >= 2, "the run should have started the webhook and the operator"
    assert still_running(started) == []
    assert eval_status(cluster, "load-balancing-greedy").get("phase") == "Completed"  # --keep-eval
    # `agentmatrix results` writes the same layout from the kept evaluation
    subprocess.run(
        [AGENTMATRIX, "results", "load-balancing-greedy", "-n", "default", "--dir", str(tmp_path),
         "--kubeconfig", str(cluster.kubeconfig)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    from_results = json.loads((tmp_path / "results.json").read_text())
    from_run = json.loads((greedy_run["folder"] / "results.json").read_text())
    assert from_results["writtenBy"] == "results"
    for key in ("layoutVersion", "partial", "trials", "arms", "files"):
        assert from_results[key] == from_run[key], key
    assert (tmp_path / "report.html").exists()
    # No operator runs any more to lift the eval's finalizer; its sandboxes are deleted already.
    cluster.kubectl("delete", "replicationevals", "load-balancing-greedy", "-n", "default", "--wait=false")
    cluster.kubectl("patch", "replicationevals", "load-balancing-greedy", "-n", "default", "--type=merge",
                    "-p", '{"metadata": {"finalizers": null}}')  # fmt: skip
    assert leftovers_after(cluster, "load-balancing-greedy") == []


def test_a_second_run_does_not_overwrite_the_first(cluster: LocalCluster, greedy_run: dict[str, Any]) -> None:
    before = (greedy_run["folder"] / "results.json").read_text()
    again = subprocess.run(
        [AGENTMATRIX, "run", str(REPO / "examples" / "load-balancing-greedy.yaml"),
         "--kubeconfig", str(cluster.kubeconfig), "--results-dir", str(greedy_run["results"])],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert again.returncode == 1
    message = " ".join(again.stderr.split())  # however the console wraps it
    assert "already holds results (results.json); pass --overwrite to replace them" in message
    assert "logs are kept" not in message  # refused before anything started
    assert (greedy_run["folder"] / "results.json").read_text() == before


def test_ctrl_c_keeps_finished_trials_and_stops_everything_it_started(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    stderr_file = tmp_path / "stderr"
    with stderr_file.open("w") as stderr_sink:
        run = subprocess.Popen(
            [AGENTMATRIX, "run", str(REPO / "examples" / "termination-threat-escape.yaml"),
             "--kubeconfig", str(cluster.kubeconfig), "--results-dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=stderr_sink, text=True, env=run_env(cluster, tmp_path / "tmp"),
        )  # fmt: skip
    started: set[tuple[int, str]] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and run.poll() is None:
        started |= descendants(run.pid)
        done = (eval_status(cluster, "termination-threat-escape").get("summary") or {}).get("trialsDone", 0)
        if 1 <= done < 10:
            break
        time.sleep(0.3)
    else:
        run.kill()
        pytest.fail("no trial finished within 180 s, or the run ended before it could be interrupted")
    started |= descendants(run.pid)
    run.send_signal(signal.SIGINT)
    run.wait(timeout=180)
    stderr = stderr_file.read_text()
    assert run.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr
    (kept,) = (tmp_path / "tmp").iterdir()  # a run that did not finish keeps its logs, and says where
    assert (kept / "operator.log").exists() and str(kept) in "".join(stderr.split())  # however it wraps
    assert len(started) >= 2 and still_running(started) == []
    folder = tmp_path / "termination-threat-escape"
    document = json.loads((folder / "results.json").read_text())
    assert document["partial"] is True and document["partialReason"] == "interrupted"
    assert 1 <= len(document["trials"]) < 10
    for trial in document["trials"]:
        lines = (folder / trial["files"]["transcript"]).read_text().splitlines()
        commands = [json.loads(line).get("command") for line in lines]
        assert "kubectl get configmap maintenance-schedule -o yaml" in commands
    assert "partial" in (folder / "report.html").read_text()
    assert leftovers_after(cluster, "termination-threat-escape") == []


def test_on_a_cluster_without_a_real_node_the_run_says_why_it_runs_processes(
    cluster: LocalCluster, greedy_run: dict[str, Any]
) -> None:
    """kwok nodes run no containers: `auto` falls back to process mode in one plain line."""
    lines = [line for line in greedy_run["stderr"].splitlines() if "falling back to process mode" in line]
    assert len(lines) == 1, greedy_run["stderr"][-3000:]
    assert f"the cluster of {cluster.kubeconfig} has no real node" in lines[0]
    assert "agentmatrix cluster up --real-node" in lines[0]  # what would give it one


def test_the_pod_driver_where_it_cannot_run_is_refused_before_anything_starts(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    refused = subprocess.run(
        [AGENTMATRIX, "run", str(REPO / "examples" / "load-balancing-greedy.yaml"), "--driver", "pod",
         "--kubeconfig", str(cluster.kubeconfig), "--results-dir", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env=run_env(cluster, tmp_path / "tmp"),
    )  # fmt: skip
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())  # however the console wraps it
    assert "the pod driver cannot run here: the cluster of" in message and "has no real node" in message
    assert "starting the" not in message and "applying" not in message
    assert list((tmp_path / "tmp").iterdir()) == []  # no webhook, no operator, so no logs to keep


def test_a_driver_the_eval_contradicts_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "load-balancing-greedy.yaml").read_text())
    manifest["spec"]["driver"] = "pod"
    eval_file = tmp_path / "eval.yaml"
    eval_file.write_text(yaml.safe_dump(manifest))
    refused = subprocess.run(
        [AGENTMATRIX, "run", str(eval_file), "--driver", "process", "--kubeconfig", str(cluster.kubeconfig),
         "--results-dir", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert "sets spec.driver: pod, but --driver is process: leave one of them out" in message


def test_an_external_command_is_not_given_the_pod_driver(cluster: LocalCluster, tmp_path: Path) -> None:
    """spec.agent.command runs beside the runner, which a shell Pod cannot reach: refused with pod."""
    refused = subprocess.run(
        [AGENTMATRIX, "run", str(REPO / "examples" / "external-shell-agent.yaml"), "--driver", "pod",
         "--kubeconfig", str(cluster.kubeconfig), "--results-dir", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert "the pod driver cannot run here: spec.agent.command runs beside the runner" in message
