"""Managing the playbook catalogue on behalf of someone: list, upload, delete, each audited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

from provisioner.audit import record
from provisioner.models import Actor
from provisioner.playbooks import DEFAULT_ENTRY, Playbook, PlaybookCatalog
from provisioner.ports import AuditRows, Database


class Playbooks:
    """The catalogue's use cases; uploads and deletes are audited against `playbook:NAME`."""

    def __init__(
        self, catalog: PlaybookCatalog, store: Database[AuditRows], clock: Callable[[], datetime]
    ) -> None:
        self.catalog, self._store, self._clock = catalog, store, clock

    async def list(self) -> list[Playbook]:
        """Every playbook, the directory's first."""
        return await self.catalog.all()

    async def get(self, name: str) -> Playbook:
        """One playbook (NotFound if there is none)."""
        return await self.catalog.get(name)

    async def upload(
        self, actor: Actor, chunks: AsyncIterator[bytes], name: str, entry: str | None = None
    ) -> Playbook:
        """Check and store an archive under `name`; nothing is kept when it is refused."""
        playbook = await self.catalog.upload(
            chunks, name=name, uploaded_by=actor.name, entry=entry or DEFAULT_ENTRY
        )
        await self._audit(actor, "playbook.uploaded", name, f"digest {playbook.digest}")
        return playbook

    async def delete(self, actor: Actor, name: str) -> None:
        """Remove an upload's name."""
        await self.catalog.delete(name)
        await self._audit(actor, "playbook.deleted", name, None)

    async def _audit(self, actor: Actor, action: str, name: str, reason: str | None) -> None:
        """Record one change to the catalogue."""
        async with self._store.transaction() as tx:
            await record(tx, self._clock(), actor, action, f"playbook:{name}", reason=reason)
