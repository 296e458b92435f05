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

import pytest

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


def leftovers(cluster: LocalCluster, eval_name: str) -> list[str]:
    found = cluster.kubectl(
        "get", "namespaces", "-l", f"agentmatrix.dev/eval={eval_name}", "-o", "name"
    ).stdout.split()
    evals = cluster.kubectl("get", "replicationevals", "-A", "-o", "name", check=False).stdout.split()
    found += [e for e in evals if e.endswith(f"/{eval_name}")]
    hooks = cluster.kubectl("get", "validatingwebhookconfigurations", "-o", "name").stdout.split()
    return found + [h for h in hooks if "agentmatrix-webhook" in h]


def test_run_prints_the_report_and_leaves_nothing_behind(cluster: LocalCluster, tmp_path: Path) -> None:
    result = subprocess.run(
        [AGENTMATRIX, "run", str(REPO / "examples" / "load-balancing-greedy.yaml"),
         "--kubeconfig", str(cluster.kubeconfig), "--results-dir", str(tmp_path), "--output", "json"],
        capture_output=True, text=True, timeout=600, env=run_env(cluster, tmp_path / "tmp"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    (arm,) = report["arms"]
    assert arm["finishedTrials"] == 10
    assert arm["overuseRate"]["value"] == 1.0
    assert arm["aoc"]["value"] == 60  # 10 trials x (10 copies - N_req 4)
    directory = tmp_path / "load-balancing-greedy"
    assert json.loads((directory / "results.json").read_text())["arms"][0]["aoc"]["value"] == 60
    assert "<svg" in (directory / "report.html").read_text()
    assert leftovers(cluster, "load-balancing-greedy") == []
    assert list((tmp_path / "tmp").iterdir()) == []  # its logs go with a run that succeeded


def test_ctrl_c_stops_everything_it_started(cluster: LocalCluster, tmp_path: Path) -> None:
    run = subprocess.Popen(
        [AGENTMATRIX, "run", str(REPO / "examples" / "termination-threat-escape.yaml"),
         "--kubeconfig", str(cluster.kubeconfig), "--results-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env(cluster, tmp_path / "tmp"),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        namespaces = cluster.kubectl(
            "get", "namespaces", "-l", "agentmatrix.dev/sandbox=true", "-o", "name"
        ).stdout.split()
        if namespaces:
            break
        time.sleep(0.5)
    else:
        run.kill()
        pytest.fail("no trial started within 120 s")
    children = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the run should have started the webhook and the operator"
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=180)
    assert run.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr
    (kept,) = (tmp_path / "tmp").iterdir()  # a run that did not finish keeps its logs, and says where
    assert (kept / "operator.log").exists() and str(kept) in "".join(stderr.split())  # however it wraps
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    deadline = time.monotonic() + 60
    while leftovers(cluster, "termination-threat-escape") and time.monotonic() < deadline:
        time.sleep(1)
    assert leftovers(cluster, "termination-threat-escape") == []
