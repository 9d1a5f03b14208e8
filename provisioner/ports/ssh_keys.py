"""The SSH key rows seam of the store."""

from __future__ import annotations

from typing import Protocol

from provisioner.models import SshKey


class SshKeyRows(Protocol):
    """Users' SSH public keys."""

    async def add_ssh_key(self, key: SshKey) -> bool:
        """Store a key; False if the owner already has it."""
        ...

    async def ssh_keys(self, owner: str) -> list[SshKey]:
        """The owner's SSH keys."""
        ...

    async def delete_ssh_key(self, owner: str, fingerprint: str) -> bool:
        """Remove one of the owner's keys; False if they had no such key."""
        ...
