"""OCI images from a root filesystem directory, with no registry and no container builder.

A directory becomes one layer (a tar with sorted entries, fixed times and owners), which umoci
adds to an OCI image layout and compresses; each image is then written as an OCI archive that
`ctr images import` loads and any registry tool can push. The same inputs give the same digests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
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


class Layout:
    """An OCI image layout that umoci builds images in, one tag per image; images may share layers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            shutil.rmtree(path)
        _umoci("init", "--layout", str(path))

    def add(self, tag: str, layer: Path, config: ImageConfig, base: str | None = None) -> None:
        """Tag `tag`: the image `base` (or nothing) plus `layer`'s files, with `config`."""
        image = f"{self.path}:{tag}"
        if base is None:
            _umoci("new", "--image", image)
        layer_tar = self.path.parent / f"{tag}.layer.tar"
        write_layer(layer, layer_tar)
        try:
            source = image if base is None else f"{self.path}:{base}"
            _umoci("raw", "add-layer", "--no-history", "--image", source, "--tag", tag, str(layer_tar))
        finally:
            layer_tar.unlink()
        args = ["config", "--no-history", "--image", image, "--created", EPOCH_ISO]
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

    def export(self, tag: str, name: str, archive: Path) -> Image:
        """Write the image `tag` alone, named `name`, as an OCI archive at `archive`."""
        _check_name(name)
        index = json.loads((self.path / "index.json").read_text())
        chosen = [m for m in index["manifests"] if m.get("annotations", {}).get(_REF_NAME) == tag]
        if len(chosen) != 1:
            raise ImageError(f"expected one image tagged {tag} in {self.path}, found {len(chosen)}")
        descriptor = dict(chosen[0])
        # containerd names an imported image after this annotation; the OCI one keeps the tag.
        descriptor["annotations"] = {_REF_NAME: tag, "io.containerd.image.name": name}
        manifest = json.loads(_blob(self.path, descriptor["digest"]).read_text())
        digests = [
            descriptor["digest"],
            manifest["config"]["digest"],
            *(lay["digest"] for lay in manifest["layers"]),
        ]
        with tempfile.TemporaryDirectory(prefix="agentmatrix-oci-") as tmp:
            single = Path(tmp)
            (single / "oci-layout").write_bytes((self.path / "oci-layout").read_bytes())
            for digest in digests:
                source = _blob(self.path, digest)
                target = single / source.relative_to(self.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            (single / "index.json").write_text(
                json.dumps(
                    {"schemaVersion": 2, "manifests": [descriptor]}, sort_keys=True, separators=(",", ":")
                )
            )
            write_archive(single, archive)
        size = sum(int(layer["size"]) for layer in manifest["layers"])
        return Image(name=name, archive=archive, size=size, digest=str(descriptor["digest"]))


_REF_NAME = "org.opencontainers.image.ref.name"


def _check_name(name: str) -> None:
    registry, _, rest = name.partition("/")
    if not rest or "." not in registry or ":" not in rest:
        raise ImageError(f"image name {name!r} must be fully qualified: registry.host/path:tag")


def pack(rootfs: Path, name: str, config: ImageConfig, work: Path, archive: Path) -> Image:
    """Pack `rootfs` as a one-layer image called `name`; write it as an OCI archive at `archive`."""
    _check_name(name)
    tag = name.rsplit(":", 1)[1]
    layout = Layout(work / "layout")
    layout.add(tag, rootfs, config)
    return layout.export(tag, name, archive)


def _blob(layout: Path, digest: str) -> Path:
    algorithm, value = digest.split(":", 1)
    return layout / "blobs" / algorithm / value


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
    info.pax_headers = {}
    return info


def write_layer(rootfs: Path, layer: Path) -> None:
    """An uncompressed layer of `rootfs`'s files: sorted, root-owned, all at the fixed time, and
    closed with tar's end-of-archive blocks (which every reader, GNU tar included, expects)."""
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _sorted_tree(rootfs):
            tar.add(
                str(path), arcname=path.relative_to(rootfs).as_posix(), recursive=False, filter=_normalized
            )


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
