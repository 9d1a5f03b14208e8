"""The tailnet seam: auth keys, devices and the policy file (Tailscale API v2 or Headscale)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class AuthKey:
    """A freshly minted auth key; `secret` is shown once and never logged (repr hides it)."""

    id: str
    secret: str = field(repr=False)
    created: datetime
    expires: datetime | None
    tags: tuple[str, ...]


@dataclass(frozen=True)
class TailnetDevice:
    """A device as the tailnet knows it, in one shape for both backends."""

    id: str  # Tailscale's nodeId, Headscale's node id: what delete and set-tags take
    hostname: str  # the machine's own hostname
    name: str  # the MagicDNS name (a FQDN where the backend knows the tailnet's domain)
    addresses: tuple[str, ...]  # IPv4 first
    tags: tuple[str, ...]
    created: datetime | None
    user: str | None = None
    key_expiry_disabled: bool = False


@dataclass(frozen=True)
class PolicyDocument:
    """The tailnet policy file as stored: its text (HuJSON) and the version tag to write against."""

    text: str
    etag: str | None  # None: the backend has no ETag; writes compare the text instead


class Tailnet(Protocol):
    """One tailnet's control API; every failure is one of provisioner.errors."""

    dialect: str  # "tailscale" or "headscale": which policy dialect it speaks
    validates_policy: bool  # whether validate_policy asks the server, not only our own checks

    async def create_auth_key(
        self, *, tags: Sequence[str], expiry_seconds: int, description: str
    ) -> AuthKey:
        """A single-use, pre-authorised, non-ephemeral key whose devices join with `tags`."""
        ...

    async def revoke_auth_key(self, key_id: str) -> None:
        """Revoke the key; a key that is already gone counts as revoked."""
        ...

    async def devices(
        self, *, hostname: str | None = None, tag: str | None = None
    ) -> list[TailnetDevice]:
        """Devices, filtered by exact hostname and/or carrying `tag` (filtered here too)."""
        ...

    async def set_device_tags(self, device_id: str, tags: Sequence[str]) -> None:
        """Replace the device's tags."""
        ...

    async def disable_key_expiry(self, device_id: str) -> None:
        """Keep the device on the tailnet past its node key's default expiry."""
        ...

    async def delete_device(self, device_id: str) -> None:
        """Remove the device; a device that is already gone counts as removed."""
        ...

    async def get_policy(self) -> PolicyDocument:
        """The policy file as stored now."""
        ...

    async def validate_policy(self, text: str) -> list[str]:
        """Problems the server finds in `text` (its tests included); [] when it passes."""
        ...

    async def set_policy(self, text: str, *, if_match: str | None) -> PolicyDocument:
        """Write the policy unless it changed since `if_match` (Conflict code policy_changed)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class TagPolicy(Protocol):
    """Keeps the tailnet policy defining every tag a key is about to carry."""

    async def ensure_tags(self, tags: Sequence[str]) -> None:
        """Push the generated policy if the live one lacks one of `tags` (keys would be refused)."""
        ...
