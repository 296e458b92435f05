"""The images `agentmatrix image build` makes: what they install, that they are reproducible, and
that the pause program behaves as a pod sandbox's first process."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path

import pytest

from agentmatrix.cluster import images, oci

ROOT = Path(__file__).resolve().parents[2]


def _pip_installs(dockerfile: str) -> list[list[str]]:
    """The argument lists of every `pip install` in the Dockerfile's RUN instructions."""
    joined = dockerfile.replace("\\\n", " ")
    installs = []
    for line in joined.splitlines():
        if not line.startswith("RUN "):
            continue
        for command in re.split(r"&&|;", line[4:]):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                installs.append(words[2:])
    return installs


def test_dockerfile_installs_what_image_build_installs() -> None:
    installs = _pip_installs((ROOT / "Dockerfile").read_text())
    without_cache = [[arg for arg in args if arg != "--no-cache-dir"] for args in installs]
    lock_install = [args for args in without_cache if "-r" in args]
    project_install = [args for args in without_cache if images.PROJECT_REQUIREMENT in args]
    assert len(lock_install) == 1 and len(project_install) == 1, installs
    assert lock_install[0][:-1] == list(images.LOCK_INSTALL)
    assert Path(lock_install[0][-1]).name == images.LOCK_FILE
    assert project_install[0][: len(images.PROJECT_INSTALL)] == list(images.PROJECT_INSTALL)
    assert project_install[0][-1] == images.PROJECT_REQUIREMENT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_lock_pins_every_dependency_with_a_hash() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    locked = {}
    for line in (ROOT / images.LOCK_FILE).read_text().splitlines():
        if line and not line.startswith("#"):
            requirement, _, digest = line.partition(" --hash=sha256:")
            name, _, version = requirement.partition("==")
            assert version and len(digest) == 64, line
            locked[name.replace("_", "-")] = version
    missing = {_name(d) for d in dependencies} - set(locked)
    assert not missing, f"not in {images.LOCK_FILE} (run scripts/lock.py): {sorted(missing)}"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTMATRIX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_small_images_are_reproducible_and_fully_named(cache: Path) -> None:
    first = [images.build_pause(lambda _m: None), images.build_service(lambda _m: None)]
    archives = [image.archive.read_bytes() for image in first]
    second = [images.build_pause(lambda _m: None), images.build_service(lambda _m: None)]
    assert [image.digest for image in first] == [image.digest for image in second]
    assert archives == [image.archive.read_bytes() for image in second]
    for image in second:
        with tarfile.open(image.archive) as tar:
            index_file = tar.extractfile("index.json")
            assert index_file is not None
            index = json.load(index_file)
        annotations = index["manifests"][0]["annotations"]
        assert annotations["io.containerd.image.name"] == image.name
        assert image.name.split("/", 1)[0].count(".") >= 1  # a registry host, never docker.io's default
    assert first[0].size < 1024**2 and first[1].size < 4 * 1024**2


def test_short_image_names_are_refused(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    with pytest.raises(oci.ImageError, match="fully qualified"):
        oci.pack(rootfs, "local/img:x", oci.ImageConfig(), tmp_path, tmp_path / "x.tar")


def test_pause_runs_until_sigterm_and_exits_cleanly(cache: Path, tmp_path: Path) -> None:
    image = images.build_pause(lambda _m: None)
    with tarfile.open(image.archive) as tar:
        tar.extractall(tmp_path / "layout", filter="data")
    layout = tmp_path / "layout"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    with tarfile.open(layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]) as layer:
        layer.extractall(tmp_path / "rootfs", filter="data")
    pause = subprocess.Popen([str(tmp_path / "rootfs" / "pause")])
    time.sleep(0.2)
    assert pause.poll() is None
    os.kill(pause.pid, signal.SIGTERM)
    assert pause.wait(timeout=5) == 0


def test_the_python_images_are_outdated_when_their_sources_change(cache: Path, tmp_path: Path) -> None:
    """`agentmatrix run` and the real-node tests rebuild an image only when this is not empty."""
    assert images.outdated() == list(images.ALL_IMAGES)  # nothing built in this cache yet
    checkout = tmp_path / "checkout"
    (checkout / "operator").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\nname = 'agentmatrix'\n")
    (checkout / images.LOCK_FILE).write_text("")
    module = checkout / "operator" / "trial.py"
    module.write_text("STEPS = 1\n")
    before = images.source_digest(checkout)
    (checkout / "operator" / "__pycache__").mkdir()
    (checkout / "operator" / "__pycache__" / "trial.cpython-311.pyc").write_bytes(b"\0")
    (checkout / "results").mkdir()
    (checkout / "results" / "run.json").write_text("{}")
    assert images.source_digest(checkout) == before  # byte code and results are not sources
    module.write_text("STEPS = 2\n")
    assert images.source_digest(checkout) != before
