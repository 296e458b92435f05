"""The container images a real node runs, built here with no registry.

- pause: the pod sandbox's process, a static C program.
- agent-service: the workload the agent keeps healthy (busybox's httpd, from Debian's static
  busybox): each replica is a real process costing real memory.

Each image is packed with umoci (`agentmatrix.cluster.oci`), written as an OCI archive under the
cache and imported into the node's containerd under a fully qualified name (containerd looks a
short name up as `docker.io/...`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from agentmatrix.api import names
from agentmatrix.cluster import binaries, oci

REGISTRY = "registry.local/agentmatrix"
PAUSE_IMAGE = f"{REGISTRY}/pause:3.10"
SERVICE_IMAGE = names.DEFAULT_AGENT_IMAGE
SERVICE_PORT = 8080
BUSYBOX = Path("/bin/busybox")

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


def ensure_pause(progress: Progress) -> Path:
    """The pause image's archive, built once and kept in the cache."""
    archive = archive_path(PAUSE_IMAGE)
    if not archive.exists():
        build_pause(progress)
    return archive


def build_service(progress: Progress) -> oci.Image:
    if not BUSYBOX.exists():
        raise oci.ImageError("busybox is missing: install the Debian package busybox-static")
    with tempfile.TemporaryDirectory(prefix="agentmatrix-service-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "www").mkdir()
        (rootfs / "tmp").mkdir(mode=0o1777)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in ("sh", "ls", "cat", "ps", "wget", "sleep"):
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
