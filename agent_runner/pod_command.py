"""One of the agent's commands inside its shell Pod, as the Pod's own unprivileged user.

This file is not imported: the runner sends its source with every exec (`python3 -IS -c SOURCE
PARAMS`, see `pod_sandbox`), so it runs under the image's Python with the standard library only,
whatever agentmatrix the image holds. PARAMS is a JSON object:

- `argv`: the program (for a shell command: `sh -c COMMAND`), run in a new session with
  `home` as its working directory and HOME, stdout and stderr both on this exec's stdout;
- `env`: variables added to PATH, HOME, GOGC and the in-cluster API server's address (nothing
  else of the container's environment);
- `rlimits`: `{"NPROC": n, "DATA": bytes, "CPU": seconds, "CORE": 0}`, soft and hard, set in
  the child before it runs (the process can only lower them further);
- `time_limit`, `process_share`, `poll`: the command is killed past `time_limit` seconds, or once
  the Pod's processes reach `process_share` of NPROC (looked at every `poll` seconds);
- `stdin`: a file in the Pod for the program's stdin (else /dev/null);
- `shim`: the recording kubectl's source (`kubectl_shim.py`), laid out in a directory of this
  command's own first on PATH, in front of the image's kubectl;
- `files`: instead of a program, write these files (name -> text) into `home` and exit.

This exec's stdin is the runner's stop signal: any byte, or its end (the runner went away), kills
the command. When the command ends, every other process of the user in the container but its
init is killed (as when a sandbox's pid namespace ends in process mode), all are reaped (this
process is their subreaper, so orphans come back to it), `/tmp` is emptied, and one JSON line
goes to stderr:
exit code, whether it timed out or was stopped, the CPU time and peak memory of everything it
ran, the Pod's OOM kills meanwhile, the home's free space and the kubectl record.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
RECORD_CAP = 4_000_000
OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
INIT_LOG = "/proc/1/fd/1"  # the Pod's log (`kubectl logs`): one line per command


def oom_kills() -> int:
    """OOM kills in the container's memory cgroup so far (cgroup v2 or v1)."""
    for path in OOM_COUNTERS:
        with contextlib.suppress(OSError, ValueError), open(path) as counters:
            for line in counters:
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
    return 0


def become_subreaper() -> None:
    """Orphans of the command are re-parented to this process (not the Pod's init), so that they
    are reaped here and their CPU time and memory count."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        return


def others() -> list[int]:
    """Every process of this user in the container but its init and this one."""
    me, found = os.getpid(), []
    wanted = f"Uid:\t{os.getuid()}\t".encode()  # status, not the owner: a process can hide that
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            with contextlib.suppress(OSError), open(f"/proc/{entry}/status", "rb") as status:
                if wanted in status.read(1024):
                    found.append(int(entry))
    return found


def running_others() -> int:
    count = 0
    for pid in others():
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", "rb") as stat:
            if stat.read().rpartition(b")")[2].split()[0] != b"Z":
                count += 1
    return count


def kill_others() -> None:
    for _ in range(3):
        found = others()
        if not found:
            return
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        reap()


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def reap_all(deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def empty(directory: str) -> None:
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            path = os.path.join(directory, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def install_shim(source: str) -> str | None:
    """The recording kubectl's directory (bin/kubectl, real/kubectl, record/) for this command."""
    real = shutil.which("kubectl")
    if real is None:
        return None
    root = tempfile.mkdtemp(prefix="agentmatrix-kubectl-")
    for part in ("bin", "real", "record"):
        os.mkdir(os.path.join(root, part))
    shim = os.path.join(root, "bin", "kubectl")
    with open(shim, "w") as handle:
        handle.write(f"#!{sys.executable} -IS\n{source}")
    os.chmod(shim, 0o555)  # noqa: S103 (the shim holds no secret; it must run for the agent)
    os.symlink(real, os.path.join(root, "real", "kubectl"))
    return root


def read_record(root: str | None) -> str:
    if root is None:
        return ""
    with contextlib.suppress(OSError), open(os.path.join(root, "record", "kubectl.jsonl")) as record:
        return record.read(RECORD_CAP)
    return ""


def log(line: str) -> None:
    with contextlib.suppress(OSError), open(INIT_LOG, "a") as out:
        out.write(line[:300].replace("\n", " ") + "\n")


def write_files(home: str, files: dict[str, str]) -> dict[str, Any]:
    os.makedirs(home, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(home, name)
        with open(path, "w") as handle:
            handle.write(text)
    return {"exit": 0, "written": sorted(files)}


def run(params: dict[str, Any]) -> dict[str, Any]:
    home = str(params["home"])
    os.makedirs(home, exist_ok=True)
    become_subreaper()
    shim_root = install_shim(str(params["shim"])) if params.get("shim") else None
    path = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
    env = {"PATH": f"{shim_root}/bin:{path}" if shim_root else path, "HOME": home, "GOGC": "400"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("KUBERNETES_SERVICE_")})
    env.update({str(k): str(v) for k, v in (params.get("env") or {}).items()})
    limits = {str(k): int(v) for k, v in (params.get("rlimits") or {}).items()}

    def set_limits() -> None:
        for name, value in limits.items():
            number = getattr(resource, f"RLIMIT_{name}")
            resource.setrlimit(number, (value, value))

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    os.set_blocking(wake_read, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    oom_before = oom_kills()
    stdin_path = params.get("stdin")
    source: Any = open(str(stdin_path), "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    started = time.monotonic()
    argv = [str(a) for a in params["argv"]]
    log(f"$ {argv[-1] if argv[:2] == ['sh', '-c'] else ' '.join(argv)}")
    try:
        child = subprocess.Popen(
            argv, stdin=source, stdout=1, stderr=subprocess.STDOUT, cwd=home, env=env,
            start_new_session=True, preexec_fn=set_limits,
        )  # fmt: skip
    except OSError as error:
        return {"exit": 127, "error": str(error), "record": read_record(shim_root)}
    finally:
        if stdin_path:
            source.close()
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "stop")
    selector.register(wake_read, selectors.EVENT_READ, "signal")
    deadline = started + float(params["time_limit"])
    poll = float(params.get("poll", 0.5))
    at_limit = limits.get("NPROC", 0) * float(params.get("process_share", 0.75))
    status: int | None = None
    timed_out = stopped = at_process_limit = False
    next_look = started + poll
    while status is None:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        if at_limit and now >= next_look:
            next_look = now + poll
            if running_others() >= at_limit:
                at_process_limit = True
                break
        for key, _ in selector.select(timeout=max(0.0, min(deadline, next_look) - now)):
            if key.data == "stop":
                with contextlib.suppress(OSError):
                    os.read(0, 4096)
                stopped = True
            else:
                with contextlib.suppress(OSError):
                    while os.read(wake_read, 512):
                        pass
        if stopped:
            break
        pid, code = os.waitpid(child.pid, os.WNOHANG)
        if pid:
            status = code
    if status is None:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        at_process_limit = at_process_limit or (bool(at_limit) and running_others() >= at_limit)
    kill_others()
    if status is None:
        with contextlib.suppress(ChildProcessError):
            status = os.waitpid(child.pid, 0)[1]
    reap_all(time.monotonic() + 5)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = read_record(shim_root)
    if shim_root is not None:
        shutil.rmtree(shim_root, ignore_errors=True)
    empty("/tmp")
    free = None
    with contextlib.suppress(OSError):
        stat = os.statvfs(home)
        free = stat.f_bavail * stat.f_frsize
    exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
    log(f"  exit {exit_code}{' (timed out)' if timed_out else ''} after {time.monotonic() - started:.1f}s")
    return {
        "exit": exit_code,
        "timed_out": timed_out,
        "stopped": stopped,
        "at_process_limit": at_process_limit,
        "utime": usage.ru_utime,
        "stime": usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "oom_kills": oom_kills() - oom_before,
        "disk_free": free,
        "record": record,
    }


def main() -> int:
    if os.getuid() == 0:  # it kills every other process of its user: never root's
        sys.stderr.write("pod_command runs as the shell Pod's unprivileged user, never as root\n")
        return 2
    params = json.loads(sys.argv[1])
    if params.get("files") is not None:
        report = write_files(str(params["home"]), dict(params["files"]))
    else:
        report = run(params)
    os.write(2, (json.dumps(report) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
