"""Uploaded playbook archives: spooled while streaming, then checked member by member as unpacked.

zip, tar and tar.gz, told apart by their first bytes. Every limit is enforced on the bytes that
really come out, not on what the headers claim; the first broken rule stops everything and
names the member (playbook_rules holds the rules on names and text).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, cast

from provisioner.errors import InvalidInput, PayloadTooLarge
from provisioner.playbook_rules import check_path, check_text, refuse

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_MEMBERS = 1000
MAX_EXPANDED_BYTES = 64 * 1024 * 1024
MAX_RATIO = 100
# Below this, a ratio says nothing: a few small text files compress very well.
RATIO_FLOOR_BYTES = 1024 * 1024
# tar headers and padding come on top of the members' bytes.
MAX_TAR_STREAM_BYTES = MAX_EXPANDED_BYTES + MAX_MEMBERS * 2048 + 1024 * 1024
CHUNK = 1024 * 1024
ARCHIVE = "(the archive)"
# What ansible reads as YAML or templates: never left unscanned as "binary".
TEXT_SUFFIXES = frozenset({".yml", ".yaml", ".json", ".j2", ".jinja", ".jinja2", ".cfg", ".ini"})


def payload_too_large() -> PayloadTooLarge:
    """The upload is over the size limit (HTTP 413)."""
    return PayloadTooLarge(
        f"playbook uploads are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB"
    )


@dataclass(frozen=True)
class Spooled:
    """An upload written to disk: its size and SHA-256."""

    path: Path
    size: int
    digest: str


async def spool(chunks: AsyncIterator[bytes], path: Path) -> Spooled:
    """Write the streamed upload to `path` (0600), refusing it as soon as it passes the limit."""
    digest, size, pending = hashlib.sha256(), 0, bytearray()
    handle = await asyncio.to_thread(_create, path)
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise payload_too_large()
            digest.update(chunk)
            pending += chunk
            if len(pending) >= CHUNK:  # write off the loop, in large pieces
                await asyncio.to_thread(handle.write, bytes(pending))
                pending.clear()
        await asyncio.to_thread(handle.write, bytes(pending))
    finally:
        await asyncio.to_thread(handle.close)
    return Spooled(path, size, digest.hexdigest())


def _create(path: Path) -> BinaryIO:
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


@dataclass(frozen=True)
class Unpacked:
    """What a valid archive held."""

    members: int
    expanded: int


class _Budget:
    """Counts members and expanded bytes against the limits, as the bytes come out."""

    def __init__(self, archive_size: int) -> None:
        self.archive_size = archive_size
        self.members = 0
        self.expanded = 0
        self.names: set[PurePosixPath] = set()

    def member(self, name: str, path: PurePosixPath) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise refuse(name, "upload_too_many_members", f"more than {MAX_MEMBERS} members")
        if path in self.names:
            raise refuse(name, "upload_duplicate_member", "a member appears twice")
        self.names.add(path)

    def grow(self, name: str, count: int) -> None:
        self.expanded += count
        if self.expanded > MAX_EXPANDED_BYTES:
            limit = MAX_EXPANDED_BYTES // (1024 * 1024)
            raise refuse(name, "upload_too_large_expanded", f"more than {limit} MiB expanded")
        if self.expanded > max(RATIO_FLOOR_BYTES, MAX_RATIO * self.archive_size):
            raise refuse(
                name, "upload_expansion_ratio", f"expands more than {MAX_RATIO} times its size"
            )


def unpack(archive: Path, size: int, into: Path, entry: str) -> Unpacked:
    """Check and unpack `archive` into the new directory `into`; blocking (run in a thread)."""
    into.mkdir(mode=0o755)
    with archive.open("rb") as handle:
        head = handle.read(512)
    budget = _Budget(size)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        _unpack_zip(archive, into, budget)
    elif head.startswith(b"\x1f\x8b"):
        with gzip.open(archive, "rb") as stream:
            _unpack_tar(cast(IO[bytes], _Capped(stream)), into, budget)
    elif head[257:262] == b"ustar":
        with archive.open("rb") as stream:
            _unpack_tar(stream, into, budget)
    else:
        raise InvalidInput(
            "playbook upload refused: not a zip, tar or tar.gz archive",
            code="upload_not_an_archive",
        )
    entry_path = PurePosixPath(entry)
    if entry_path not in budget.names or not (into / entry_path).is_file():
        raise refuse(entry, "upload_missing_entry", "the entry point is not in the archive")
    return Unpacked(budget.members, budget.expanded)


def _unpack_zip(archive: Path, into: Path, budget: _Budget) -> None:
    try:
        with zipfile.ZipFile(archive) as opened:
            infos = opened.infolist()
            if len(infos) > MAX_MEMBERS:  # the central directory says so before any byte
                raise refuse(ARCHIVE, "upload_too_many_members", f"more than {MAX_MEMBERS} members")
            for info in infos:
                path = _checked_member(info.filename, budget)
                if info.flag_bits & 0x1:
                    raise refuse(info.filename, "upload_encrypted", "encrypted members are refused")
                kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
                if info.is_dir() or kind == stat.S_IFDIR:
                    _directory(into, path, info.filename)
                elif kind in (0, stat.S_IFREG):
                    with opened.open(info) as source:
                        _write(source, into, path, info.filename, budget)
                else:
                    raise _special(info.filename, kind == stat.S_IFLNK)
    except (zipfile.BadZipFile, EOFError, NotImplementedError) as error:
        raise InvalidInput(
            f"playbook upload refused: a broken zip archive ({error})", code="upload_bad_archive"
        ) from None


def _unpack_tar(stream: IO[bytes], into: Path, budget: _Budget) -> None:
    try:
        with tarfile.open(fileobj=stream, mode="r|") as opened:
            for info in opened:
                name = info.name
                if name in (".", "./"):
                    continue
                path = _checked_member(name.removeprefix("./"), budget, name)
                if info.isdir():
                    _directory(into, path, name)
                elif info.isreg():
                    source = opened.extractfile(info)
                    assert source is not None  # a regular member always has a file
                    _write(source, into, path, name, budget)
                else:
                    raise _special(name, info.issym() or info.islnk())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:  # OSError: bad gzip
        raise InvalidInput(
            f"playbook upload refused: a broken tar archive ({error})", code="upload_bad_archive"
        ) from None


def _checked_member(name: str, budget: _Budget, spelled: str | None = None) -> PurePosixPath:
    """The member's path after the name rules, counted against the budget."""
    path = check_path(name.rstrip("/") or name)
    budget.member(spelled or name, path)
    return path


def _special(name: str, link: bool) -> InvalidInput:
    if link:
        return refuse(name, "upload_link", "symbolic and hard links are refused")
    return refuse(name, "upload_special_file", "devices, fifos and other special files are refused")


def _directory(into: Path, path: PurePosixPath, name: str) -> None:
    with _collisions(name):
        (into / path).mkdir(mode=0o755, parents=True, exist_ok=True)


def _write(source: IO[bytes], into: Path, path: PurePosixPath, name: str, budget: _Budget) -> None:
    """Copy one member out, counting its real bytes; then check its text."""
    target = into / path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    content = bytearray()
    with _collisions(name):
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        out = os.fdopen(os.open(target, flags, 0o644), "wb")
    with out:
        while data := source.read(CHUNK):
            budget.grow(name, len(data))
            content += data
            out.write(data)
    text = _text(bytes(content))
    if text is not None:
        check_text(name, text)
    elif path.suffix in TEXT_SUFFIXES:
        raise refuse(name, "upload_not_text", "playbooks, vars and templates must be UTF-8 text")


@contextmanager
def _collisions(name: str) -> Iterator[None]:
    """A member whose path another member already took (a file where a directory goes)."""
    try:
        yield
    except OSError:
        raise refuse(name, "upload_bad_member", "it collides with another member") from None


def _text(content: bytes) -> str | None:
    """The member as text, or None for binary content (no template or YAML can be binary)."""
    if b"\x00" in content[:8192]:
        return None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _Capped:
    """A decompressed stream that refuses to yield more than a tar of our limits can hold."""

    def __init__(self, stream: gzip.GzipFile) -> None:
        self._stream = stream
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._read += len(data)
        if self._read > MAX_TAR_STREAM_BYTES:
            limit = MAX_EXPANDED_BYTES // (1024 * 1024)
            raise refuse(ARCHIVE, "upload_too_large_expanded", f"more than {limit} MiB expanded")
        return data


def new_staging(parent: Path) -> Path:
    """A fresh private directory under `parent` for one upload (the caller removes it)."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="incoming-", dir=parent))
