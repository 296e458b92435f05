"""The transcript: one JSON object a line, every string redacted before it is written.

Records, in order:
- ``{"type": "start", "time", "config"}``: the run's settings (the key's variable name only);
- ``{"type": "step", "step", "time", "messages", "reply", "parsed", "command", "exit_code",
  "output", "output_bytes", "truncated", "timed_out", "parse_error", "durations", "usage"}``
  for every model reply (``command`` and the fields after it are null when nothing ran;
  ``usage.counted`` is "server", or "local" where the endpoint gave no usage and the tokens
  were estimated);
- ``{"type": "end", "time", "result"}``: the same object as the result JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from agentmatrix.agent_runner.redaction import Redactor


class Transcript:
    def __init__(self, path: Path, redactor: Redactor) -> None:
        self.path = path
        self.redactor = redactor
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record_type: str, **fields: Any) -> None:
        record = {"type": record_type, "time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(self.redactor.value(record), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Transcript:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
