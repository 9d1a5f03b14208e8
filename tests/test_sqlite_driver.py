"""The SQLite connection with one thread crossing per statement, through the real store."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from provisioner.adapters.store.engine import SqlStore
from provisioner.errors import InfrastructureError

# About half a second of SQLite's own work, to have a statement in flight when we interfere.
SLOW_COUNT = sa.text(
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
    "SELECT count(*) FROM c"
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A migrated SQLite store with a scratch table."""
    opened = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    async with opened.transaction() as tx:
        await tx.conn.execute(sa.text("CREATE TABLE scratch (n INTEGER PRIMARY KEY)"))
    yield opened
    await opened.close()


async def _count(store: SqlStore) -> int:
    """Rows in the scratch table, in a transaction of their own."""
    async with store.read() as tx:
        return int((await tx.conn.execute(sa.text("SELECT count(*) FROM scratch"))).scalar_one())


async def _insert(store: SqlStore, n: int) -> None:
    """One row, in a write transaction of its own."""
    async with store.transaction() as tx:
        await tx.conn.execute(sa.text("INSERT INTO scratch (n) VALUES (:n)"), {"n": n})


async def test_a_read_transaction_sees_one_snapshot_while_others_commit(store: SqlStore) -> None:
    # The read's BEGIN is sent with its first statement; it must still open a transaction.
    await _insert(store, 1)
    async with store.read() as tx:
        first = (await tx.conn.execute(sa.text("SELECT count(*) FROM scratch"))).scalar_one()
        await _insert(store, 2)
        again = (await tx.conn.execute(sa.text("SELECT count(*) FROM scratch"))).scalar_one()
    assert (first, again) == (1, 1)
    assert await _count(store) == 2


async def test_a_writer_holds_the_write_lock_from_its_begin(tmp_path: Path) -> None:
    # Code between BEGIN IMMEDIATE and its first statement (migrations) counts on the lock.
    url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    first, second = await SqlStore.open(url), await SqlStore.open(url)
    events: list[str] = []

    async def later_writer() -> None:
        async with second.transaction():
            events.append("second began")

    try:
        async with first.transaction():
            waiting = asyncio.create_task(later_writer())
            await asyncio.sleep(0.3)
            events.append("first ends")
        await asyncio.wait_for(waiting, 10)
    finally:
        await first.close()
        await second.close()
    assert events == ["first ends", "second began"]


async def test_a_failed_statement_leaves_the_connection_usable(store: SqlStore) -> None:
    for _ in range(3):
        with pytest.raises(InfrastructureError):
            async with store.read() as tx:
                await tx.conn.execute(sa.text("SELECT * FROM no_such_table"))
        with pytest.raises(sa.exc.IntegrityError):
            async with store.transaction() as tx:
                await tx.conn.execute(sa.text("INSERT INTO scratch (n) VALUES (7)"))
                await tx.conn.execute(sa.text("INSERT INTO scratch (n) VALUES (7)"))
    assert await _count(store) == 0  # each failed writer rolled back
    await _insert(store, 7)
    assert await _count(store) == 1


async def test_cancelled_reads_and_writes_leave_no_transaction_open(store: SqlStore) -> None:
    # Callers give up at random points; every connection must come back to the pool clean,
    # or a later writer would wait on a lock nobody releases.
    rng = random.Random(5)

    async def chatter(task: int) -> None:
        for i in range(40):
            work = _insert(store, task * 1000 + i) if i % 3 == 0 else _count(store)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(work, rng.choice((0.0005, 0.002, 0.01, 1.0)))

    await asyncio.gather(*(chatter(task) for task in range(16)))
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(_insert(store, -n) for n in range(1, 41))), 10)
    assert time.monotonic() - started < 5
    assert await _count(store) >= 40


async def test_closing_while_a_cancelled_statement_still_runs_is_safe(tmp_path: Path) -> None:
    # The statement keeps running on its thread after its caller is cancelled; closing the
    # connection meanwhile must wait for it, not free it under the running statement.
    for _ in range(3):
        store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
        reading = asyncio.create_task(_slow_read(store))
        await asyncio.sleep(0.05)
        reading.cancel()
        await store.close()
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        async with store.read() as tx:
            assert (await tx.conn.execute(SLOW_COUNT)).scalar_one() == 2_000_000
    finally:
        await store.close()


async def _slow_read(store: SqlStore) -> None:
    """A read transaction whose statement takes a while."""
    async with store.read() as tx:
        await tx.conn.execute(SLOW_COUNT)


async def test_a_loop_closed_under_a_running_read_leaves_the_readers_thread_alive(
    tmp_path: Path,
) -> None:
    # Every loop of the process shares the readers' thread; one that closes while its
    # statement still runs there must not take the thread down with it.
    url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"

    async def abandon_a_read() -> None:
        store = await SqlStore.open(url)
        reading = asyncio.create_task(_slow_read(store))
        await asyncio.sleep(0.05)
        reading.cancel()

    await asyncio.to_thread(asyncio.run, abandon_a_read())
    await asyncio.sleep(1.0)  # the abandoned statement ends after its loop has closed
    store = await SqlStore.open(url)
    try:
        async with asyncio.timeout(10), store.read() as tx:
            assert (await tx.conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
    finally:
        await store.close()


async def test_a_write_waiting_inside_a_read_transaction_holds_up_no_reader(
    store: SqlStore, tmp_path: Path
) -> None:
    holder = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    release = asyncio.Event()

    async def hold_the_write_lock() -> None:
        async with holder.transaction() as tx:
            await tx.conn.execute(sa.text("INSERT INTO scratch (n) VALUES (1)"))
            await release.wait()

    async def write_in_a_read() -> None:
        async with store.read() as tx:
            await tx.conn.execute(sa.text("INSERT INTO scratch (n) VALUES (2)"))

    holding = asyncio.create_task(hold_the_write_lock())
    await asyncio.sleep(0.2)
    waiting = asyncio.create_task(write_in_a_read())  # waits for the lock (busy timeout)
    await asyncio.sleep(0.2)
    try:
        async with asyncio.timeout(2):
            assert await _count(store) == 0
    finally:
        release.set()
        await holding
        await asyncio.wait_for(waiting, 10)
        await holder.close()
    assert await _count(store) == 2


async def test_a_write_transaction_inside_another_fails_at_once(store: SqlStore) -> None:
    # This process's writers queue for SQLite's one write lock; a nested writer would wait
    # for itself forever, so it is refused instead.
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="inside another"):
        async with store.transaction(), store.transaction():
            pass
    assert time.monotonic() - started < 1
    await _insert(store, 1)  # the queue is free again
    assert await _count(store) == 1
