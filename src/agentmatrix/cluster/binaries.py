"""Find or build the control-plane binaries (Kubernetes, etcd, kwok) from Go modules.

No release binaries or container images can be assumed: Kubernetes, etcd and kwok are all
published as Go modules, so a throw-away Go module per component builds them with the local
toolchain. Binaries are looked up first in an explicit directory, then ``KUBEBUILDER_ASSETS``,
then the cache; only what is missing is built.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.7.0"

KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_BINARIES = (*KUBERNETES_BINARIES, "etcd", "kwok")
# Only a real node (`cluster up --real-node`) needs these; they are built on request.
NODE_BINARIES = ("kubelet",)

# Staging modules that have no tag of their own and nothing in the build needs.
_UNTAGGED_STAGING = {"k8s.io/sample-cli-plugin"}

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """A binary could not be found or built; the message says what to do."""


def cache_dir() -> Path:
    base = os.environ.get("AGENTMATRIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "agentmatrix"
    )
    return Path(base)


def bin_dir() -> Path:
    return cache_dir() / "bin" / f"k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-kwok-{KWOK_VERSION}"


@dataclass(frozen=True)
class Binaries:
    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]

    @property
    def kubectl(self) -> Path:
        return self.paths["kubectl"]


def _search_dirs(explicit: Path | None) -> list[Path]:
    dirs: list[Path] = []
    if explicit is not None:
        dirs.append(explicit)
    env_dir = os.environ.get("AGENTMATRIX_BIN_DIR")
    if env_dir:
        dirs.append(Path(env_dir))
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        dirs.append(Path(assets))
    dirs.append(bin_dir())
    return dirs


def locate(
    explicit: Path | None = None, names: tuple[str, ...] = ALL_BINARIES
) -> tuple[dict[str, Path], list[str]]:
    """Return the binaries found and the names still missing."""
    found: dict[str, Path] = {}
    for name in names:
        for directory in _search_dirs(explicit):
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = candidate
                break
    missing = [name for name in names if name not in found]
    return found, missing


def find(explicit: Path | None = None) -> Binaries:
    found, missing = locate(explicit)
    if missing:
        raise BuildError(
            f"missing control-plane binaries: {', '.join(missing)}; "
            "run `agentmatrix cluster build` (or point KUBEBUILDER_ASSETS / --bin-dir at them)"
        )
    return Binaries(found)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed: install a Go toolchain (1.25 or newer, e.g. the `golang` "
            "package) or provide prebuilt binaries through KUBEBUILDER_ASSETS"
        )
    return go


def _go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod -buildvcs=false"})
    env.update(extra or {})
    return env


def _run(cmd: list[str], cwd: Path, progress: Progress, what: str, env: dict[str, str] | None = None) -> None:
    started = time.monotonic()
    progress(f"{what}: {' '.join(cmd[:3])} ...")
    with subprocess.Popen(
        cmd, cwd=cwd, env=_go_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        tail: collections.deque[str] = collections.deque(maxlen=30)
        for line in proc.stdout:
            tail.append(line.rstrip())
            if line.startswith(("go: downloading", "go: finding")):
                progress(f"{what}: {line.strip()}")
        code = proc.wait()
    if code != 0:
        detail = "\n".join(tail)
        hint = ""
        if "proxy" in detail or "dial tcp" in detail or "404" in detail or "410" in detail:
            hint = " (a Go module could not be fetched: check GOPROXY and network access)"
        raise BuildError(f"{what} failed{hint}:\n{detail}")
    progress(f"{what}: done in {time.monotonic() - started:.0f}s")


def _staging_modules(version: str) -> list[str]:
    """Read the staging modules from the release's own go.mod, as the Go proxy serves it."""
    proxy = os.environ.get("GOPROXY", "https://proxy.golang.org").split(",")[0]
    if proxy in ("direct", "off"):
        raise BuildError("GOPROXY must name a module proxy to build Kubernetes")
    url = f"{proxy.rstrip('/')}/k8s.io/kubernetes/@v/{version}.mod"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - proxy URL
            text = response.read().decode()
    except OSError as exc:
        raise BuildError(
            f"could not fetch k8s.io/kubernetes {version} go.mod from the module proxy: {exc}"
        ) from exc
    modules = []
    for line in text.splitlines():
        parts = line.split()
        is_staging = len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("./staging/")
        if is_staging and parts[0] not in _UNTAGGED_STAGING:
            modules.append(parts[0])
    if not modules:
        raise BuildError(f"k8s.io/kubernetes {version} go.mod lists no staging modules")
    return modules


def _version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitCommit=0000000000000000000000000000000000000000",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={stamp}",
        ]
    return " ".join(flags)


def _build_kubernetes(workdir: Path, out: Path, names: list[str], progress: Progress) -> None:
    go = _go()
    staging_minor = "v0." + KUBERNETES_VERSION.lstrip("v").split(".", 1)[1]
    replaces = "\n".join(f"\t{m} => {m} {staging_minor}" for m in _staging_modules(KUBERNETES_VERSION))
    (workdir / "go.mod").write_text(
        "module agentmatrix.local/kubernetes\n\ngo 1.25\n\n"
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\nreplace (\n{replaces}\n)\n"
    )
    pkgs = [f"k8s.io/kubernetes/cmd/{name}" for name in names]
    _run(
        [go, "get", *(f"{p}@{KUBERNETES_VERSION}" for p in pkgs)],
        workdir,
        progress,
        f"fetch Kubernetes {KUBERNETES_VERSION}",
    )
    for name, pkg in zip(names, pkgs, strict=True):
        cmd = [go, "build", "-trimpath", "-ldflags", _version_ldflags(KUBERNETES_VERSION)]
        _run([*cmd, "-o", str(out / name), pkg], workdir, progress, f"build {name}")


def _build_etcd(workdir: Path, out: Path, progress: Progress) -> None:
    go = _go()
    (workdir / "go.mod").write_text(
        f"module agentmatrix.local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
    )
    pkg = "go.etcd.io/etcd/server/v3"
    _run([go, "get", f"{pkg}@{ETCD_VERSION}"], workdir, progress, f"fetch etcd {ETCD_VERSION}")
    _run(
        [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), pkg],
        workdir,
        progress,
        "build etcd",
    )


def _build_kwok(out: Path, progress: Progress) -> None:
    go = _go()
    with tempfile.TemporaryDirectory(prefix="agentmatrix-kwok-") as gobin:
        env_dir = Path(gobin)
        cmd = [go, "install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"]
        _run(cmd, env_dir, progress, f"build kwok {KWOK_VERSION}", env={"GOBIN": str(env_dir)})
        shutil.copy2(env_dir / "kwok", out / "kwok")


def find_node(explicit: Path | None = None) -> Path:
    """The kubelet a real node runs."""
    found, missing = locate(explicit, NODE_BINARIES)
    if missing:
        raise BuildError("kubelet is missing; run `agentmatrix cluster build --real-node`")
    return found["kubelet"]


def build(
    explicit: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
    real_node: bool = False,
) -> Binaries:
    """Build whatever binaries are missing into the cache and return all of them (with the
    kubelet too when `real_node`)."""
    say: Progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    wanted = (*ALL_BINARIES, *NODE_BINARIES) if real_node else ALL_BINARIES
    found, missing = locate(explicit, wanted)
    if force:
        found, missing = {}, list(wanted)
    if not missing:
        say("all control-plane binaries present: " + ", ".join(str(p) for p in found.values()))
        return Binaries(found)
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    say(f"building {', '.join(missing)} into {out} (a cold build takes 20-35 minutes on 2 cores)")
    with tempfile.TemporaryDirectory(prefix="agentmatrix-build-") as tmp:
        work = Path(tmp)
        k8s = [n for n in (*KUBERNETES_BINARIES, *NODE_BINARIES) if n in missing]
        if k8s:
            (work / "k8s").mkdir()
            _build_kubernetes(work / "k8s", out, k8s, say)
        if "etcd" in missing:
            (work / "etcd").mkdir()
            _build_etcd(work / "etcd", out, say)
        if "kwok" in missing:
            _build_kwok(out, say)
    bins = find(explicit)
    if real_node:
        return Binaries({**bins.paths, "kubelet": find_node(explicit)})
    return bins
