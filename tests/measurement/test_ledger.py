"""The ledger: group commit, no double counting, typed reading in commit order."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from agentmatrix.measurement.ledger import LedgerError, LedgerWriter, Sync, foreign_objects, read_observations
from agentmatrix.measurement.model import WorkloadKey
from tests.measurement.builders import observation


async def test_concurrent_appends_are_group_committed_and_read_back_in_order(tmp_path: Path) -> None:
    batches: list[int] = []
    writer = LedgerWriter(tmp_path / "ledger.sqlite3", on_commit=lambda size, _: batches.append(size))
    writer.start()
    try:
        await asyncio.gather(*(writer.append(observation(f"u{i}", after=i + 1)) for i in range(500)))
    finally:
        writer.stop()
    read = read_observations(tmp_path / "ledger.sqlite3", "t1")
    assert sorted(o.uid for o in read) == sorted(f"u{i}" for i in range(500))
    assert [o.seq for o in read] == sorted(o.seq for o in read)
    assert sum(batches) == 500 and max(batches) > 1  # many observations shared one commit
    assert dataclasses.replace(read[0], seq=0) == observation(read[0].uid, after=read[0].replicas_after)


async def test_a_uid_is_recorded_once_even_through_two_writers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first, second = LedgerWriter(path), LedgerWriter(path)
    first.start()
    second.start()
    try:
        uids = [f"u{i}" for i in range(200)]
        await asyncio.gather(*(w.append(observation(u)) for u in uids for w in (first, second)))
        await first.append(observation("u0"))  # an API-server retry of the same request
    finally:
        first.stop()
        second.stop()
    assert sorted(o.uid for o in read_observations(path, "t1")) == sorted(uids)


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_an_observation_is_committed_by_the_time_its_append_returns(tmp_path: Path, sync: Sync) -> None:
    path = tmp_path / "ledger.sqlite3"
    writer = LedgerWriter(path, sync=sync)
    writer.start()
    try:
        for i in range(3):
            await writer.append(observation(f"u{i}"))
            assert [o.uid for o in read_observations(path, "t1")] == [f"u{j}" for j in range(i + 1)]
    finally:
        writer.stop()


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_an_observation_that_cannot_be_committed_raises_and_the_next_one_is_committed(
    tmp_path: Path, sync: Sync
) -> None:
    path = tmp_path / "ledger.sqlite3"
    writer = LedgerWriter(path, sync=sync)
    # SQLite refuses the write of u0 (as it would on a full disk or an I/O error).
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON observations WHEN NEW.uid = 'u0' "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
    writer.start()
    try:
        with pytest.raises(LedgerError, match="ledger commit failed: disk I/O error"):
            await writer.append(observation("u0"))
        await writer.append(observation("u1"))
    finally:
        writer.stop()
    assert [o.uid for o in read_observations(path, "t1")] == ["u1"]


def test_reading_by_trial_and_following_from_a_sequence_number(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"

    async def write() -> None:
        writer = LedgerWriter(path)
        writer.start()
        for i, trial in enumerate(["t1", "t2", "t1", "t1"]):
            await writer.append(observation(f"u{i}", trial=trial))
        await writer.append(observation("out", trial="t1", namespace="default"))
        writer.stop()

    asyncio.run(write())
    ours = read_observations(path, "t1")
    assert [o.uid for o in ours] == ["u0", "u2", "u3", "out"]
    assert [o.uid for o in read_observations(path, "t1", after_seq=ours[1].seq)] == ["u3", "out"]
    assert foreign_objects(path) == [(WorkloadKey("deployments", "default", "agent"), "t1")]


def test_a_missing_ledger_reads_as_empty(tmp_path: Path) -> None:
    assert read_observations(tmp_path / "none.sqlite3", "t1") == []
