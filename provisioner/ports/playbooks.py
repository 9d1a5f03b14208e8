"""The playbook seam: ansible-playbook run against one guest through its node."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class PlaybookTarget:
    """One host to run against, reached through an SSH jump host, both host keys pinned."""

    address: str
    port: int
    user: str
    host_key: str  # the target's public host key line
    private_key: Path  # the key we log in with (on the target and on the jump host)
    jump_host: str | None = None  # None: the target is reached directly
    jump_port: int = 22
    jump_user: str = "root"
    jump_host_key: str | None = None  # the jump host's public host key line
    jump_private_key: Path | None = None  # None: `private_key` logs in to the jump host too


@dataclass(frozen=True)
class PlaybookRecap:
    """ansible's PLAY RECAP for the one host, and how the run ended."""

    ok: int
    changed: int
    failed: int
    unreachable: int
    skipped: int
    exit_status: int | None  # None: killed (timeout or cancel)

    @property
    def succeeded(self) -> bool:
        """Whether the run ended cleanly with nothing failed or unreachable."""
        return self.exit_status == 0 and self.failed == 0 and self.unreachable == 0


# Receives each line of output as it is produced (already redacted).
LineSink = Callable[[str], Awaitable[None]]


class PlaybookRunner(Protocol):
    """Runs one playbook from a directory against one target, off the event loop."""

    async def run(
        self,
        playbook_dir: Path,
        entry: str,
        target: PlaybookTarget,
        *,
        extra_vars: Mapping[str, Any],
        timeout: float,
        on_line: LineSink,
    ) -> PlaybookRecap:
        """Run `entry` of `playbook_dir`; cancelling the awaiting task kills the process group."""
        ...
