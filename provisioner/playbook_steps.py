"""The step that runs Ansible playbooks in a workspace, through its node, its output kept.

Playbooks are resolved to content digests when the request is accepted, so a run always uses
what was validated then. A crash mid-run leaves an interrupted step: the next attempt runs the
playbooks again from the start (they are meant to be idempotent), never beside the first.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from provisioner.domain_steps import require_domain
from provisioner.errors import Cancelled, PlaybookFailed
from provisioner.ports import PlaybookRecap, PlaybookTarget
from provisioner.step_context import StepContext

STEP = "run_playbooks"
FLUSH_SECONDS = 0.5
FLUSH_LINES = 200
CANCEL_POLL_SECONDS = 1.0


class OutputBuffer:
    """Collects output lines and writes them in batches, so a chatty run costs few writes."""

    def __init__(self, ctx: StepContext) -> None:
        self._ctx, self._lines, self._flushed_at = ctx, list[str](), 0.0

    async def add(self, line: str) -> None:
        """Keep a line; write the batch when it is large or old enough."""
        self._lines.append(line)
        now = asyncio.get_running_loop().time()
        if len(self._lines) >= FLUSH_LINES or now - self._flushed_at >= FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        """Write what is kept."""
        lines, self._lines = self._lines, []
        self._flushed_at = asyncio.get_running_loop().time()
        if lines:
            await self._ctx.output(STEP, lines)


async def run_playbooks(ctx: StepContext) -> str:
    """Run the requested playbooks in order; fail on the first that fails."""
    await require_domain(ctx)
    requested: list[dict[str, Any]] = list(ctx.params.get("playbooks") or ())
    if not requested:
        return "skipped: no playbooks requested"
    summaries = []
    for entry in requested:
        recap = await _run_one(ctx, entry)
        summaries.append(f"{entry['name']}: {_counts(recap)}")
    return "; ".join(summaries)


async def _run_one(ctx: StepContext, entry: dict[str, Any]) -> PlaybookRecap:
    """Run one resolved playbook against the guest through a tunnel over the node link."""
    ws, name = ctx.workspace, entry["name"]
    if ctx.link is None or ctx.playbooks is None or not ws.address or not ws.guest_host_key:
        raise PlaybookFailed(
            f"playbook {name} cannot run: node {ws.node} is not reached over SSH, so neither "
            "is the workspace's guest"
        )
    resolved = ctx.playbooks.catalog.by_digest(entry["digest"])
    buffer = OutputBuffer(ctx)
    await buffer.add(f"== playbook {name} ({entry['digest'][:12]}) on {ws.name}")
    async with ctx.link.guest_tunnel(ws.address) as port:
        target = PlaybookTarget(
            address="127.0.0.1",
            port=port,
            user=ctx.login.user,
            host_key=ws.guest_host_key,
            private_key=ctx.playbooks.private_key,
        )
        run = ctx.playbooks.runner.run(
            resolved.directory,
            resolved.entry,
            target,
            extra_vars=entry.get("extra_vars") or {},
            timeout=ctx.playbooks.timeout,
            on_line=buffer.add,
        )
        try:
            recap = await _unless_cancelled(ctx, run)
        finally:
            await buffer.flush()
    if recap.exit_status is None:
        raise PlaybookFailed(
            f"playbook {name} was stopped after {ctx.playbooks.timeout:g} s "
            "(PROVISIONER_PLAYBOOK_TIMEOUT)"
        )
    if not recap.succeeded:
        raise PlaybookFailed(
            f"playbook {name} failed ({_counts(recap)}, exit status {recap.exit_status}); "
            "its output is in the operation log"
        )
    return recap


async def _unless_cancelled(ctx: StepContext, run: Any) -> PlaybookRecap:
    """Await the run; a cancel request stops it (the runner kills its process group)."""
    task: asyncio.Task[PlaybookRecap] = asyncio.ensure_future(run)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_SECONDS)
            if done:
                return task.result()
            if await ctx.cancel_requested():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise Cancelled("cancelled on request while a playbook ran")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _counts(recap: PlaybookRecap) -> str:
    """ansible's recap counts, as one short phrase."""
    return (
        f"ok={recap.ok} changed={recap.changed} failed={recap.failed} "
        f"unreachable={recap.unreachable}"
    )
