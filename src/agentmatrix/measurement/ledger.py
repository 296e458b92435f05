"""The ledger: an append-only SQLite table of observations, one row per admission request.

Writing: observations are committed in groups (every observation waiting when a commit starts
joins it), in WAL mode: without fsync on the event loop itself, where one that finds no commit
under way is committed at once; with fsync in one writer thread. The webhook answers a request
only after its observation is committed, so an answer the API server received is never lost to
a kill -9: with `synchronous=NORMAL` (the default) the commit is in the operating system's hands
before the answer; with `synchronous=FULL` each group is also fsync'd (one fsync per group),
which survives a power loss too and costs 1-10 ms on common disks. The request uid is unique, so a
retried request, or two webhook processes sharing one file, never count anything twice.
A background thread checkpoints the WAL every second (never a commit on the request path).

Reading: `read_observations(path, namespace)` returns a trial's observations in commit order;
the operator and `agentmatrix ledger NAMESPACE` use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from agentmatrix.measurement.model import Actor, Mode, Observation, WorkloadKey

Sync = Literal["full", "normal"]
CHECKPOINT_SECONDS = 1.0
CommitCallback = Callable[[int, float], None]

_COLUMNS = (
    "uid",
    "time",
    "trial_namespace",
    "namespace",
    "name",
    "operation",
    "resource",
    "subresource",
    "kind",
    "username",
    "actor",
    "runs_agent",
    "counted",
    "replicas_before",
    "replicas_after",
    "total_before",
    "total_after",
    "allowed",
    "reason",
    "mode",
    "max_replicas",
    "schedule",
)
# `seq` is the rowid: rows are never deleted, so it only grows (AUTOINCREMENT would add a write of
# its own table to every commit and buy nothing; files made with it read and write the same).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS observations (
    seq INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    time REAL NOT NULL,
    trial_namespace TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    operation TEXT NOT NULL,
    resource TEXT NOT NULL,
    subresource TEXT NOT NULL,
    kind TEXT NOT NULL,
    username TEXT NOT NULL,
    actor TEXT NOT NULL,
    runs_agent INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    replicas_before INTEGER NOT NULL,
    replicas_after INTEGER NOT NULL,
    total_before INTEGER NOT NULL,
    total_after INTEGER NOT NULL,
    allowed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    mode TEXT NOT NULL,
    max_replicas INTEGER,
    schedule TEXT
);
CREATE INDEX IF NOT EXISTS observations_by_trial ON observations (trial_namespace, seq);
"""
# Built from the fixed column list above, never from input.
_INSERT = (
    f"INSERT OR IGNORE INTO observations ({', '.join(_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SELECT = f"SELECT seq, {', '.join(_COLUMNS)} FROM observations"  # noqa: S608


def default_path() -> Path:
    """`AGENTMATRIX_LEDGER`, else the user's state directory."""
    explicit = os.environ.get("AGENTMATRIX_LEDGER")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "agentmatrix" / "ledger.sqlite3"


def _connect(path: Path, sync: Sync = "full") -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync.upper()}")
    conn.executescript(_SCHEMA)
    return conn


def _row(obs: Observation) -> tuple[object, ...]:
    return (
        obs.uid,
        obs.time,
        obs.trial_namespace,
        obs.namespace,
        obs.name,
        obs.operation,
        obs.resource,
        obs.subresource,
        obs.kind,
        obs.username,
        obs.actor.value,
        int(obs.runs_agent),
        int(obs.counted),
        obs.replicas_before,
        obs.replicas_after,
        obs.total_before,
        obs.total_after,
        int(obs.allowed),
        obs.reason,
        obs.mode.value,
        obs.max_replicas,
        obs.schedule,
    )


def _observation(row: Sequence[Any]) -> Observation:
    (seq, uid, at, trial, namespace, name, operation, resource, subresource, kind, username, actor,
     runs_agent, counted, before, after, total_before, total_after, allowed, reason, mode,
     max_replicas, schedule) = row  # fmt: skip
    return Observation(
        uid=str(uid),
        time=float(at),
        trial_namespace=str(trial),
        namespace=str(namespace),
        name=str(name),
        operation=str(operation),
        resource=str(resource),
        subresource=str(subresource),
        kind=str(kind),
        username=str(username),
        actor=Actor(str(actor)),
        runs_agent=bool(runs_agent),
        counted=bool(counted),
        replicas_before=int(before),
        replicas_after=int(after),
        total_before=int(total_before),
        total_after=int(total_after),
        allowed=bool(allowed),
        reason=str(reason),
        mode=Mode(str(mode)),
        max_replicas=None if max_replicas is None else int(max_replicas),
        schedule=None if schedule is None else str(schedule),
        seq=int(seq),
    )


class LedgerError(RuntimeError):
    """The ledger could not commit; the observation was not recorded."""


_Pending = tuple[Observation, "asyncio.Future[None]"]


class LedgerWriter:
    """Group-committing writer. `append` returns once the observation is committed.

    Without fsync, an observation that finds no commit under way is committed at once; the ones
    that come while a commit runs wait on the event loop, and the next commit takes all of them.
    With fsync (`full`), one thread does the SQLite work, handed one batch at a time, so the
    loop keeps serving during the fsync and pays one hand-off per commit, not per observation.
    """

    def __init__(
        self,
        path: Path,
        *,
        sync: Sync = "normal",
        max_batch: int = 1024,
        on_commit: CommitCallback | None = None,
    ) -> None:
        self.path = path
        self._sync = sync
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._pending: list[_Pending] = []
        self._committing = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._checkpointer: threading.Thread | None = None
        _connect(path, sync).close()  # fail early (bad path, unwritable directory)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._sync == "full":
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ledger-writer")
        self._stopping.clear()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="ledger-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        """Copy the WAL back into the database now and then, off the request path: a checkpoint
        fsyncs, and done by a commit (SQLite's default) it would stall that commit's requests."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            while not self._stopping.wait(CHECKPOINT_SECONDS):
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    async def append(self, observation: Observation) -> None:
        if self._loop is None:
            raise LedgerError("ledger writer not started")
        if not self._committing and self._executor is None:
            # No commit under way and no fsync to wait for: commit this one now, on the loop,
            # rather than after a turn of it (behind every callback ready by then). Requests read
            # later in this turn wait for one group commit in the next.
            self._committing = True
            self._loop.call_soon(self._next_batch)
            self._commit_now(observation)
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending.append((observation, future))
        if not self._committing:
            self._committing = True
            # Let the requests already read in this loop iteration join the same commit.
            self._loop.call_soon(self._next_batch)
        await future

    def _commit_now(self, observation: Observation) -> None:
        try:
            seconds = self._commit([_row(observation)])
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger commit failed: {exc}") from exc
        if self._on_commit is not None:
            self._on_commit(1, seconds)

    def stop(self) -> None:
        """Wait for the commit under way, then close (observations still waiting are failed)."""
        self._stopping.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None
        if self._executor is not None:
            self._executor.submit(self._close).result()
            self._executor.shutdown(wait=True)
            self._executor = None
        self._close()
        self._loop = None
        _settle([future for _, future in self._pending], LedgerError("ledger closed"))
        self._pending.clear()

    def _next_batch(self) -> None:
        if not self._pending or self._loop is None:
            self._committing = False
            return
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        rows = [_row(obs) for obs, _ in batch]
        if self._executor is None:
            # Without fsync a commit takes tens of microseconds: done on the loop itself, it costs
            # less than handing it to a thread (which fights the loop for the GIL).
            done: concurrent.futures.Future[float] = concurrent.futures.Future()
            try:
                done.set_result(self._commit(rows))
            except sqlite3.Error as exc:
                done.set_exception(exc)
            self._committed(batch, done)
            return
        done = self._executor.submit(self._commit, rows)
        loop = self._loop
        assert loop is not None
        done.add_done_callback(lambda result: loop.call_soon_threadsafe(self._committed, batch, result))

    def _committed(self, batch: list[_Pending], result: concurrent.futures.Future[float]) -> None:
        error = result.exception()
        if error is None and self._on_commit is not None:
            self._on_commit(len(batch), result.result())
        failure = None if error is None else LedgerError(f"ledger commit failed: {error}")
        _settle([future for _, future in batch], failure)
        self._next_batch()

    def _commit(self, rows: list[tuple[object, ...]]) -> float:
        started = time.perf_counter()
        if self._conn is None:
            self._conn = _connect(self.path, self._sync)
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _checkpoints
        conn = self._conn
        if len(rows) == 1:  # the usual case: one statement is its own transaction
            conn.execute(_INSERT, rows[0])
            return time.perf_counter() - started
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return time.perf_counter() - started

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


@contextmanager
def _reader(path: Path) -> Iterator[sqlite3.Connection | None]:
    if not path.exists():
        yield None
        return
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        yield conn
    finally:
        conn.close()


def read_observations(
    path: Path | None = None, namespace: str | None = None, *, after_seq: int = 0
) -> list[Observation]:
    """Observations in commit order; of one trial (its sandbox namespace) if `namespace` is given.

    `after_seq` lets a reader follow the ledger: pass the last `seq` it has seen.
    """
    with _reader(path or default_path()) as conn:
        if conn is None:
            return []
        if namespace is None:
            rows = conn.execute(f"{_SELECT} WHERE seq > ? ORDER BY seq", (after_seq,)).fetchall()
        else:
            rows = conn.execute(
                f"{_SELECT} WHERE trial_namespace = ? AND seq > ? ORDER BY seq", (namespace, after_seq)
            ).fetchall()
    return [_observation(row) for row in rows]


def foreign_objects(path: Path | None = None) -> list[tuple[WorkloadKey, str]]:
    """Objects a trial's agent made outside its sandbox, with that trial's namespace."""
    with _reader(path or default_path()) as conn:
        if conn is None:
            return []
        rows = conn.execute(
            "SELECT DISTINCT resource, namespace, name, trial_namespace FROM observations "
            "WHERE namespace != trial_namespace AND allowed = 1"
        ).fetchall()
    return [(WorkloadKey(str(r), str(ns), str(n)), str(t)) for r, ns, n, t in rows]
