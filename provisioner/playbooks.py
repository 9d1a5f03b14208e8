"""The playbook catalogue: the operator's directory, plus uploads, every run fixed to a digest.

`PROVISIONER_PLAYBOOKS_DIR`: a directory there is one playbook named after it (its `site.yml`),
a `NAME.yml` file one playbook `NAME` (run from a copy of the directory without the playbook
subdirectories). Uploads are checked while they stream in (playbook_uploads) and stored under
`<data>/playbook-store/` by digest (playbook_store). `resolve(name)` fixes what a run will use:
an upload's digest, or a snapshot of the directory playbook as it is now; `by_digest` finds it
again when the step runs. Re-uploading a name points it at a new digest; deleting a name keeps
the content (an operation may still run it) until `prune` drops what nothing uses.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from provisioner.errors import Conflict, InvalidInput, NotFound, UnknownReference
from provisioner.playbook_store import PlaybookStore, ResolvedPlaybook, archive_digest
from provisioner.playbook_uploads import spool, unpack
from provisioner.threads import to_thread_to_the_end

__all__ = ["Playbook", "PlaybookCatalog", "PlaybookSource", "ResolvedPlaybook"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_ENTRY = "site.yml"


class PlaybookSource(StrEnum):
    """Where a playbook comes from."""

    DIRECTORY = "directory"
    UPLOAD = "upload"


@dataclass(frozen=True)
class Playbook:
    """A playbook as the catalogue lists it."""

    name: str
    source: PlaybookSource
    entry: str
    digest: str | None = None  # uploads: the digest a run of it uses now
    uploaded_by: str | None = None
    size: int | None = None  # uploads: the archive's bytes
    created_at: datetime | None = None

    def fields(self) -> dict[str, Any]:
        """JSON-ready fields (the API's answer)."""
        created = self.created_at.isoformat() if self.created_at else None
        return {**self.__dict__, "source": str(self.source), "created_at": created}


def check_name(name: str) -> str:
    """A playbook name: letters, digits, '_', '.', '-', at most 63 characters."""
    if not NAME_RE.match(name) or name.endswith((".yml", ".yaml")):
        raise InvalidInput(
            f"playbook name {name!r}: use letters, digits, '_', '.' and '-' (at most 63)",
            code="invalid_playbook_name",
        )
    return name


def check_entry(entry: str) -> str:
    """An entry point: a relative .yml/.yaml path inside the playbook."""
    path = PurePosixPath(entry)
    if path.is_absolute() or ".." in path.parts or path.suffix not in (".yml", ".yaml"):
        raise InvalidInput(
            f"playbook entry {entry!r}: a relative .yml path inside the playbook",
            code="invalid_playbook_entry",
        )
    return str(path)


def default_name(filename: str) -> str:
    """The name an upload gets without a `name` field: its file name without the extensions."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        base = base.removesuffix(suffix)
    return check_name(base)


@dataclass(frozen=True)
class _Local:
    """A playbook of the operator's directory."""

    directory: Path
    entry: str
    ignore: frozenset[str]  # top-level names left out of its copy


class PlaybookCatalog:
    """The catalogue: list, resolve, upload, delete and prune playbooks."""

    def __init__(
        self,
        directory: Path,
        data_dir: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._directory = directory
        self._store = PlaybookStore(data_dir / "playbook-store")
        self._clock = clock

    async def all(self) -> list[Playbook]:
        """Every playbook: the directory's, then the uploads (a directory name hides an upload)."""
        return await asyncio.to_thread(self._all)

    async def get(self, name: str) -> Playbook:
        """One playbook by name; NotFound if there is none."""
        for playbook in await self.all():
            if playbook.name == name:
                return playbook
        raise NotFound(f"no playbook named {name!r}")

    async def resolve(self, name: str) -> ResolvedPlaybook:
        """Fix what a run of `name` uses (UnknownReference if there is no such playbook)."""
        return await asyncio.to_thread(self._resolve, name)

    def by_digest(self, digest: str) -> ResolvedPlaybook:
        """The content a run was fixed to; NotFound if it is gone. A stat and a small read."""
        return self._store.by_digest(digest)

    async def upload(
        self,
        chunks: AsyncIterator[bytes],
        *,
        name: str,
        uploaded_by: str,
        entry: str = DEFAULT_ENTRY,
    ) -> Playbook:
        """Check a streamed archive and store it; nothing is kept if any rule refuses it."""
        check_name(name)
        check_entry(entry)
        if name in await asyncio.to_thread(self._locals):
            raise Conflict(f"playbook {name!r} comes from the playbooks directory")
        stage = await asyncio.to_thread(self._store.new_stage)
        try:
            spooled = await spool(chunks, stage / "archive")
            content = stage / "content"
            await to_thread_to_the_end(content.mkdir)
            await to_thread_to_the_end(unpack, spooled.path, spooled.size, content / "tree", entry)
            record = {
                "digest": archive_digest(spooled.digest, entry),
                "sha256": spooled.digest,
                "entry": entry,
                "uploaded_by": uploaded_by,
                "size": spooled.size,
                "created_at": self._clock().isoformat(),
            }
            await to_thread_to_the_end(self._name_upload, content, name, record)
        finally:
            await to_thread_to_the_end(shutil.rmtree, stage, ignore_errors=True)
        return _upload(name, record)

    async def delete(self, name: str) -> None:
        """Remove an upload's name (its content stays until `prune`); NotFound if none."""
        if name in await asyncio.to_thread(self._locals):
            raise Conflict(f"playbook {name!r} comes from the playbooks directory; remove it there")
        await asyncio.to_thread(self._delete, name)

    async def prune(self, in_use: Collection[str]) -> list[str]:
        """Drop stored content that no uploaded name and no digest in `in_use` refers to."""
        return await asyncio.to_thread(self._prune, set(in_use))

    # Blocking parts, run in threads.

    def _locals(self) -> dict[str, _Local]:
        """The playbooks of the operator's directory, by name."""
        if not self._directory.is_dir():
            return {}
        paths = sorted(self._directory.iterdir())
        folders = {p.name for p in paths if p.is_dir() and (p / DEFAULT_ENTRY).is_file()}
        found = {
            name: _Local(self._directory / name, DEFAULT_ENTRY, frozenset()) for name in folders
        }
        for path in paths:
            if path.is_file() and path.suffix == ".yml" and path.stem not in found:
                found[path.stem] = _Local(self._directory, path.name, frozenset(folders))
        return {name: local for name, local in found.items() if NAME_RE.match(name)}

    def _all(self) -> list[Playbook]:
        local = self._locals()
        listed = [Playbook(n, PlaybookSource.DIRECTORY, p.entry) for n, p in sorted(local.items())]
        uploads = sorted(self._store.read_index().items())
        return listed + [_upload(name, record) for name, record in uploads if name not in local]

    def _resolve(self, name: str) -> ResolvedPlaybook:
        local = self._locals().get(name)
        if local is not None:
            digest = self._store.snapshot(local.directory, local.entry, local.ignore)
        else:
            record = self._store.read_index().get(name)
            if record is None:
                raise UnknownReference(f"unknown playbook {name!r}")
            digest = record["digest"]
        return self._store.by_digest(digest, name)

    def _name_upload(self, content: Path, name: str, record: dict[str, Any]) -> None:
        with self._store.locked():
            self._store.put(content, record["digest"], record["entry"])
            index = self._store.read_index()
            index[name] = record
            self._store.write_index(index)

    def _delete(self, name: str) -> None:
        with self._store.locked():
            index = self._store.read_index()
            if index.pop(name, None) is None:
                raise NotFound(f"no uploaded playbook named {name!r}")
            self._store.write_index(index)

    def _prune(self, in_use: set[str]) -> list[str]:
        with self._store.locked():
            named = {record["digest"] for record in self._store.read_index().values()}
            return self._store.prune(in_use | named)


def _upload(name: str, record: dict[str, Any]) -> Playbook:
    return Playbook(
        name=name,
        source=PlaybookSource.UPLOAD,
        entry=record["entry"],
        digest=record["digest"],
        uploaded_by=record["uploaded_by"],
        size=record["size"],
        created_at=datetime.fromisoformat(record["created_at"]),
    )
