"""The hypervisor seam: one node's libvirt, domains and storage volumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provisioner.models import DomainState, Image


@dataclass(frozen=True)
class DomainSpec:
    """Everything a hypervisor needs to define a workspace's domain."""

    name: str
    workspace_id: str
    owner: str
    vcpus: int
    memory_mib: int
    image: Image
    disk_volume: str
    seed_volume: str
    network: str


@dataclass(frozen=True)
class VolumeInfo:
    """A volume in a node's storage pool."""

    name: str
    path: str
    capacity_bytes: int


@dataclass(frozen=True)
class PoolSpace:
    """How much room a node's storage pool has."""

    capacity_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class DomainInfo:
    """A domain as the hypervisor reports it; `workspace_id` is None if it is not ours."""

    name: str
    state: DomainState
    workspace_id: str | None


class Hypervisor(Protocol):
    """One node's libvirt, every call idempotent where the name says so."""

    async def lookup(self, name: str) -> DomainInfo | None:
        """The domain called `name`, or None."""
        ...

    async def define(self, spec: DomainSpec) -> None:
        """Define the domain; fails if the name is taken."""
        ...

    async def start(self, name: str) -> None:
        """Power the domain on."""
        ...

    async def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI)."""
        ...

    async def destroy(self, name: str) -> None:
        """Power the domain off at once."""
        ...

    async def undefine(self, name: str) -> None:
        """Remove the domain's definition."""
        ...

    async def list_ours(self) -> Sequence[DomainInfo]:
        """Every domain carrying our metadata; raises if the listing is incomplete."""
        ...

    async def addresses(self, name: str) -> Sequence[str]:
        """The domain's IPv4 addresses, from DHCP leases or else the guest agent."""
        ...

    async def volume(self, name: str) -> VolumeInfo | None:
        """The volume called `name` in the node's pool, or None."""
        ...

    async def volumes(self) -> Sequence[str]:
        """The names of every volume in the node's pool."""
        ...

    async def create_overlay(self, name: str, base: str, size_gib: int) -> None:
        """A qcow2 volume of `size_gib` backed by the volume `base` (copy-on-write, no copy)."""
        ...

    async def upload_volume(self, name: str, source: bytes | Path) -> None:
        """A new volume holding `source`; it only appears once the upload is complete."""
        ...

    async def download_volume(self, name: str, limit: int) -> bytes:
        """The contents of the volume called `name` (at most `limit` bytes, else InvalidInput)."""
        ...

    async def delete_volume(self, name: str) -> None:
        """Delete the volume called `name`."""
        ...

    async def check(self) -> PoolSpace:
        """Raise NodeUnavailable unless the node and its pool answer; the pool's room."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
