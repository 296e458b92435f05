"""Cap decisions that hold across webhook processes sharing one ledger file.

Each webhook process knows what it allowed itself at once, and what other processes allowed
only when its watch reports the object (milliseconds later). Two requests of one capped trial
racing through two replicas could therefore both pass the cap. For trials with a replica cap,
the processes take turns instead: under an exclusive lock on a file beside the ledger, a
process first applies what the others allowed (a table `admissions` in the ledger file: the
object and the footprint each allowed request leaves it with), then decides, commits the
observation and records its own admission, then lets go. Other requests never take the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from agentmatrix.measurement.counting import Footprint
from agentmatrix.measurement.model import WorkloadKey
from agentmatrix.measurement.state import ClusterState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS admissions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    writer TEXT NOT NULL,
    time REAL NOT NULL,
    trial_namespace TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    footprint TEXT
);
"""


def footprint_to_json(footprint: Footprint | None) -> str | None:
    if footprint is None:
        return None
    return json.dumps(
        {
            "images": sorted(footprint.images),
            "roleAgent": footprint.role_agent,
            "replicas": footprint.replicas,
            "owned": footprint.owned,
            "maxReplicas": footprint.max_replicas,
            "schedule": footprint.schedule,
            "target": list(footprint.target) if footprint.target is not None else None,
            "knowsTemplate": footprint.knows_template,
        }
    )


def footprint_from_json(text: str | None) -> Footprint | None:
    if text is None:
        return None
    data: dict[str, Any] = json.loads(text)
    target = data.get("target")
    return Footprint(
        images=frozenset(data.get("images") or ()),
        role_agent=bool(data.get("roleAgent")),
        replicas=int(data.get("replicas", 0)),
        owned=bool(data.get("owned")),
        max_replicas=data.get("maxReplicas"),
        schedule=data.get("schedule"),
        target=WorkloadKey(*target) if target else None,
        knows_template=bool(data.get("knowsTemplate", True)),
    )


class SharedAdmissions:
    def __init__(
        self,
        ledger_path: Path,
        state: ClusterState,
        *,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.ttl = ttl
        self.clock = clock
        self.writer = uuid.uuid4().hex
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(
            ledger_path.with_name(ledger_path.name + ".admit-lock"), os.O_RDWR | os.O_CREAT, 0o600
        )
        self._conn = sqlite3.connect(ledger_path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(_SCHEMA)
        self._seen = 0
        self._turn = asyncio.Lock()

    def close(self) -> None:
        self._conn.close()
        os.close(self._lock_fd)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """This process's turn among all that share the ledger, caught up with their admissions."""
        async with self._turn:
            await self._acquire()
            try:
                self._catch_up()
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    async def _acquire(self) -> None:
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        acquired = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, self._lock_fd, fcntl.LOCK_EX)
        try:
            await asyncio.shield(acquired)
        except asyncio.CancelledError:
            acquired.add_done_callback(lambda _: fcntl.flock(self._lock_fd, fcntl.LOCK_UN))
            raise

    def _catch_up(self) -> None:
        rows = self._conn.execute(
            "SELECT seq, time, trial_namespace, resource, namespace, name, footprint FROM admissions "
            "WHERE seq > ? AND writer != ? ORDER BY seq",
            (self._seen, self.writer),
        ).fetchall()
        oldest = self.clock() - self.ttl
        for seq, at, trial, resource, namespace, name, footprint in rows:
            self._seen = max(self._seen, int(seq))
            key = WorkloadKey(str(resource), str(namespace), str(name))
            if namespace != trial:  # however old: only this makes its namespace watched here
                self.state.mark_foreign(key, str(trial))
            if not (self.state.watching and float(at) < oldest):  # else the watch has reported it
                self.state.admitted(key, footprint_from_json(footprint))

    def record(self, trial: str, key: WorkloadKey, footprint: Footprint | None) -> None:
        """What this process allowed (call during `turn`, before answering)."""
        cursor = self._conn.execute(
            "INSERT INTO admissions (writer, time, trial_namespace, resource, namespace, name, footprint) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self.writer,
                self.clock(),
                trial,
                key.resource,
                key.namespace,
                key.name,
                footprint_to_json(footprint),
            ),
        )
        self._seen = max(self._seen, int(cursor.lastrowid or 0))
