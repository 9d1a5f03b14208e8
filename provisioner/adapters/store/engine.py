"""The SQL store: engine set-up per dialect, migrations at open, transactions for the core."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from provisioner.adapters.store import sqlite_driver
from provisioner.adapters.store.transaction import SqlTransaction
from provisioner.errors import ConfigError, InfrastructureError, InvalidInput

MIGRATIONS = Path(__file__).parent / "migrations"
READONLY = "provisioner_readonly"
# JSON columns through orjson: several times faster than json, and listings decode a value per row.
JSON_CODEC: dict[str, Any] = {
    "json_serializer": lambda value: orjson.dumps(value).decode(),
    "json_deserializer": orjson.loads,
}
# Any constant works; it only has to be the same in every process sharing the database.
MIGRATION_LOCK_ID = 0x70726F76


class SqlStore:
    """Store port on SQLAlchemy async: SQLite (through sqlite_driver) or PostgreSQL (asyncpg)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # SQLite admits one writer; the others wait in its busy handler, which sleeps 1, 2,
        # 5 … 100 ms between tries, so a lock passed between 16 workers sat idle most of the
        # time. This process's writers queue here instead and get it the moment it is free;
        # other processes still meet the busy handler.
        self._writers = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._writing: asyncio.Task[Any] | None = None  # the task holding self._writers

    @classmethod
    async def open(cls, url: str) -> SqlStore:
        """Connect, apply pending migrations, and return a ready store."""
        store = cls(_create_engine(url))
        try:
            if store._engine.dialect.name == "sqlite":
                await _enable_wal(store._engine)
            async with store._engine.begin() as conn:
                await _migrate(conn)
        except (exc.DBAPIError, OSError) as error:
            await store.close()
            raise InfrastructureError(
                f"cannot open the database ({type(error).__name__}); "
                "check PROVISIONER_DATABASE_URL and that the server is up"
            ) from error
        return store

    def transaction(self) -> AbstractAsyncContextManager[SqlTransaction]:
        """One transaction that may write; database failures surface as InfrastructureError."""
        return self._transaction(readonly=False)

    def read(self) -> AbstractAsyncContextManager[SqlTransaction]:
        """One transaction that only reads: on SQLite it does not wait for the writer."""
        return self._transaction(readonly=True)

    @asynccontextmanager
    async def _transaction(self, *, readonly: bool) -> AsyncIterator[SqlTransaction]:
        """A transaction on a pooled connection, with foreign errors translated."""
        queue = self._queue_for_writer() if not readonly else contextlib.nullcontext()
        try:
            async with queue, self._engine.connect() as conn:
                await conn.execution_options(**{READONLY: readonly})
                async with conn.begin():
                    yield SqlTransaction(conn)
        except exc.DataError:
            # PostgreSQL refuses NUL characters in text and numbers beyond a column's range.
            raise InvalidInput(
                "a value is not valid here (a NUL character, or a number out of range)",
                code="invalid_value",
            ) from None
        except exc.OperationalError as error:
            raise InfrastructureError(
                f"the database is unavailable ({type(error.orig).__name__})"
            ) from error
        except exc.InterfaceError as error:
            raise InfrastructureError("the database connection failed") from error

    @asynccontextmanager
    async def _queue_for_writer(self) -> AsyncIterator[None]:
        """Wait for this process's other SQLite writers to finish (PostgreSQL: no wait)."""
        if self._writers is None:
            yield
            return
        if self._writing is not None and self._writing is asyncio.current_task():
            # SQLite would have failed it after its busy timeout; the queue would wait forever.
            raise RuntimeError("a write transaction opened inside another one")
        async with self._writers:
            self._writing = asyncio.current_task()
            try:
                yield
            finally:
                self._writing = None

    async def ping(self) -> None:
        """Raise InfrastructureError unless a trivial query succeeds."""
        async with self.read() as tx:
            await tx.conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        """Dispose of every pooled connection."""
        await self._engine.dispose()


def _create_engine(url: str) -> AsyncEngine:
    """An async engine tuned for its dialect."""
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError:
        raise ConfigError(f"PROVISIONER_DATABASE_URL is not a database URL: {url!r}") from None
    if parsed.drivername == "sqlite+aiosqlite":
        return _sqlite_engine(url)
    if parsed.drivername == "postgresql+asyncpg":
        # No pre-ping: it costs a round trip per transaction; a dropped connection fails one
        # transaction (InfrastructureError, 503) and the pool replaces it.
        # At most 30 connections as before, but 20 kept: with 10, 16 concurrent requests
        # opened and closed a server connection every few hundred requests.
        return create_async_engine(
            url, pool_size=20, max_overflow=10, pool_recycle=1800, **JSON_CODEC
        )
    raise ConfigError(
        "PROVISIONER_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
    )


def _sqlite_engine(url: str) -> AsyncEngine:
    """SQLite with WAL, a busy timeout and BEGIN IMMEDIATE (its dialect drops FOR UPDATE)."""
    path = sa.make_url(url).database or ":memory:"
    # Connections beyond pool_size are closed when returned: under 16 concurrent requests a
    # smaller pool opened and closed a connection (and its thread) every few requests.
    engine = create_async_engine(
        url, async_creator=lambda: sqlite_driver.connect(path), pool_size=20, **JSON_CODEC
    )

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A deferred transaction that reads then writes can fail at once with SQLITE_BUSY,
        # so writers take the lock up front; readers (WAL) need no lock at all.
        readonly = conn.get_execution_options().get(READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


async def _enable_wal(engine: AsyncEngine) -> None:
    """Switch the file to WAL once (it sticks); retry while another process holds a lock.

    Changing the journal mode needs an exclusive lock and SQLite answers "locked" at once
    instead of waiting, so processes starting together on a new file must take turns.
    """
    for attempt in range(100):
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            try:
                await raw.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if attempt == 99:
                    raise
        await asyncio.sleep(0.05)


async def _migrate(conn: AsyncConnection) -> None:
    """Bring the schema to the newest revision, one process at a time."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
    await conn.run_sync(_upgrade)


def _upgrade(sync_conn: sa.Connection) -> None:
    """Run Alembic's upgrade on an open connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = sync_conn
    command.upgrade(config, "head")
