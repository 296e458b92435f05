"""The wheel carries the CRD and the deploy manifests; `agentmatrix manifests` prints what
`kubectl kustomize deploy/` renders; `kubectl apply -f crds/` works."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix import manifests
from agentmatrix.cluster import controlplane
from tests.deploy.test_deploy import DEPLOY, ROOT, documents, key, kustomized

AGENTMATRIX = str(Path(sys.executable).with_name("agentmatrix"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT)]
    subprocess.run([*command, "-w", str(out)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("agentmatrix-*.whl")
    return built


def test_wheel_carries_the_crd_the_manifests_and_the_results_schema(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "agentmatrix/crds/agentmatrix.dev_replicationevals.yaml" in names
    assert "agentmatrix/api/results-layout-v1.schema.json" in names
    for path in DEPLOY.rglob("*"):  # the chart's helpers and schema too: `helm install` needs them
        if path.is_file():
            assert f"agentmatrix/deploy/{path.relative_to(DEPLOY)}" in names, path
    assert not any(name.startswith("agentmatrix/crds/kustomization") for name in names)


def test_wheel_carries_every_module_of_the_source_tree(wheel: Path) -> None:
    """A package missing from pyproject's explicit `packages` list is left out of the wheel, and
    the images (and any `pip install`) break on its import: every module must be in it."""
    names = set(zipfile.ZipFile(wheel).namelist())
    parts = {ROOT / "src" / "agentmatrix": "agentmatrix"}
    parts.update({ROOT / part: f"agentmatrix/{part}" for part in ("operator", "webhook", "agent_runner")})
    missing = []
    for folder, inside in parts.items():
        for module in folder.rglob("*.py"):
            relative = module.relative_to(folder)
            if (folder / relative.parts[0]).is_symlink():  # the parts linked in by setup, counted above
                continue
            if f"{inside}/{relative.as_posix()}" not in names:
                missing.append(f"{inside}/{relative.as_posix()}")
    assert missing == []


def test_installed_package_prints_its_own_manifests(wheel: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    script = "from agentmatrix import manifests; print(manifests.root()); print(manifests.deploy())"
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {script}"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    where, rendered = result.stdout.split("\n", 1)
    assert where == str(tmp_path / "site" / "agentmatrix")
    assert documents(rendered) == documents(manifests.deploy())


def test_crd_copy_in_deploy_is_the_crd() -> None:
    copy = (DEPLOY / "base" / "crds" / manifests.CRD_FILE).read_text()
    assert yaml.safe_load(copy) == yaml.safe_load(manifests.crd_path().read_text()), (
        "run scripts/sync_chart.py"
    )


@pytest.mark.cluster
def test_manifests_command_prints_what_kustomize_renders(cluster: controlplane.LocalCluster) -> None:
    printed = subprocess.run([AGENTMATRIX, "manifests"], capture_output=True, text=True, check=True).stdout
    ours: dict[Any, dict[str, Any]] = {key(d): d for d in documents(printed)}
    theirs = {key(d): d for d in kustomized(cluster)}
    assert ours == theirs
    crds = subprocess.run([AGENTMATRIX, "manifests", "--crds"], capture_output=True, text=True, check=True)
    assert [d["kind"] for d in documents(crds.stdout)] == ["CustomResourceDefinition"]


@pytest.mark.cluster
def test_kubectl_apply_f_crds_works(cluster: controlplane.LocalCluster) -> None:
    applied = cluster.kubectl("apply", "-f", str(ROOT / "crds"), check=False)
    assert applied.returncode == 0, applied.stderr
    assert "customresourcedefinition.apiextensions.k8s.io/replicationevals.agentmatrix.dev" in applied.stdout
