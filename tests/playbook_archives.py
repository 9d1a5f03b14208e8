"""Playbook archives built in tests: a tar.gz of named members."""

from __future__ import annotations

import io
import tarfile


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A tar.gz holding `members` (regular files)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
