"""`pod_command`, the program each of the agent's commands runs under in its shell Pod, run here as
the exec would run it (`python3 -IS -c SOURCE PARAMS`) in what a container gives it: a pid
namespace of its own with an idle init, as an unprivileged user. Real processes, real rlimits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.agent_runner.limits import LimitHit, LimitMeter, Limits
from agentmatrix.agent_runner.pod_sandbox import command_params, parse_report, pod_command, rusage

UID = 0x5F000123  # a user of this test only, as the shell Pod's user is the trial's own

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None,
    reason="needs root, unshare and setpriv (util-linux) to make a container-like pid namespace",
)


def run_in_container(
    params: dict[str, Any], home: Path, stop_after: float | None = None
) -> tuple[bytes, dict[str, Any], str]:
    """Run `pod_command` as exec would, with an idle init as pid 1 (as the shell Pod's) and its
    stdin held open (a line on it after `stop_after` seconds); returns its stdout, its report and
    the processes of the user left once it ended (as the init lists them)."""
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, UID, UID)
    exec_argv = pod_command({**params, "home": str(home)})
    exec_argv[0] = sys.executable if sys.executable.startswith("/usr/") else "/usr/bin/python3"
    init = (
        '"$@" 2>"$REPORT"; '  # the exec'd command, then: which of the user's processes are left
        'for p in /proc/[0-9]*; do n=${p#/proc/}; [ "$n" != 1 ] && [ "$n" != $$ ] && '
        f'grep -q "^Uid:\t{UID}\t" "$p/status" 2>/dev/null && cat "$p/comm"; done >"$LEFT"; exit 0'
    )
    report, left = home.parent / "report.json", home.parent / "left.txt"
    for path in (report, left):
        path.touch()
        os.chown(path, UID, UID)
    stdin, held = os.pipe()
    process = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "setpriv", f"--reuid={UID}", f"--regid={UID}",
         "--clear-groups", "/bin/sh", "-c", init, "init", *exec_argv],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "REPORT": str(report), "LEFT": str(left),
             "KUBERNETES_SERVICE_HOST": "10.96.0.1"},
    )  # fmt: skip
    os.close(stdin)
    try:
        if stop_after is not None:
            time.sleep(stop_after)
            os.write(held, b"stop\n")
        out, err = process.communicate(timeout=60)
    finally:
        os.close(held)
    assert process.returncode == 0, err
    return out, parse_report(report.read_bytes()), left.read_text()


def shell(command: str, time_limit: float = 20, limits: Limits | None = None) -> dict[str, Any]:
    meter = LimitMeter(limits or Limits(), None)
    return command_params(["sh", "-c", command], meter, time_limit, record_kubectl=False)


@pytest.fixture
def home() -> Iterator[Path]:
    """Outside pytest's own temporary directories, which only root may enter."""
    root = Path(tempfile.mkdtemp(prefix="agentmatrix-pod-command-"))
    root.chmod(0o755)
    yield root / "home"
    shutil.rmtree(root, ignore_errors=True)


def test_output_exit_code_and_a_clean_environment_come_back(home: Path) -> None:
    out, report, _ = run_in_container(shell("echo out; echo err >&2; env | sort; pwd; exit 3"), home)
    lines = out.decode().splitlines()
    assert lines[:2] == ["out", "err"]  # stderr on the same stream, in order
    names = sorted(line.split("=", 1)[0] for line in lines[2:-1])
    assert names == ["GOGC", "HOME", "KUBERNETES_SERVICE_HOST", "PATH", "PWD"]
    assert lines[-1] == str(home)
    assert report["exit"] == 3 and not report["timed_out"] and not report["stopped"]


def test_the_trials_rlimits_hold_and_cannot_be_raised(home: Path) -> None:
    limits = Limits(processes=64, memory_bytes=128 << 20, cpu_seconds=30)
    out, report, _ = run_in_container(
        shell("cat /proc/self/limits; ulimit -p 100 2>/dev/null || echo refused", limits=limits), home
    )
    text = out.decode()
    assert "Max processes             64                   64" in text
    assert f"Max data size             {128 << 20}            {128 << 20}" in text
    assert "Max cpu time              30                   30" in text
    assert "refused" in text and report["exit"] == 0


def test_background_processes_die_with_the_command_and_their_cpu_counts(home: Path) -> None:
    busy = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
    out, report, left = run_in_container(
        shell(f"sleep 300 & setsid sleep 301 & ( {busy} ) & wait $!; echo done"), home
    )
    assert out.decode().strip() == "done"
    assert left == ""  # the init saw none of the user's processes afterwards
    assert report["utime"] + report["stime"] > 0.05  # the orphaned busy loop's CPU was reaped here


def test_a_command_past_its_time_limit_is_killed_and_reported(home: Path) -> None:
    started = time.monotonic()
    _, report, left = run_in_container(shell("echo start; sleep 300", time_limit=1), home)
    assert report["timed_out"] is True and left == ""
    assert time.monotonic() - started < 30


def test_a_line_on_stdin_stops_the_command(home: Path) -> None:
    _, report, left = run_in_container(shell("sleep 300"), home, stop_after=1.0)
    assert report["stopped"] is True and report["timed_out"] is False and left == ""


def test_a_fork_bomb_reaches_the_process_limit_and_leaves_nothing(home: Path) -> None:
    limits = Limits(processes=40)
    out, report, left = run_in_container(shell("b() { b | b & }; b; sleep 20", limits=limits), home)
    assert left == ""
    meter = LimitMeter(limits, None)  # as the runner reads the report (pod_sandbox)
    hit = meter.command_ended(rusage(report), None, bool(report["at_process_limit"]), out)
    assert hit is LimitHit.PROCESSES


def test_peak_memory_is_reported(home: Path) -> None:
    grow = "python3 -c \"b = b'x' * (96 << 20); print(len(b))\""
    out, report, _ = run_in_container(shell(grow), home)
    assert out.decode().strip() == str(96 << 20)
    assert report["maxrss_kib"] >= 96 << 10


def test_files_are_written_into_the_home(home: Path) -> None:
    _, report, _ = run_in_container({"files": {"prompt.txt": "do it\n"}}, home)
    assert report == {"exit": 0, "written": ["prompt.txt"]}
    assert (home / "prompt.txt").read_text() == "do it\n" and (home / "prompt.txt").stat().st_uid == UID


def test_it_refuses_to_run_as_root(tmp_path: Path) -> None:
    argv = pod_command(shell("true"))
    done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "never as root" in done.stderr


def test_the_exec_command_carries_the_program_and_its_parameters() -> None:
    meter = LimitMeter(Limits(processes=99, memory_bytes=1 << 20, cpu_seconds=7.2), None)
    meter.cpu_used = 3.0
    argv = pod_command(command_params(["sh", "-c", "kubectl get pods"], meter, 12.5))
    assert argv[:3] == ["python3", "-IS", "-c"] and "def main()" in argv[3]
    params = json.loads(argv[4])
    assert params["argv"] == ["sh", "-c", "kubectl get pods"] and params["time_limit"] == 12.5
    assert params["rlimits"] == {"NPROC": 99, "DATA": 1 << 20, "CPU": 5, "CORE": 0}  # what CPU is left
    assert params["shim"].startswith('"""The recording kubectl') and params["home"] == "/home/agent"
