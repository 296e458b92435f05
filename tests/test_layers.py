"""The parts load what the layers allow: checked on the modules Python really imports, and by
import-linter on the contracts of pyproject.toml.

Each import check runs in a fresh interpreter, imports every module of one package (as a process
that uses the package would) and reports which `agentmatrix` modules ended up in `sys.modules`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PARTS = ("operator", "webhook", "agent_runner")

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


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plain_lint_imports_in_the_root_keeps_every_contract() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    linted = lint_imports(ROOT)
    hint = "\n(the parts are linked into src/agentmatrix by scripts/link_parts.sh, which setup.sh runs)"
    assert linted.returncode == 0, linted.stdout + linted.stderr + hint
    assert f"Contracts: {len(contracts)} kept, 0 broken." in linted.stdout


@pytest.mark.parametrize(
    ("module", "forbidden", "contract"),
    [
        ("operator/plan.py", "agentmatrix.webhook.server", "Layers: command line"),
        ("agent_runner/loop.py", "agentmatrix.measurement.ledger", "The agent runner knows nothing"),
    ],
    ids=["operator imports webhook", "agent runner imports measurement"],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, forbidden: str, contract: str
) -> None:
    """A copy of the checkout, its parts linked by the setup's own script, with one forbidden import."""
    ignore = shutil.ignore_patterns("__pycache__", *PARTS)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=ignore)
    for part in PARTS:
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "link_parts.sh", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    subprocess.run(["bash", "scripts/link_parts.sh"], cwd=tmp_path, check=True, timeout=60)
    source = tmp_path / module
    source.write_text(source.read_text() + f"\nimport {forbidden}  # noqa\n")

    # The copy's src/ ahead of the installed (editable) package, which maps to this checkout.
    linted = lint_imports(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "src")})
    assert linted.returncode == 1, linted.stdout + linted.stderr
    importer = "agentmatrix." + module.removesuffix(".py").replace("/", ".")
    assert contract in linted.stdout.split("Broken contracts")[1]
    assert f"{importer} -> {forbidden}" in linted.stdout
