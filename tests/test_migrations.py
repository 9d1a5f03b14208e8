"""Alembic migrations produce exactly the schema the code declares, on both engines."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from provisioner.adapters.store.engine import MIGRATIONS, SqlStore
from provisioner.adapters.store.tables import metadata


async def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    store = await SqlStore.open(database_url)
    try:
        async with store.transaction() as tx:

            def diff(sync_conn: sa.Connection) -> list[Any]:
                context = MigrationContext.configure(sync_conn)
                return list(compare_metadata(context, metadata))

            assert await tx.conn.run_sync(diff) == []
    finally:
        await store.close()


async def test_opening_twice_is_harmless(database_url: str) -> None:
    for _ in range(2):
        store = await SqlStore.open(database_url)
        async with store.transaction() as tx:
            version = (
                await tx.conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ).scalar()
        await store.close()
    assert version == _newest_revision()


def _newest_revision() -> str:
    """The head of the migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head
