"""The seed seam: cloud-init NoCloud seeds and the guest host keys they carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SeedSpec:
    """What a workspace's cloud-init seed says: who it is, who may log in, how it joins."""

    instance_id: str
    hostname: str
    user: str
    user_keys: tuple[str, ...]
    admin_user: str
    admin_key: str
    host_key_private: str
    host_key_public: str
    tailscale_auth_key: str | None = None
    tailscale_hostname: str | None = None


class SeedMaker(Protocol):
    """Builds cloud-init NoCloud seeds and the guest host keys they carry."""

    def host_keypair(self) -> tuple[str, str]:
        """A fresh ed25519 host key: (OpenSSH private key, OpenSSH public key line)."""
        ...

    def build(self, spec: SeedSpec) -> bytes:
        """The seed image (ISO 9660, volume label `cidata`) for `spec`."""
        ...
