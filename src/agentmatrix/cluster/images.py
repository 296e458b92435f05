"""The container images a real node runs, built here with no registry.

- pause: the pod sandbox's process, a static C program.
- agent-service: the workload the agent keeps healthy (busybox's httpd, from Debian's static
  busybox): each replica is a real process costing real memory.

Each image is packed with umoci (`agentmatrix.cluster.oci`), written as an OCI archive under the
cache and imported into the node's containerd under a fully qualified name (containerd looks a
short name up as `docker.io/...`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from agentmatrix import __version__
from agentmatrix.api import names
from agentmatrix.cluster import binaries, oci

REGISTRY = "registry.local/agentmatrix"
PAUSE_IMAGE = f"{REGISTRY}/pause:3.10"
SERVICE_IMAGE = names.DEFAULT_AGENT_IMAGE
SERVICE_PORT = 8080
BUSYBOX = Path("/bin/busybox")
LOCK_FILE = "requirements.lock"
# How the images install the package; the Dockerfile's two `pip install`s use the same options.
LOCK_INSTALL = ("--no-deps", "--require-hashes", "--only-binary=:all:", "-r")
PROJECT_INSTALL = ("--no-deps", "--no-index", "--find-links")
PROJECT_REQUIREMENT = f"agentmatrix=={__version__}"

Progress = Callable[[str], None]

# The sandbox's first process: holds the pod's namespaces, reaps orphans, exits on SIGINT/SIGTERM.
_PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction on_stop = {.sa_handler = stop};
    struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGINT, &on_stop, NULL);
    sigaction(SIGTERM, &on_stop, NULL);
    sigaction(SIGCHLD, &on_child, NULL);
    for (;;) pause();
}
"""


def archive_dir() -> Path:
    return binaries.cache_dir() / "images"


def archive_path(name: str) -> Path:
    repository, tag = name.rsplit(":", 1)
    return archive_dir() / f"{repository.rsplit('/', 1)[1]}-{tag}.oci.tar"


def build_pause(progress: Progress) -> oci.Image:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise oci.ImageError("gcc is missing: install the Debian packages gcc and libc6-dev")
    with tempfile.TemporaryDirectory(prefix="agentmatrix-pause-") as tmp:
        work = Path(tmp)
        (work / "pause.c").write_text(_PAUSE_C)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        compiled = subprocess.run(
            [gcc, "-static", "-Os", "-s", "-o", str(rootfs / "pause"), str(work / "pause.c")],
            capture_output=True,
            text=True,
        )
        if compiled.returncode != 0:
            raise oci.ImageError(f"compiling the pause program failed: {compiled.stderr.strip()}")
        image = oci.pack(
            rootfs,
            PAUSE_IMAGE,
            oci.ImageConfig(entrypoint=("/pause",), user="65535:65535"),
            work,
            archive_path(PAUSE_IMAGE),
        )
    progress(f"built {image.name} ({image.size / 1024:.0f} KiB)")
    return image


def build_service(progress: Progress) -> oci.Image:
    if not BUSYBOX.exists():
        raise oci.ImageError("the images need busybox: apt-get install busybox-static")
    with tempfile.TemporaryDirectory(prefix="agentmatrix-service-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "www").mkdir()
        (rootfs / "tmp").mkdir(mode=0o1777)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in ("sh", "ls", "cat", "ps", "id", "wget", "nc", "sleep"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "www" / "index.html").write_text("agent service: ok\n")
        (rootfs / "www" / "healthz").write_text("ok\n")
        image = oci.pack(
            rootfs,
            SERVICE_IMAGE,
            oci.ImageConfig(
                entrypoint=("/bin/busybox", "httpd", "-f", "-v", "-p", str(SERVICE_PORT), "-h", "/www"),
                user="65532:65532",
                env=("PATH=/bin",),
            ),
            work,
            archive_path(SERVICE_IMAGE),
        )
    progress(f"built {image.name} ({image.size / 1024:.0f} KiB)")
    return image


# --- Python images: agentmatrix on the host's Debian Python ----------------------------------
AGENTMATRIX_IMAGE = f"{REGISTRY}/agentmatrix:{__version__}"  # operator and webhook
RUNNER_IMAGE = f"{REGISTRY}/agent-runner:{__version__}"  # agentmatrix, kubectl and a shell
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
SITE = Path("usr/local/lib/python3.11/dist-packages")  # on Debian's Python's own sys.path
# Parts of the standard library nothing in agentmatrix imports.
STDLIB_UNUSED = (
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "__pycache__",
)
SOURCE_UNUSED = (".git", ".venv", "build", "tests", "bench", "results", "*.egg-info", "__pycache__")
PYTHON_ENV = ("PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1", "HOME=/tmp", "LANG=C.UTF-8")


def project_root() -> Path:
    """The source tree this agentmatrix runs from (an editable install); images are built from it."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").exists() or not (root / LOCK_FILE).exists():
        raise oci.ImageError(
            f"the agentmatrix source tree (pyproject.toml and {LOCK_FILE}) was not found at {root}: "
            "build images from a checkout installed with `pip install -e .`"
        )
    return root


def _shared_libraries(files: list[Path]) -> set[str]:
    """Host libraries the given executables and extension modules load (as `ldd` resolves them)."""
    needed: set[str] = set()
    for path in files:
        result = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                needed.add(parts[2])
            elif parts and parts[0].startswith("/"):
                needed.add(parts[0])  # the dynamic loader
    return needed


def _copy_host_file(path: str, rootfs: Path) -> None:
    """Copy a host file to the same path in `rootfs`, through Debian's merged-/usr symlinks."""
    real = os.path.realpath(path)
    target = rootfs / real.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy2(real, target)
    alias = rootfs / path.lstrip("/")
    if not os.path.lexists(alias):
        alias.parent.mkdir(parents=True, exist_ok=True)
        # The link's directory as it resolves inside the rootfs (e.g. lib64 -> usr/lib64).
        alias.symlink_to(os.path.relpath(target, os.path.realpath(alias.parent)))


def _base_rootfs(rootfs: Path) -> None:
    for directory in ("usr/bin", "usr/lib", "usr/lib64", "usr/sbin", "etc", "usr/local/bin"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        (rootfs / link).symlink_to(f"usr/{link}")
    (rootfs / "tmp").mkdir(mode=0o1777)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/tmp:/bin/sh\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
    certificates = Path("/etc/ssl/certs/ca-certificates.crt")
    if certificates.exists():
        (rootfs / "etc/ssl/certs").mkdir(parents=True)
        shutil.copy2(certificates, rootfs / "etc/ssl/certs/ca-certificates.crt")


def _install_python(rootfs: Path, root: Path, work: Path, progress: Progress) -> None:
    if not DEBIAN_PYTHON.exists():
        raise oci.ImageError("the images need Debian's Python 3.11: apt-get install python3.11")
    _copy_host_file(str(DEBIAN_PYTHON), rootfs)
    (rootfs / "usr/bin/python3").symlink_to("python3.11")
    (rootfs / "usr/bin/python").symlink_to("python3.11")
    shutil.copytree(STDLIB, rootfs / STDLIB.relative_to("/"), symlinks=True,
                    ignore=shutil.ignore_patterns(*STDLIB_UNUSED, "*.pyc"))  # fmt: skip
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    progress("python images: building the agentmatrix wheel")
    # Built from a copy: setuptools leaves build/ and *.egg-info where it builds.
    source = work / "source"
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(*SOURCE_UNUSED))
    _checked([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(source)])
    progress(f"python images: installing {LOCK_FILE} and {PROJECT_REQUIREMENT}")
    shutil.copytree(_locked_site(root, pip, progress), rootfs / SITE, symlinks=True)
    target = ["--target", str(rootfs / SITE), "--no-compile"]
    _checked([*pip, "install", *target, *PROJECT_INSTALL, str(wheels), PROJECT_REQUIREMENT])
    shutil.rmtree(rootfs / SITE / "bin", ignore_errors=True)  # console scripts pointing at the host
    (rootfs / "usr/local/bin/agentmatrix").write_text(
        "#!/usr/bin/python3.11\nimport sys\nfrom agentmatrix.cli import main\nsys.exit(main())\n"
    )
    (rootfs / "usr/local/bin/agentmatrix").chmod(0o755)
    modules = [p for p in rootfs.rglob("*.so*") if p.is_file() and not p.is_symlink()]
    for library in sorted(_shared_libraries([DEBIAN_PYTHON, *modules])):
        if not library.startswith(str(rootfs)):
            _copy_host_file(library, rootfs)
    # Byte-code compiled now, stamped with source hashes rather than times: reproducible, and the
    # read-only, unprivileged container never has to write it.
    compile_all = [str(DEBIAN_PYTHON), "-I", "-m", "compileall", "-q", "-j0"]
    compile_all += ["--invalidation-mode", "unchecked-hash", "-s", str(rootfs), "-p", "/"]
    _checked([*compile_all, str(rootfs / STDLIB.relative_to("/")), str(rootfs / SITE)])


def _locked_site(root: Path, pip: list[str], progress: Progress) -> Path:
    """The packages of the lock file installed in a directory, kept in the cache per lock content."""
    lock = root / LOCK_FILE
    site = archive_dir() / "python-site" / hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    if site.is_dir():
        return site
    progress(f"python images: installing {LOCK_FILE} (cached for the next build)")
    partial = site.with_name(site.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _checked([*pip, "install", "--target", str(partial), "--no-compile", *LOCK_INSTALL, str(lock)])
    for stale in site.parent.iterdir():
        if stale != partial:
            shutil.rmtree(stale)
    partial.rename(site)
    return site


def _checked(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise oci.ImageError(f"{' '.join(cmd[:6])} ... failed:\n{result.stderr.strip()[-2000:]}")


def build_python_images(progress: Progress, kubectl: Path) -> list[oci.Image]:
    """The operator/webhook image and the agent runner image (the same layer plus kubectl and a shell)."""
    root = project_root()
    built_from = source_digest(root)
    with tempfile.TemporaryDirectory(prefix="agentmatrix-python-image-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        _base_rootfs(rootfs)
        _install_python(rootfs, root, work, progress)
        config = oci.ImageConfig(
            entrypoint=("agentmatrix",),
            cmd=("--help",),
            user="65532:65532",
            env=PYTHON_ENV,
            labels=(("org.opencontainers.image.title", "agentmatrix"),),
        )
        progress(f"python images: packing {AGENTMATRIX_IMAGE}")
        layout = oci.Layout(work / "layout")
        layout.add("agentmatrix", rootfs, config)
        operator_image = layout.export("agentmatrix", AGENTMATRIX_IMAGE, archive_path(AGENTMATRIX_IMAGE))
        tools = work / "tools"
        (tools / "usr/local/bin").mkdir(parents=True)
        shutil.copy2(kubectl, tools / "usr/local/bin/kubectl")
        if not BUSYBOX.exists():
            raise oci.ImageError("the images need busybox: apt-get install busybox-static")
        shutil.copy2(BUSYBOX, tools / "usr/local/bin/busybox")
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
        for applet in applets.split():
            if applet not in ("busybox", "python"):
                (tools / "usr/local/bin" / applet).symlink_to("busybox")
        progress(f"python images: packing {RUNNER_IMAGE}")
        layout.add("runner", tools, config, base="agentmatrix")
        runner_image = layout.export("runner", RUNNER_IMAGE, archive_path(RUNNER_IMAGE))
    for image in (operator_image, runner_image):
        _source_stamp(image.name).write_text(built_from + "\n")
        progress(f"built {image.name} ({image.size / 1024**2:.1f} MiB compressed)")
    return [operator_image, runner_image]


ALL_IMAGES = (PAUSE_IMAGE, SERVICE_IMAGE, AGENTMATRIX_IMAGE, RUNNER_IMAGE)


def build_all(progress: Progress, kubectl: Path) -> list[oci.Image]:
    return [build_pause(progress), build_service(progress), *build_python_images(progress, kubectl)]


def ensure_small(progress: Progress) -> None:
    """The pause and service images a real node needs, built once (in well under a second) and cached."""
    if not archive_path(PAUSE_IMAGE).exists():
        build_pause(progress)
    if not archive_path(SERVICE_IMAGE).exists():
        build_service(progress)


# What the Python images are built from besides the lock's wheels (see `source_digest`).
SOURCES = ("pyproject.toml", LOCK_FILE, "src", "operator", "webhook", "agent_runner", "crds", "deploy")


def missing_inputs() -> str | None:
    """Why the images cannot be built here, in one line naming what to install (None: they can).
    The programs a real node needs anyway (umoci, gcc) are `realnode.unavailable`'s to name."""
    if not BUSYBOX.exists():
        return "the images need busybox: apt-get install busybox-static"
    if not DEBIAN_PYTHON.exists():
        return "the images need Debian's Python 3.11: apt-get install python3.11"
    try:
        project_root()
    except oci.ImageError as exc:
        return str(exc)
    return None


def source_digest(root: Path) -> str:
    """A digest of the checkout's files the Python images are built from: an image whose recorded
    digest differs was built from another checkout or before a change."""
    digest = hashlib.sha256()
    for entry in SOURCES:
        top = root / entry
        files = sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _source_stamp(name: str) -> Path:
    """Beside an image's archive: the `source_digest` it was built from."""
    archive = archive_path(name)
    return archive.with_name(archive.name + ".source")


def outdated() -> list[str]:
    """The images not built yet, or (the Python images) not built from this checkout as it is."""
    missing = [name for name in ALL_IMAGES if not archive_path(name).exists()]
    try:
        current = source_digest(project_root())
    except oci.ImageError:
        return missing
    stale = []
    for name in (AGENTMATRIX_IMAGE, RUNNER_IMAGE):
        stamp = _source_stamp(name)
        if name not in missing and (not stamp.exists() or stamp.read_text().strip() != current):
            stale.append(name)
    return [*missing, *stale]


def built_archives() -> list[Path]:
    """The archives of the images built so far, in `ALL_IMAGES` order."""
    return [archive_path(name) for name in ALL_IMAGES if archive_path(name).exists()]
