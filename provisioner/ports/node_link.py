"""The node link seam: one node reached over SSH, its host key verified."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    """What a command on a guest returned; `exit_status` None means the outcome is unknown."""

    exit_status: int | None
    stdout: str
    stderr: str


@dataclass(frozen=True)
class HostKeySighting:
    """A host key a node presented that is not the pinned one."""

    node: str
    fingerprint: str
    public_key: str
    pinned_fingerprint: str | None


# Called by a node link before it refuses a node whose host key is unknown or changed.
HostKeyReporter = Callable[[HostKeySighting], Awaitable[None]]


class NodeLink(Protocol):
    """One node reached over SSH, its host key verified on every connection."""

    async def libvirt_socket(self) -> str:
        """A local UNIX socket that reaches the node's libvirt socket (connects if needed)."""
        ...

    async def run_on_guest(
        self, address: str, user: str, host_key: str, argv: Sequence[str], *, timeout: float
    ) -> CommandResult:
        """Run `argv` on a guest reached through the node, the guest's host key pinned."""
        ...

    async def check(self) -> None:
        """Raise unless the node accepts us (NodeUntrusted, NodeUnavailable)."""
        ...

    def guest_tunnel(self, address: str) -> AbstractAsyncContextManager[int]:
        """A port on 127.0.0.1 that reaches the guest's sshd through the node, while open."""
        ...

    async def close(self) -> None:
        """Close the connection and its forwarded socket."""
        ...
