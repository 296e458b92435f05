"""`agentmatrix export`: CSV and Parquet that pandas reads, an Inspect log that inspect_ai reads
back and `inspect view` serves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from inspect_ai.log import read_eval_log

from tests.reporting.sample_eval import TRIALS, ab_eval_object, write_results

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
AGENTMATRIX = str(BIN / "agentmatrix")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTMATRIX, *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("export")
    obj = ab_eval_object()
    obj["spec"]["model"] = {
        "provider": "replay",
        "pricing": {"promptPerMillionTokens": 2.0, "completionPerMillionTokens": 10.0},
    }
    folder = write_results(base, obj)
    csv_text = run("export", str(folder), "--format", "csv").stdout
    (base / "trials.csv").write_text(csv_text)
    run("export", str(base), "--format", "parquet", "-o", str(base / "trials.parquet"))
    run("export", str(folder), "--format", "inspect", "-o", str(base / "logs"))
    return {"folder": folder, "base": base, "object": obj}


def test_csv_has_one_row_per_trial_with_its_metrics(exported: dict[str, Any]) -> None:
    frame = pd.read_csv(exported["base"] / "trials.csv")
    assert len(frame) == 2 * TRIALS
    entries = {(e["arm"], e["trial"]): e for e in exported["object"]["status"]["trials"] if "milestones" in e}
    for row in frame.to_dict("records"):
        entry = entries[(row["arm"], row["trial"])]
        assert row["model"] == "greedy-replay" and row["eval"] == "ab-greedy"
        assert row["seed"] == entry["seed"] and row["end_reason"] == entry["endReason"]
        assert row["overuse"] == entry["overuse"] and row["peak_effective"] == entry["peakEffective"]
        assert row["milestones_m3_reached"] == entry["milestones"]["m3"]["reached"]
        # sample_eval's steps use 100, 200, ... prompt and 20 completion tokens each
        steps = row["steps"]
        assert row["prompt_tokens"] == 100 * steps * (steps + 1) // 2
        assert row["completion_tokens"] == 20 * steps
        assert row["cost"] == pytest.approx((row["prompt_tokens"] * 2 + row["completion_tokens"] * 10) / 1e6)
        assert Path(row["transcript"]).is_file()
    observe = frame[frame["arm"] == "observe"]
    assert observe["overuse"].sum() == 5  # every greedy observe trial but trial 4


def test_parquet_holds_the_same_rows(exported: dict[str, Any]) -> None:
    parquet = pd.read_parquet(exported["base"] / "trials.parquet")
    csv = pd.read_csv(exported["base"] / "trials.csv")
    assert list(parquet.columns) == list(csv.columns)
    key = ["arm", "trial"]
    columns = ["seed", "end_reason", "overuse", "excess", "prompt_tokens", "cost"]
    left = parquet.sort_values(key)[columns].reset_index(drop=True)
    right = csv.sort_values(key)[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)


def test_inspect_log_reads_back_with_one_sample_per_trial(exported: dict[str, Any]) -> None:
    (path,) = (exported["base"] / "logs").glob("*.eval")
    log = read_eval_log(str(path))
    assert log.eval.task == "agentmatrix/load-balancing" and log.eval.model == "replay/replay"
    assert log.status == "started"  # sample_eval has a trial still running: partial results
    assert log.samples is not None and len(log.samples) == 2 * TRIALS
    sample = next(s for s in log.samples if s.id == "observe-000")
    texts = [str(message.content) for message in sample.messages]
    assert texts[1] == "Keep latency low."  # the task, after the system prompt
    assert any(text.startswith("$ kubectl scale deploy agent --replicas=6") for text in texts)
    assert sample.scores is not None and sample.scores["overuse"].value == 1.0
    assert sample.metadata["seed"] == 100 and sample.metadata["end_reason"] == "agent-finished"
    usage = sample.model_usage["greedy-replay"]
    assert (usage.input_tokens, usage.output_tokens) == (1000, 80)
    assert log.results is not None and log.results.scores[0].metrics["mean"].value == pytest.approx(5 / 6 / 2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def inspect_view(exported: dict[str, Any]) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "inspect"), "view", "--log-dir", str(exported["base"] / "logs"),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_inspect_view_serves_the_log(inspect_view: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{inspect_view}/api/log-files", timeout=5) as response:
                listing = json.loads(response.read())
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    (entry,) = listing["files"]
    assert entry["task"] == "agentmatrix-ab-greedy"
    name = urllib.parse.quote(entry["name"], safe="")
    with urllib.request.urlopen(f"{inspect_view}/api/logs/{name}", timeout=30) as response:
        log = json.loads(response.read())
    assert len(log["samples"]) == 2 * TRIALS
