"""Playbook content stored by digest: immutable trees, and the index of uploaded names.

`<root>/<digest>/tree/` holds the files a run uses, `<root>/<digest>/meta.json` its entry point;
the digest is the SHA-256 of both (see `archive_digest`, `tree_digest`), so one digest always
means one exact run. `<root>/index.json` maps an uploaded name to its record. Everything here
blocks: callers run it in a thread (the lookups by digest are a stat and a small read).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.errors import NotFound, PlaybookFailed

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ResolvedPlaybook:
    """What a run uses, fixed when the operation is created: its content by digest."""

    name: str
    digest: str
    directory: Path
    entry: str


def archive_digest(archive_sha256: str, entry: str) -> str:
    """The digest of an upload: its archive's SHA-256 and its entry point."""
    return hashlib.sha256(f"upload\0{entry}\0{archive_sha256}".encode()).hexdigest()


def tree_digest(directory: Path, entry: str, ignore: frozenset[str] = frozenset()) -> str:
    """The digest of a directory's files (names and bytes, links refused) and its entry point."""
    digest = hashlib.sha256(f"tree\0{entry}\0".encode())
    root = directory.resolve()
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if relative.split("/")[0] in ignore:
            continue
        if path.is_symlink() and (path.is_dir() or not path.resolve().is_relative_to(root)):
            raise PlaybookFailed(f"playbook member {relative}: a link out of the playbook")
        if path.is_file():
            digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


class PlaybookStore:
    """The content-addressed store under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def by_digest(self, digest: str, name: str | None = None) -> ResolvedPlaybook:
        """The content stored under `digest`; NotFound if it is gone (or never was)."""
        meta = self.root / digest / "meta.json" if DIGEST_RE.match(digest) else None
        try:
            entry = json.loads(meta.read_text())["entry"] if meta else None
        except FileNotFoundError:
            entry = None
        if entry is None:
            raise NotFound(f"playbook content {digest[:12]} is not stored (any more)")
        return ResolvedPlaybook(name or digest[:12], digest, self.root / digest / "tree", entry)

    def put(self, content: Path, digest: str, entry: str) -> None:
        """Move `content` (holding `tree/`, on our file system) in under `digest`; hold the lock."""
        final = self.root / digest
        if final.exists():
            return  # the same digest is the same content: keep the first
        (content / "meta.json").write_text(json.dumps({"entry": entry}))
        os.rename(content, final)  # atomic: nobody ever sees a half-filled digest

    def snapshot(self, directory: Path, entry: str, ignore: frozenset[str]) -> str:
        """Store a copy of an operator's playbook directory (minus `ignore`d names); its digest."""
        digest = tree_digest(directory, entry, ignore)
        if (self.root / digest).exists():
            return digest
        stage = self.new_stage()
        try:
            shutil.copytree(
                directory,
                stage / "content" / "tree",
                ignore=lambda at, names: ignore & set(names) if Path(at) == directory else set(),
            )
            with self.locked():
                self.put(stage / "content", digest, entry)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return digest

    def new_stage(self) -> Path:
        """A fresh private directory on the store's file system (the caller removes it)."""
        incoming = self.root / ".incoming"
        incoming.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="stage-", dir=incoming))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access across threads and processes sharing the data dir."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.root / "index.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_index(self) -> dict[str, dict[str, Any]]:
        """Uploaded names → their records."""
        try:
            index: dict[str, dict[str, Any]] = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return {}
        return index

    def write_index(self, index: dict[str, dict[str, Any]]) -> None:
        """Replace the index atomically (written aside, flushed, renamed over); hold the lock."""
        temporary = self.root / "index.json.new"
        with temporary.open("w") as handle:
            json.dump(index, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.root / "index.json")

    def prune(self, keep: set[str]) -> list[str]:
        """Remove stored content whose digest is not in `keep`; hold the lock."""
        if not self.root.is_dir():
            return []
        removed = [p.name for p in self.root.iterdir() if DIGEST_RE.match(p.name)]
        removed = [digest for digest in removed if digest not in keep]
        for digest in removed:
            shutil.rmtree(self.root / digest)
        return removed
