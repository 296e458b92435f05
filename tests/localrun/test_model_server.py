"""`agentmatrix run` stops the local model server only when it started it and --keep-cluster was
not given; a server the user started beforehand keeps running.

The stand-in for llama-server is Python's http.server, serving a folder with a file `health`:
like llama-server it answers GET /health with 200 on 127.0.0.1, which is all the run's checks
read. Installing the real server and model (a build and a 1.1 GB download) is replaced by paths
that are never executed."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from agentmatrix import localrun
from agentmatrix.agent_runner import local_model
from agentmatrix.cluster import processes


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("AGENTMATRIX_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "health").write_text("ok")

    def stand_in_argv(binary: Path, model: Path, port: int, threads: int, key_file: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(site),
        ]

    monkeypatch.setattr(
        local_model, "install_server", lambda progress=None, force=False: Path("/nonexistent")
    )
    monkeypatch.setattr(local_model, "install_model", lambda progress=None, force=False: Path("/nonexistent"))
    monkeypatch.setattr(local_model, "server_argv", stand_in_argv)
    yield local_model.llm_dir()
    local_model.down()  # whatever a case left running


def a_run(keep_cluster: bool) -> localrun.LocalRun:
    options = localrun.RunOptions(eval_file=Path("unused.yaml"), keep_cluster=keep_cluster)
    return localrun.LocalRun(options, Console(file=io.StringIO()))


def server_of(llm_dir: Path) -> processes.RecordedProcess:
    return local_model.LocalModel(**json.loads((llm_dir / "server.json").read_text())).process


@pytest.mark.parametrize(("keep_cluster", "stays"), [(False, False), (True, True)])
def test_a_server_the_run_started_is_stopped_unless_kept(
    model_cache: Path, keep_cluster: bool, stays: bool
) -> None:
    run = a_run(keep_cluster)
    evaluation = {"spec": {"model": {"provider": "local"}}}
    run.ensure_model(evaluation)
    assert evaluation["spec"]["model"]["endpoint"].startswith("http://127.0.0.1:")
    server = server_of(model_cache)
    assert processes.is_alive(server)
    run.close(succeeded=True)
    assert processes.is_alive(server) is stays


def test_a_server_running_before_the_run_keeps_running(model_cache: Path) -> None:
    before = local_model.up()  # the user's own `agentmatrix llm up`
    run = a_run(keep_cluster=False)
    evaluation = {"spec": {"model": {"provider": "local"}}}
    run.ensure_model(evaluation)
    assert evaluation["spec"]["model"]["endpoint"] == before.base_url
    run.close(succeeded=True)
    assert processes.is_alive(before.process)
    assert local_model.status() == before
