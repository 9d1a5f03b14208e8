"""Users' SSH public keys: validated, fingerprinted, and kept for their workspaces."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from provisioner.audit import record
from provisioner.errors import InvalidInput, NotFound
from provisioner.models import Actor, SshKey
from provisioner.ports import AuditRows, Database, SshKeyRows

Clock = Callable[[], datetime]
# How many length-prefixed fields follow the type name in each key type's blob (RFC 4253,
# RFC 5656, RFC 8709, OpenSSH PROTOCOL.u2f), and a fixed field size where there is one.
KEY_FIELDS: dict[str, tuple[int, int | None]] = {
    "ssh-ed25519": (1, 32),
    "ssh-rsa": (2, None),
    "ecdsa-sha2-nistp256": (2, None),
    "ecdsa-sha2-nistp384": (2, None),
    "ecdsa-sha2-nistp521": (2, None),
    "sk-ssh-ed25519@openssh.com": (2, 32),
    "sk-ecdsa-sha2-nistp256@openssh.com": (3, None),
}
KEY_TYPES = frozenset(KEY_FIELDS)
MAX_KEY_CHARS = 16384


class KeyTx(SshKeyRows, AuditRows, Protocol):
    """What key use cases touch: SSH key rows and the audit trail."""


def parse_public_key(text: str) -> tuple[str, str]:
    """The normalised key line ('type base64 [comment]') and its SHA256 fingerprint."""
    if "PRIVATE KEY" in text:
        # Never echoed, never stored: the caller only learns what to paste instead.
        raise InvalidInput(
            "that is a private key: it was not stored; never paste it anywhere, and replace it "
            "if it was shared. Paste the public key instead (the .pub file, ssh-ed25519 AAAA…)",
            code="private_key_refused",
        )
    parts = text.strip().split(maxsplit=2)
    if len(text) > MAX_KEY_CHARS or len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidInput(
            "that is not an SSH public key; paste one line such as the content of "
            "~/.ssh/id_ed25519.pub (ssh-ed25519 AAAA… you@host)"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
        fields = _wire_strings(blob)
        inner_type = fields[0].decode()
    except (binascii.Error, ValueError, IndexError, UnicodeDecodeError):
        raise InvalidInput("the key's base64 part is damaged; copy the whole line again") from None
    if inner_type != parts[0]:
        raise InvalidInput(f"the key says {parts[0]} but holds a {inner_type} key")
    count, size = KEY_FIELDS[inner_type]
    if len(fields) != 1 + count or (size is not None and len(fields[1]) != size):
        raise InvalidInput("the key is incomplete; copy the whole line again")
    # A comment must stay on one line: it ends up in authorized_keys and cloud-init YAML.
    comment = " ".join(parts[2].split())[:200] if len(parts) > 2 else ""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    line = " ".join(p for p in (parts[0], parts[1], comment) if p)
    return line, f"SHA256:{digest}"


def pinned_fingerprint(pin: str | None) -> str | None:
    """The SHA256 fingerprint of a pinned host key (given as a key line or a fingerprint)."""
    if pin is None or pin.startswith("SHA256:"):
        return pin
    try:
        return parse_public_key(pin)[1]
    except InvalidInput:
        return None


def _wire_strings(blob: bytes) -> list[bytes]:
    """Split an SSH wire-format blob into its length-prefixed strings; ValueError if ragged."""
    fields, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ValueError("truncated length")
        (length,) = struct.unpack(">I", blob[at : at + 4])
        if at + 4 + length > len(blob):
            raise ValueError("truncated field")
        fields.append(blob[at + 4 : at + 4 + length])
        at += 4 + length
    return fields


class SshKeys:
    """Adding, listing and removing users' SSH keys."""

    def __init__(self, store: Database[KeyTx], clock: Clock) -> None:
        self._store, self._clock = store, clock

    async def add(self, actor: Actor, owner: str, text: str) -> tuple[SshKey, bool]:
        """Store a key for `owner`; the key and whether it is new."""
        line, fingerprint = parse_public_key(text)
        key = SshKey(owner, fingerprint, line, self._clock())
        async with self._store.transaction() as tx:
            added = await tx.add_ssh_key(key)
            if added:
                await record(tx, key.created_at, actor, "ssh_key.added", owner, reason=fingerprint)
        return key, added

    async def list(self, owner: str) -> list[SshKey]:
        """The owner's keys."""
        async with self._store.read() as tx:
            return await tx.ssh_keys(owner)

    async def remove(self, actor: Actor, owner: str, key_id: str) -> SshKey:
        """Remove the owner's key with this id (NotFound if they have none); the key removed."""
        async with self._store.transaction() as tx:
            key = next((k for k in await tx.ssh_keys(owner) if k.id == key_id), None)
            if key is None or not await tx.delete_ssh_key(owner, key.fingerprint):
                raise NotFound(f"no SSH key {key_id} for {owner}; GET /v1/keys lists them")
            await record(tx, self._clock(), actor, "ssh_key.removed", owner, reason=key.fingerprint)
        return key
