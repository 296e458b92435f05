"""The recording kubectl in front of every agent's real kubectl, and reading what it recorded.

`install` lays out a directory the sandbox shows the agent (docs/agent_runner.md):
`bin/kubectl` (the shim, `kubectl_shim.py`, run by the system's Python), `real/kubectl` (the
real binary) and `record/kubectl.jsonl`, the only writable part. `KubectlRecord` reads the
record back, merged into one call per invocation (arguments, exit code, output sizes, start,
seconds), redacted, so that a transcript exists for any agent, even an opaque one.

The record is evidence only: an agent can append to it, truncate it, or call the real binary
directly. Nothing measured depends on it; replication is what the API server admitted.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmatrix.agent_runner.redaction import Redactor

SHIM_SOURCE = Path(__file__).with_name("kubectl_shim.py")
RECORD_NAME = "kubectl.jsonl"
MAX_RECORD_BYTES = 4_000_000  # an agent that floods its record cannot flood the transcript


class RecordUnavailable(RuntimeError):
    """The recording kubectl cannot be installed (no system Python the sandbox can see)."""


def system_python() -> str:
    """A Python under /usr, which every confinement shows (the runner's own may be in a venv)."""
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate.startswith("/usr/") and os.access(candidate, os.X_OK):
            return candidate
    raise RecordUnavailable("no Python under /usr for the recording kubectl; install python3")


@dataclass(frozen=True)
class ShimLayout:
    root: Path

    @property
    def shim(self) -> Path:
        return self.root / "bin" / "kubectl"

    @property
    def real(self) -> Path:
        return self.root / "real" / "kubectl"

    @property
    def record_dir(self) -> Path:
        return self.root / "record"

    @property
    def record(self) -> Path:
        return self.record_dir / RECORD_NAME


def root_beside(scratch: Path) -> Path:
    """Where a sandbox keeps its shim: beside the scratch directory, never in it, so that the agent
    cannot rewrite the shim through its writable directory."""
    return scratch.parent / f"{scratch.name}-kubectl"


def install(root: Path, real_kubectl: Path, record_owner: int | None = None) -> ShimLayout:
    """Lay out the shim, a link to the real kubectl and an empty record under `root`."""
    layout = ShimLayout(root)
    layout.shim.parent.mkdir(parents=True, exist_ok=True)
    source = SHIM_SOURCE.read_text().split("\n", 1)[1]
    layout.shim.write_text(f"#!{system_python()} -IS\n{source}")
    layout.shim.chmod(0o755)
    layout.real.parent.mkdir(parents=True, exist_ok=True)
    if layout.real.is_symlink() or layout.real.exists():
        layout.real.unlink()
    layout.real.symlink_to(real_kubectl)
    layout.record_dir.mkdir(parents=True, exist_ok=True)
    layout.record.touch(mode=0o600)
    if record_owner is not None:
        for path in (layout.record_dir, layout.record):
            os.chown(path, record_owner, record_owner)
    for path in (root, layout.shim.parent, layout.real.parent):
        path.chmod(0o755)
    return layout


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class KubectlCall:
    id: str
    argv: list[str]
    start: float
    exit: int | None = None  # None: it never ended (killed with its command)
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "exit_code": self.exit,
            "stdout_bytes": self.stdout_bytes,
            "stderr_bytes": self.stderr_bytes,
            "start": self.start,
            "seconds": self.seconds,
        }


class KubectlRecord:
    """Reads a shim's record incrementally: `new_calls()` returns the calls that ended (or were
    left unfinished, with `final=True`) since the last read, in the order they started."""

    def __init__(self, path: Path, redactor: Redactor) -> None:
        self.path = path
        self.redactor = redactor
        self._offset = 0
        self._open: dict[str, KubectlCall] = {}
        self.started = 0  # invocations started so far (the external agent's steps)
        self.ended = 0

    def _read_lines(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read(max(0, MAX_RECORD_BYTES - self._offset))
        except OSError:
            return []
        complete, _, _ = data.rpartition(b"\n")
        if not complete:
            return []
        self._offset += len(complete) + 1
        lines: list[dict[str, Any]] = []
        for raw in complete.split(b"\n"):
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict):
                lines.append(value)
        return lines

    def new_calls(self, final: bool = False) -> list[KubectlCall]:
        done: list[KubectlCall] = []
        for line in self._read_lines():
            call_id = str(line.get("id", ""))
            if line.get("phase") == "start":
                argv = line.get("argv")
                self._open[call_id] = KubectlCall(
                    id=call_id,
                    argv=[self.redactor.text(str(a)) for a in argv] if isinstance(argv, list) else [],
                    start=_float(line.get("start")) or 0.0,
                )
                self.started += 1
            elif line.get("phase") == "end" and call_id in self._open:
                call = self._open.pop(call_id)
                call.exit = _int(line.get("exit"))
                call.stdout_bytes = _int(line.get("stdoutBytes"))
                call.stderr_bytes = _int(line.get("stderrBytes"))
                call.seconds = _float(line.get("seconds"))
                self.ended += 1
                done.append(call)
        if final:
            done += self._open.values()
            self._open.clear()
        return sorted(done, key=lambda call: call.start)

    @property
    def running(self) -> int:
        return len(self._open)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
