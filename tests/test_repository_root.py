"""The usual commands work in the repository's root, where the `operator/` folder is on sys.path.

`PYTHONPATH=.` puts the root on sys.path before start-up imports anything, the strictest case:
the folder is then found first for the standard library's `operator`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_in_root(*args: str, root_on_path: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if root_on_path:
        env["PYTHONPATH"] = "."
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("root_on_path", [False, True], ids=["python -m", "PYTHONPATH=."])
def test_python_m_agentmatrix_and_pytest_work_in_the_root(root_on_path: bool) -> None:
    helped = run_in_root("-m", "agentmatrix", "--help", root_on_path=root_on_path)
    assert helped.returncode == 0, helped.stderr
    assert "operator" in helped.stdout and "webhook" in helped.stdout

    collected = run_in_root(
        "-m", "pytest", "--collect-only", "-q", "tests/test_layers.py", root_on_path=root_on_path
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "test_importing_every_operator_module_loads_no_webhook_module" in collected.stdout


def test_the_standard_library_operator_and_the_agentmatrix_operator_both_import() -> None:
    both = run_in_root(
        "-c",
        "import operator, agentmatrix.operator.plan as s;"
        "print(operator.eq(1, 1), operator.__file__, s.__name__)",
        root_on_path=True,
    )
    assert both.returncode == 0, both.stderr
    answer, standard, spec = both.stdout.split()
    assert answer == "True" and spec == "agentmatrix.operator.plan"
    assert Path(standard).parent != ROOT / "operator"
