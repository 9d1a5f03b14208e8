"""SQLite connections for SQLAlchemy's aiosqlite dialect: one thread crossing per statement.

aiosqlite hands every cursor call (cursor, execute, fetchall, close) to the connection's thread
separately, and each crossing costs a thread wake-up and a loop wake-up: a one-query read
transaction made nine of them and spent a third of an API request's CPU there. Here a statement
and its fetch run in one crossing, a read transaction's BEGIN travels with the statement after
it, and the rollback the pool sends on a connection with no open transaction is skipped: two
crossings per read.
SQLAlchemy's dialect adapts this object exactly as it adapts an aiosqlite connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from queue import SimpleQueue
from typing import Any, Self, TypeVar

T = TypeVar("T")
Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop | None, asyncio.Future[Any] | None]
# What the engine's begin hook sends for a read transaction. It waits and goes with the next
# statement; a writer's BEGIN IMMEDIATE goes at once, since its caller may count on holding
# the write lock before its next statement (migrations do).
READ_BEGIN = "BEGIN"
BUSY_TIMEOUT_S = 30.0


async def connect(path: str) -> OneHopConnection:
    """Open `path` on a new thread: autocommit mode (we send BEGIN), WAL-friendly sync level."""
    worker = _Worker(path)

    def open_database() -> sqlite3.Connection:
        raw = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        raw.execute("PRAGMA synchronous=NORMAL")
        return raw

    raw = await worker.call(open_database)
    return OneHopConnection(worker, raw)


@functools.cache
def _readers() -> _Worker:
    """The one thread every read transaction of the process runs its statements on.

    Reads under WAL never wait for a lock, so sharing a thread costs them nothing, while one
    thread per busy connection made 16 concurrent readers spend a third of their CPU handing
    the GIL around. Writers keep a thread each: one may wait seconds for the write lock.
    """
    return _Worker("readers")


# A forked child has no threads: it starts its own readers' thread when it first reads.
os.register_at_fork(after_in_child=_readers.cache_clear)


class _Worker:
    """One thread that runs a connection's calls in order."""

    def __init__(self, name: str) -> None:
        self._jobs: SimpleQueue[Job | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"sqlite {name}", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the thread and wait for its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, loop, future))
        return await future

    def post(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the thread without waiting for it."""
        self._jobs.put((fn, None, None))

    def stop(self) -> None:
        """End the thread once the calls before this one have run."""
        self._jobs.put(None)

    def _run(self) -> None:
        """The thread: run each call and hand its outcome back to the caller's loop."""
        while (job := self._jobs.get()) is not None:
            fn, loop, future = job
            result, error = None, None
            try:
                result = fn()
            except BaseException as raised:  # every outcome goes back to the awaiting caller
                error = raised
            if loop is None or future is None:
                continue
            # A caller that gave up may have closed its loop since; the thread must live on
            # (the readers' thread serves every loop of the process).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Complete `future` unless its caller gave up on it."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _is_query(operation: str) -> bool:
    """Whether a statement only reads (a plain SELECT)."""
    return operation.lstrip()[:6].upper() == "SELECT"


class OneHopConnection:
    """The aiosqlite-shaped connection SQLAlchemy's adapter drives."""

    isolation_level = None  # autocommit: transactions are the explicit BEGINs we are sent

    def __init__(self, worker: _Worker, raw: sqlite3.Connection) -> None:
        self._worker = worker
        self._raw: sqlite3.Connection | None = raw
        self._begin_pending = False
        self._in_transaction = False
        self._reading = False  # in a read transaction: its crossings go to the readers' thread
        self._sent = self._done = 0  # crossings asked for (loop) and finished (thread)
        # Two threads may hold work for this connection (its own, the readers'): a crossing
        # whose caller was cancelled can still be running when the next one, or close, starts.
        self._using = threading.Lock()

    @property
    def _connection(self) -> sqlite3.Connection | None:
        """The open sqlite3 connection; SQLAlchemy's adapter checks it before commit/rollback."""
        return self._raw

    def cursor(self) -> OneHopCursor:
        """A cursor; it needs no thread crossing of its own."""
        return OneHopCursor(self)

    async def run(
        self, operation: str, parameters: Sequence[Any] | None, *, many: bool = False
    ) -> tuple[list[Any], Any, int, int | None]:
        """Execute a statement and fetch its rows in one crossing: rows, description, counts."""
        if operation == READ_BEGIN and not self._begin_pending:
            self._begin_pending = True
            return [], None, -1, None
        begin, self._begin_pending = self._begin_pending, False
        # Only queries go to the readers' thread: a write in a read transaction may wait for
        # the write lock, and must not hold up every reader of the process meanwhile; from
        # then on the transaction stays on the connection's own thread, its commit included.
        self._reading = (begin or self._reading) and _is_query(operation)

        def execute(raw: sqlite3.Connection) -> tuple[list[Any], Any, int, int | None]:
            if begin:
                raw.execute(READ_BEGIN)
            if many:
                cursor = raw.executemany(operation, parameters or [])
            else:
                cursor = raw.execute(operation, parameters or ())
            try:
                rows = cursor.fetchall() if cursor.description else []
                return rows, cursor.description, cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        return await self._cross(execute, reading=self._reading)

    async def execute(self, operation: str) -> None:
        """Run one statement outside SQLAlchemy (PRAGMAs that refuse to run in a transaction)."""
        await self.run(operation, None)

    async def commit(self) -> None:
        """Commit; a transaction that never ran a statement has nothing to commit."""
        await self._end("COMMIT")

    async def rollback(self) -> None:
        """Roll back; without an open transaction (the pool's reset after a commit) do nothing."""
        await self._end("ROLLBACK")

    async def _end(self, statement: str) -> None:
        """COMMIT or ROLLBACK the open transaction, if there is one."""
        self._begin_pending = False
        reading, self._reading = self._reading, False
        # Decided here only when no crossing is under way (one cancelled mid-statement may
        # still open a transaction); otherwise the thread looks for itself.
        if self._sent == self._done and not self._in_transaction:
            return

        def end(raw: sqlite3.Connection) -> None:
            if raw.in_transaction:
                raw.execute(statement)

        await self._cross(end, reading=reading)

    async def _cross(self, fn: Callable[[sqlite3.Connection], T], *, reading: bool = False) -> T:
        """Run `fn` on the thread, noting whether a transaction is open after it."""
        raw = self._open()

        def tracked() -> T:
            with self._using:
                try:
                    return fn(raw)
                finally:
                    # Written by a thread only, read by the loop after the crossing returns.
                    self._in_transaction = raw.in_transaction
                    self._done += 1

        self._sent += 1
        return await (_readers() if reading else self._worker).call(tracked)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        """Register a SQL function (SQLAlchemy adds REGEXP)."""
        await self._cross(lambda raw: raw.create_function(*args, **kwargs))

    async def close(self) -> None:
        """Close the connection and end its thread."""
        raw, self._raw = self._raw, None
        if raw is not None:
            await self._worker.call(self._closer(raw))
            self._worker.stop()

    def stop(self) -> None:
        """Close without waiting (SQLAlchemy's terminate of a connection it gave up on)."""
        raw, self._raw = self._raw, None
        if raw is not None:
            self._worker.post(self._closer(raw))
            self._worker.stop()

    def _closer(self, raw: sqlite3.Connection) -> Callable[[], None]:
        """Close `raw` once no thread is using it."""

        def close() -> None:
            with self._using:
                raw.close()

        return close

    def _open(self) -> sqlite3.Connection:
        """The sqlite3 connection, or the error aiosqlite gives for a closed one."""
        if self._raw is None:
            raise ValueError("no active connection")
        return self._raw


class OneHopCursor:
    """A cursor whose execute brings the rows along; fetches read what is already here."""

    arraysize = 1

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self._at = 0
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> Self:
        """The cursor itself (SQLAlchemy enters what `cursor()` returns)."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Nothing to release."""

    async def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> Self:
        """Run the statement and keep its rows."""
        found = await self._connection.run(operation, parameters)
        self._keep(*found)
        return self

    async def executemany(self, operation: str, parameters: Sequence[Sequence[Any]]) -> Self:
        """Run the statement once per parameter set."""
        found = await self._connection.run(operation, parameters, many=True)
        self._keep(*found)
        return self

    async def fetchall(self) -> list[Any]:
        """The rows not fetched yet."""
        rows, self._at = self._rows[self._at :], len(self._rows)
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to `size` more rows."""
        end = self._at + (size or self.arraysize)
        rows, self._at = self._rows[self._at : end], min(end, len(self._rows))
        return rows

    async def fetchone(self) -> Any:
        """The next row, or None."""
        rows = await self.fetchmany(1)
        return rows[0] if rows else None

    async def close(self) -> None:
        """Drop the rows."""
        self._rows, self._at = [], 0

    def _keep(
        self, rows: list[Any], description: Any, rowcount: int, lastrowid: int | None
    ) -> None:
        """Remember what a statement returned."""
        self._rows, self._at = rows, 0
        self.description, self.rowcount, self.lastrowid = description, rowcount, lastrowid
