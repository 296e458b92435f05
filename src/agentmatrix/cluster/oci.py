"""OCI images from a root filesystem directory, with no registry and no container builder.

umoci packs a directory as one layer of an OCI image layout; the layout is then written as a
reproducible tar archive (sorted entries, fixed times and owners) that `ctr images import`
loads and any registry tool can push. Files get one fixed modification time, so the same
inputs give the same digests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Every packed file gets this time (2024-01-01T00:00:00Z), and so does the image config.
EPOCH = 1704067200
EPOCH_ISO = "2024-01-01T00:00:00Z"


class ImageError(RuntimeError):
    """An image could not be built or loaded; the message says why."""


@dataclass(frozen=True)
class ImageConfig:
    """What `docker inspect` would call the image's Config."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    env: tuple[str, ...] = ()
    workdir: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Image:
    name: str  # fully qualified, e.g. registry.local/agentmatrix/pause:3.10
    archive: Path  # the OCI archive
    size: int  # bytes of the compressed layers, as a registry would store them
    digest: str  # the manifest's digest

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


def _umoci(*args: str) -> None:
    result = subprocess.run(["umoci", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageError(f"umoci {' '.join(args[:2])} failed: {result.stderr.strip()}")


def normalize_times(root: Path) -> None:
    """Give every file under `root` the fixed time, so that layers do not depend on when they were made."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*filenames, *dirnames):
            os.utime(Path(dirpath) / name, (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(root, (EPOCH, EPOCH))


def pack(rootfs: Path, name: str, config: ImageConfig, work: Path, archive: Path) -> Image:
    """Pack `rootfs` as a one-layer image called `name`; write it as an OCI archive at `archive`."""
    if "/" not in name.split(":", 1)[0] or ":" not in name.rsplit("/", 1)[1]:
        raise ImageError(f"image name {name!r} must be fully qualified: registry/path:tag")
    tag = name.rsplit(":", 1)[1]
    layout = work / "layout"
    if layout.exists():
        shutil.rmtree(layout)
    normalize_times(rootfs)
    _umoci("init", "--layout", str(layout))
    _umoci("new", "--image", f"{layout}:{tag}")
    _umoci("insert", "--no-history", "--image", f"{layout}:{tag}", str(rootfs), "/")
    args = ["config", "--no-history", "--image", f"{layout}:{tag}", "--created", EPOCH_ISO]
    args += ["--architecture", "amd64", "--os", "linux"]
    args += [f"--config.entrypoint={part}" for part in config.entrypoint]
    args += [f"--config.cmd={part}" for part in config.cmd]
    args += [f"--config.env={entry}" for entry in config.env]
    args += [f"--config.label={key}={value}" for key, value in config.labels]
    if config.user:
        args.append(f"--config.user={config.user}")
    if config.workdir:
        args.append(f"--config.workingdir={config.workdir}")
    _umoci(*args)
    _umoci("gc", "--layout", str(layout))
    index = json.loads((layout / "index.json").read_text())
    manifests = index["manifests"]
    if len(manifests) != 1:
        raise ImageError(f"expected one manifest in {layout}, found {len(manifests)}")
    # containerd names an imported image after this annotation; the OCI one keeps the tag.
    manifests[0].setdefault("annotations", {})["io.containerd.image.name"] = name
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True, separators=(",", ":")))
    manifest_digest = str(manifests[0]["digest"])
    manifest = json.loads(_blob(layout, manifest_digest).read_text())
    size = sum(int(layer["size"]) for layer in manifest["layers"])
    write_archive(layout, archive)
    return Image(name=name, archive=archive, size=size, digest=manifest_digest)


def _blob(layout: Path, digest: str) -> Path:
    algorithm, value = digest.split(":", 1)
    return layout / "blobs" / algorithm / value


def write_archive(layout: Path, archive: Path) -> None:
    """Tar an OCI layout reproducibly: sorted names, root-owned, all at the fixed time."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(archive.suffix + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _sorted_tree(layout):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(layout).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
            info.pax_headers = {}
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isfile():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    tmp.replace(archive)


def _sorted_tree(root: Path) -> Iterable[Path]:
    for entry in sorted(root.iterdir()):
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _sorted_tree(entry)


def load(ctr: list[str], archive: Path) -> None:
    """Import an OCI archive into containerd's Kubernetes namespace (`ctr` with its address)."""
    result = subprocess.run(
        [*ctr, "-n", "k8s.io", "images", "import", str(archive)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ImageError(f"ctr images import {archive.name} failed: {result.stderr.strip()}")
