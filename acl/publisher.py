"""Publishing the generated policy: render it, diff it against the live one, push it safely.

The use case the CLI (`provisioner acl render|diff|push`) and the API call. It lives in acl,
not in the core, because the core never imports acl and rendering is acl's. Push checks the
text locally, then on the server when the backend can, then writes with If-Match; a policy
someone changed in between is never overwritten: the new diff comes back in PolicyChanged.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from acl.hujson import HuJSONError, loads
from acl.policy import PolicyConfig, RenderedPolicy, render
from acl.policy_checks import check_policy
from provisioner.audit import record
from provisioner.errors import ConfigError, Conflict, InvalidInput, ProvisionerError
from provisioner.models import LIVE_WORKSPACE_STATES, Actor
from provisioner.ports import AuditRows, Database, PolicyDocument, Tailnet, WorkspaceRows

TARGET = "tailnet-policy"
PAGE = 500


class PolicyOwners(Protocol):
    """Whose tags the policy must define."""

    async def policy_owners(self) -> list[str]:
        """The distinct owners of live workspaces (any state but deleted, failed or denied)."""
        ...


class StoreOwners:
    """PolicyOwners through the Store port's workspace listing, page by page."""

    def __init__(self, store: Database[WorkspaceRows]) -> None:
        self._store = store

    async def policy_owners(self) -> list[str]:
        """The distinct owners of live workspaces, sorted."""
        owners: set[str] = set()
        after: str | None = None
        while True:
            async with self._store.read() as tx:
                page = await tx.list_workspaces(owner=None, state=None, after=after, limit=PAGE)
            owners.update(w.owner for w in page if w.state in LIVE_WORKSPACE_STATES)
            if len(page) < PAGE:
                return sorted(owners)
            after = page[-1].id


class PolicyInvalid(InvalidInput):
    """The rendered policy fails our checks or the server's validation; nothing was written."""

    code = "policy_invalid"

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if problems[5:] else ""
        )
        super().__init__(f"the tailnet policy is not valid, nothing was pushed: {shown}")
        self.problems = problems


class PolicyChanged(Conflict):
    """Someone changed the live policy since we read it; `diff` is against the new one."""

    code = "policy_changed"

    def __init__(self, diff: str) -> None:
        super().__init__(
            "the tailnet policy changed while we pushed; nothing was overwritten. "
            "Review the new diff and push again"
        )
        self.diff = diff


@dataclass(frozen=True)
class PushResult:
    """What a push did: `changed` False when the live policy was already the rendered one."""

    changed: bool
    diff: str
    warnings: tuple[str, ...]
    etag: str | None


def defined_tags(text: str) -> set[str]:
    """The tags a policy's tagOwners defines ({} when the text is not a policy)."""
    try:
        owners = loads(text).get("tagOwners") if text.strip() else None
    except (HuJSONError, AttributeError):
        return set()
    return set(owners) if isinstance(owners, dict) else set()


def unified_diff(live: str, rendered: str) -> str:
    """A unified diff from the live policy to the rendered one ('' when they are the same)."""
    lines = difflib.unified_diff(
        live.splitlines(keepends=True),
        rendered.splitlines(keepends=True),
        fromfile="live",
        tofile="rendered",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class PolicyPublisher:
    """render, diff and push the tailnet policy; `tailnet` None means Tailscale is off."""

    def __init__(
        self,
        config: PolicyConfig,
        owners: PolicyOwners,
        store: Database[AuditRows],
        clock: Callable[[], datetime],
        *,
        tailnet: Tailnet | None = None,
        dialect: str = "tailscale",
        base_path: Path | None = None,
    ) -> None:
        self._config, self._owners, self._store, self._clock = config, owners, store, clock
        self.tailnet, self._base_path = tailnet, base_path
        self.dialect = tailnet.dialect if tailnet is not None else dialect

    async def render(self, live: PolicyDocument | None = None) -> RenderedPolicy:
        """The policy to push: merged into PROVISIONER_ACL_BASE, else into `live` when given."""
        base = await self._base()
        if base is None and live is not None and live.text.strip():
            base = live.text  # no file of the operator's: their live policy is the base
        owners = await self._owners.policy_owners()
        return render(self._config, owners, dialect=self.dialect, base=base)

    async def preview(self) -> RenderedPolicy:
        """The policy push would write; reads the live one only when it is the base."""
        if self._base_path is None and self.tailnet is not None:
            return await self.render(await self.tailnet.get_policy())
        return await self.render()

    async def diff(self) -> tuple[str, RenderedPolicy]:
        """The unified diff from the live policy to the rendered one, and the rendering."""
        live = await self._require_tailnet().get_policy()
        rendered = await self.render(live)
        return unified_diff(live.text, rendered.text), rendered

    async def push(self, actor: Actor) -> PushResult:
        """Check, validate, then write with If-Match; PolicyChanged with the new diff on 412."""
        try:
            result = await self._push()
        except ProvisionerError as error:
            outcome = "conflict" if isinstance(error, PolicyChanged) else "failed"
            await self._audit(actor, outcome, f"{error.code}: {error.message}")
            raise
        reason = f"{result.diff.count(chr(10))} diff lines, etag {result.etag}"
        await self._audit(actor, "ok" if result.changed else "unchanged", reason)
        return result

    async def _push(self) -> PushResult:
        tailnet = self._require_tailnet()
        live = await tailnet.get_policy()
        rendered = await self.render(live)
        diff = unified_diff(live.text, rendered.text)
        if not diff:
            return PushResult(False, "", rendered.warnings, live.etag)
        problems = check_policy(rendered.text, self.dialect)
        if not problems and tailnet.validates_policy:
            problems = await tailnet.validate_policy(rendered.text)
        if problems:
            raise PolicyInvalid(problems)
        try:
            stored = await tailnet.set_policy(rendered.text, if_match=live.etag)
        except Conflict as error:
            if error.code != "policy_changed":
                raise
            newer, _ = await self.diff()
            raise PolicyChanged(newer) from None
        return PushResult(True, diff, rendered.warnings, stored.etag)

    async def ensure_tags(self, tags: Sequence[str], actor: Actor) -> bool:
        """Push the policy if the live one lacks one of `tags` (a key minted with an undefined
        tag is refused); True when it pushed. A concurrent change gets a second try."""
        for attempt in (1, 2):
            live = await self._require_tailnet().get_policy()
            if set(tags) <= defined_tags(live.text):
                return False
            try:
                return (await self.push(actor)).changed
            except PolicyChanged:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _require_tailnet(self) -> Tailnet:
        if self.tailnet is None:
            raise ConfigError(
                "no tailnet is configured: set TAILSCALE_API_KEY (or TAILSCALE_OAUTH_CLIENT_ID "
                "and TAILSCALE_OAUTH_CLIENT_SECRET), or PROVISIONER_TAILNET=headscale with "
                "HEADSCALE_API_URL and HEADSCALE_API_KEY"
            )
        return self.tailnet

    async def _base(self) -> str | None:
        if self._base_path is None:
            return None
        try:
            # utf-8-sig: an editor's byte-order mark is not part of the policy.
            return await asyncio.to_thread(self._base_path.read_text, encoding="utf-8-sig")
        except OSError as error:
            raise ConfigError(
                f"PROVISIONER_ACL_BASE {self._base_path}: cannot read it ({error.strerror})"
            ) from None

    async def _audit(self, actor: Actor, outcome: str, reason: str) -> None:
        reason = reason[:500]
        async with self._store.transaction() as tx:
            await record(
                tx, self._clock(), actor, "acl.pushed", TARGET, reason=reason, outcome=outcome
            )
