"""PlaybookRunner on ansible-playbook: a private work dir, pinned host keys, one process group.

Each run gets a fresh 0700 directory holding a link-free copy of the playbook, the one private
key it needs, a known_hosts with the pinned host keys, a generated inventory and extra vars. The
child sees none of our environment, settings or data dir. It runs in its own process group,
led by ansible_reaper.py, so a timeout or a cancel stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from provisioner.adapters.ansible_workdir import prepare_workdir
from provisioner.errors import ConfigError, PlaybookFailed
from provisioner.ports.playbooks import LineSink, PlaybookRecap, PlaybookTarget
from provisioner.redaction import LineRedactor
from provisioner.threads import to_thread_to_the_end

REAPER = Path(__file__).with_name("ansible_reaper.py")
# A longer line is passed on in pieces of this size rather than failing the run.
LINE_LIMIT = 1 << 20
# More than the reaper's own grace: it SIGKILLs stragglers itself before we SIGKILL it.
KILL_GRACE_SECONDS = 5.0
# ssh's control sockets live in the work dir: <root>/provisioner-ansible-XXXXXXXX/cp/<10>.<17>
# must stay under the 108 bytes of a UNIX socket path.
MAX_WORK_ROOT_LENGTH = 40
RECAP_RE = re.compile(
    r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)"
)


class AnsiblePlaybookRunner:
    """Runs ansible-playbook (the path given) as its own process group in a private work dir."""

    def __init__(
        self,
        ansible_playbook: Path = Path("/usr/bin/ansible-playbook"),
        *,
        work_root: Path | None = None,
        search_path: str = "/usr/local/bin:/usr/bin:/bin",
    ) -> None:
        root = work_root or Path(tempfile.gettempdir())
        if len(str(root)) > MAX_WORK_ROOT_LENGTH:
            raise ConfigError(
                f"the playbook work root {root} is longer than {MAX_WORK_ROOT_LENGTH} characters; "
                "ssh's control sockets would not fit"
            )
        self._ansible_playbook = ansible_playbook
        self._work_root = work_root
        self._search_path = search_path

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
        work = Path(tempfile.mkdtemp(prefix="provisioner-ansible-", dir=self._work_root))
        try:
            prepared = await to_thread_to_the_end(
                prepare_workdir, work, playbook_dir, entry, target, extra_vars
            )
            command = [
                sys.executable, "-I", "-S", str(REAPER), str(self._ansible_playbook),
                "-i", str(prepared.inventory), "-e", f"@{prepared.extra_vars}",
                str(prepared.entry),
            ]  # fmt: skip
            env = {**prepared.environment, "PATH": self._search_path}
            return await _execute(command, env, work, timeout, on_line)
        finally:
            await to_thread_to_the_end(shutil.rmtree, work, ignore_errors=True)


async def _execute(
    command: list[str], env: dict[str, str], work: Path, timeout: float, on_line: LineSink
) -> PlaybookRecap:
    """Start the group, stream its output, and stop it on timeout, cancel or a failing sink."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=work,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=LINE_LIMIT,
        )
    except OSError as error:
        raise PlaybookFailed(f"cannot start ansible-playbook: {error.strerror}") from None
    output = _Output(on_line)
    try:
        async with asyncio.timeout(timeout):
            assert process.stdout is not None
            await output.pump(process.stdout)
            status = await process.wait()
    except TimeoutError:
        await asyncio.shield(_stop_group(process))
        await on_line(f"playbook timed out after {timeout:g} s; its processes were stopped")
        return output.recap(None)
    except BaseException:
        await asyncio.shield(_stop_group(process))
        raise
    return output.recap(status)


async def _stop_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it if its leader is not gone after the grace."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), KILL_GRACE_SECONDS)
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, sig)


class _Output:
    """Passes each output line on, redacted, and remembers the host's PLAY RECAP counts."""

    def __init__(self, on_line: Callable[[str], Awaitable[None]]) -> None:
        self._on_line = on_line
        self._redact = LineRedactor()
        self._counts = (0, 0, 0, 0, 0)

    async def pump(self, stream: asyncio.StreamReader) -> None:
        """Read `stream` to its end, line by line (an overlong line in pieces)."""
        while True:
            try:
                raw = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:
                if end.partial:
                    await self._emit(end.partial)
                return
            except asyncio.LimitOverrunError as over:
                raw = await stream.readexactly(over.consumed)
            await self._emit(raw)

    async def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if found := RECAP_RE.match(line):
            ok, changed, unreachable, failed, skipped = (int(n) for n in found.groups())
            self._counts = (ok, changed, failed, unreachable, skipped)
        await self._on_line(self._redact(line))

    def recap(self, exit_status: int | None) -> PlaybookRecap:
        """The counts seen, with how the run ended (None: killed)."""
        ok, changed, failed, unreachable, skipped = self._counts
        return PlaybookRecap(ok, changed, failed, unreachable, skipped, exit_status)
