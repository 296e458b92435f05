"""The parts load what the layers allow: checked on the modules Python really imports.

Each check runs in a fresh interpreter, imports every module of one package (as a process that
uses the package would) and reports which `agentmatrix` modules ended up in `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys

_LOADED = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [sys.argv[1]] + [
    m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + ".")
    if not m.name.endswith(".__main__")
]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.startswith("agentmatrix"))
print(json.dumps({"imported": names, "loaded": loaded}))
"""


def loaded_by(package: str) -> tuple[list[str], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, package], capture_output=True, text=True, check=True, timeout=120
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return found["imported"], found["loaded"]


def within(loaded: list[str], part: str) -> list[str]:
    return [m for m in loaded if m == part or m.startswith(part + ".")]


def test_importing_every_operator_module_loads_no_webhook_module() -> None:
    imported, loaded = loaded_by("agentmatrix.operator")
    assert "agentmatrix.operator.trial" in imported and "agentmatrix.operator.handlers" in imported
    assert within(loaded, "agentmatrix.webhook") == []


def test_the_measurement_core_loads_none_of_the_parts_built_on_it() -> None:
    imported, loaded = loaded_by("agentmatrix.measurement")
    assert "agentmatrix.measurement.ledger" in imported
    for part in ("agentmatrix.webhook", "agentmatrix.operator", "agentmatrix.cli", "agentmatrix.reporting"):
        assert within(loaded, part) == [], part


def test_the_operator_process_loads_neither_the_agent_runner_nor_the_model_client() -> None:
    """What `python -m agentmatrix.operator run` imports (the runner host is a child process)."""
    code = (
        "import sys, agentmatrix.operator.cli, agentmatrix.operator.handlers;"
        "print(sorted(m for m in sys.modules if m == 'openai' or m.startswith('agentmatrix.agent_runner')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
