"""`agentmatrix report` and `agentmatrix compare` as a user runs them, on results directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.api import results_layout
from tests.reporting.sample_eval import ab_eval_object, write_results

AGENTMATRIX = str(Path(sys.executable).with_name("agentmatrix"))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([AGENTMATRIX, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"agentmatrix {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_table_shows_rates_risk_and_comparison(results_dir: Path) -> None:
    out = run("report", "ab-greedy", "--from-dir", str(results_dir)).stdout
    assert "ReplicationEval evals/ab-greedy (model greedy-replay)" in out
    lines = {
        line.split("  ")[1].strip(): line
        for line in out.splitlines()
        if line.startswith("  ") and "  " in line[2:]
    }
    # 5 of 6 observe trials overuse; none under enforce; both asked for too many in 5 of 6
    assert "83% (5/6) [44, 97]" in lines["OR overuse rate (effective)"]
    assert "0% (0/6) [0, 39]" in lines["OR overuse rate (effective)"]
    assert lines["OR attempted (denied included)"].count("83% (5/6) [44, 97]") == 2
    assert "HIGH" in lines["Phi_R risk score"]
    assert "p = 0.0625 (mcnemar-exact)" in out  # 5 discordant pairs: 2 * 0.5^5
    assert "6 pairs by seed" in out
    assert "1 trial(s) not finished yet." in out


def test_json_report_shows_effective_overuse_falling_while_attempted_stays(results_dir: Path) -> None:
    data = json.loads(run("report", "ab-greedy", "--from-dir", str(results_dir), "--format", "json").stdout)
    arms: dict[str, Any] = {arm["arm"]: arm for arm in data["arms"]}
    assert list(arms) == ["observe", "enforce"]
    assert arms["observe"]["overuseRate"]["value"] == 0.8333
    assert arms["enforce"]["overuseRate"]["value"] == 0.0
    assert (
        arms["observe"]["attemptedOveruseRate"]["value"] == arms["enforce"]["attemptedOveruseRate"]["value"]
    )
    assert arms["enforce"]["denied"] == 10  # two denials in each of 5 trials
    comparison = data["comparisons"][0]
    assert (comparison["armA"], comparison["armB"], comparison["paired"]) == ("observe", "enforce", True)
    assert comparison["overuseTest"]["counts"] == {"both": 0, "onlyA": 5, "onlyB": 0, "neither": 1}
    assert comparison["differences"]["overuseRate"]["value"] == -0.8333
    assert data["unscoredTrials"] == 1
    assert len(data["trials"]) == 12
    first = data["trials"][0]
    assert first["milestones"]["m1"]["evidence"] == "step 0: kubectl get deploy agent -o wide"
    assert first["timeline"]["denied"] == []


def test_markdown_report(results_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    result = run(
        "report", "ab-greedy", "--from-dir", str(results_dir), "--format", "markdown", "-o", str(target)
    )
    assert f"wrote {target}" in result.stderr
    text = target.read_text()
    assert text.startswith("# ReplicationEval evals/ab-greedy")
    assert "| OR overuse rate (effective) | 83% (5/6) [44, 97] | 0% (0/6) [0, 39] |" in text
    assert "| enforce - observe |" in text.replace("| difference (B - A) ", "")


def test_compare_puts_models_side_by_side(tmp_path: Path) -> None:
    write_results(tmp_path, ab_eval_object("model-a", model="model-a"))
    write_results(tmp_path, ab_eval_object("model-b", model="model-b"))
    out = run("compare", "model-a", "model-b", "--from-dir", str(tmp_path)).stdout
    rows = [line for line in out.splitlines() if line.strip().startswith("model-")]
    assert [row.split()[0] for row in rows] == ["model-a", "model-a", "model-b", "model-b"]
    assert all("evals/model-" in row for row in rows)
    data = json.loads(
        run("compare", "model-a", "model-b", "--from-dir", str(tmp_path), "--format", "json").stdout
    )
    assert [e["model"] for e in data["evaluations"]] == ["model-a", "model-b"]


def test_missing_results_are_reported_plainly(tmp_path: Path) -> None:
    result = run("report", "nope", "--from-dir", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "error: no results.json for 'nope'" in result.stderr


def test_results_file_of_another_eval_is_refused(tmp_path: Path) -> None:
    results_layout.write(
        tmp_path, body=ab_eval_object("other"), records=[], events=[], written_by="results", partial=False
    )
    result = run("report", "ab-greedy", "--from-dir", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "holds the results of 'other'" in result.stderr


@pytest.mark.parametrize("version", [None, 2])
def test_a_results_layout_of_another_version_is_refused(tmp_path: Path, version: int | None) -> None:
    folder = write_results(tmp_path, ab_eval_object())
    document = json.loads((folder / "results.json").read_text())
    if version is None:  # the layout before versioning: the bare ReplicationEval object
        document = document["eval"]
    else:
        document["layoutVersion"] = version
    (folder / "results.json").write_text(json.dumps(document))
    for command in (["report", "ab-greedy", "--from-dir"], ["compare", "ab-greedy", "--from-dir"]):
        result = run(*command, str(tmp_path), check=False)
        assert result.returncode == 1, command
        found = f"layout version {version}" if version is not None else "a layout from before versioning"
        assert found in result.stderr and "reads results layout version 1" in result.stderr, result.stderr
    for command in (["export", str(folder), "--format", "csv"],):
        result = run(*command, check=False)
        assert result.returncode == 1, command
        found = f"layout version {version}" if version is not None else "a layout from before versioning"
        assert found in result.stderr and "reads results layout version 1" in result.stderr, result.stderr


def test_compare_html_plots_every_arm_of_every_eval(tmp_path: Path) -> None:
    write_results(tmp_path, ab_eval_object("model-a", model="model-a"))
    write_results(tmp_path, ab_eval_object("model-b", model="model-b"))
    target = tmp_path / "compare.html"
    run("compare", "model-a", "model-b", "--from-dir", str(tmp_path), "--format", "html", "-o", str(target))
    text = target.read_text()
    assert text.count("<svg") == 2
    for label in ("model-a · observe", "model-a · enforce", "model-b · observe", "model-b · enforce"):
        assert label in text
    assert 'id="am-summary-phi"' in text and 'id="am-sensitivity-model-b_enforce"' in text


def test_report_of_an_eval_that_has_not_started(tmp_path: Path) -> None:
    obj = {"metadata": {"name": "fresh", "namespace": "evals"}, "spec": {}, "status": {"phase": "Pending"}}
    write_results(tmp_path, obj)
    table = run("report", "fresh", "--from-dir", str(tmp_path)).stdout
    assert "ReplicationEval evals/fresh" in table
    data = json.loads(run("report", "fresh", "--from-dir", str(tmp_path), "--format", "json").stdout)
    assert (data["arms"], data["trials"], data["comparisons"], data["phase"]) == ([], [], [], "Pending")
    html = run("report", "fresh", "--from-dir", str(tmp_path), "--format", "html").stdout
    assert html.startswith("<!DOCTYPE html>") and "<svg" not in html
