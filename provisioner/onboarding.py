"""Existing-host onboarding use cases: request, read, approve or deny the host key, cancel.

A request's one-time password lives only in the memory of the process that took the request
(the *holder*, see PasswordVault); the store keeps everything else. The holder's runner
(provisioner.onboard_runner) does the SSH work; a holder that stops takes the password with it,
so its requests end as failed ("interrupted"), never resumed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from provisioner import onboard_rules
from provisioner.audit import record
from provisioner.errors import Conflict, InvalidInput, NotFound, PermissionDenied, RateLimited
from provisioner.ids import new_id
from provisioner.keys import parse_public_key
from provisioner.models import Actor, Page
from provisioner.onboard_models import (
    LIVE_ONBOARD_STATES,
    OnboardInput,
    OnboardLogLine,
    OnboardRequest,
    OnboardStage,
    OnboardState,
    PinnedHostKey,
)
from provisioner.ports import Store, Transaction
from provisioner.ports.onboarding import HostOnboarder
from provisioner.redaction import SECRETS, redact

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
Listener = Callable[[OnboardRequest], Awaitable[None]]
S = OnboardState
MAX_PAGE = 500
FINGERPRINT_CHARS = 43  # SHA256 in unpadded base64


class PasswordVault:
    """One-time passwords by request id, in this process only; each is redacted while held."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._stored: set[str] = set()  # requests whose row is committed

    def hold(self, request_id: str, password: str) -> None:
        """Keep the password for the request (and redact it everywhere meanwhile)."""
        SECRETS.add(password)
        self._held[request_id] = password

    def stored(self, request_id: str) -> None:
        """Note that the request's row is committed: from now on its row says if it ended."""
        if request_id in self._held:
            self._stored.add(request_id)

    def peek(self, request_id: str) -> str | None:
        """The request's password, if this process holds it."""
        return self._held.get(request_id)

    def drop(self, request_id: str) -> None:
        """Forget the password: it was used, or can no longer be."""
        password = self._held.pop(request_id, None)
        self._stored.discard(request_id)
        if password is not None:
            self.forget_unheld(password)

    def forget_unheld(self, password: str) -> None:
        """Stop redacting `password` unless another request here still holds it."""
        if password not in self._held.values():
            SECRETS.discard(password)

    def ids(self) -> set[str]:
        """The requests whose password is held here."""
        return set(self._held)

    def stored_ids(self) -> set[str]:
        """The requests held here whose row is committed."""
        return set(self._stored)


class Transitions:
    """Compare-and-set moves of a request, each audited, logged and announced."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """Call `listener` after each change made in this process (the chat mirrors them)."""
        self._listeners.append(listener)

    async def move(
        self,
        request_id: str,
        actor: Actor,
        action: str,
        why: str,
        *,
        expect: frozenset[OnboardState],
        at_stage: frozenset[OnboardStage] | None = None,
        fingerprint: str | None = None,
        lapsed_before: datetime | None = None,
        **changes: Any,
    ) -> OnboardRequest | None:
        """Apply `changes` if the request is as expected; the request after, or None."""
        now, why = self.clock(), redact(why)
        async with self.store.transaction() as tx:
            moved = await tx.update_onboard(
                request_id,
                expect=expect,
                at_stage=at_stage,
                fingerprint=fingerprint,
                lapsed_before=lapsed_before,
                updated_at=now,
                **changes,
            )
            if moved is None:
                return None
            await record(tx, now, actor, f"onboard.{action}", request_id, reason=why)
            await tx.append_onboard_log(request_id, [f"{action}: {why}"], now)
        log.info("onboarding %s %s: %s", request_id, action, why)
        await self.announce(moved)
        return moved

    async def claim(
        self, request_id: str, state: OnboardState, stage: OnboardStage, to: OnboardStage
    ) -> OnboardRequest | None:
        """Move to the next stage inside a state (no state change, so no audit); None if taken."""
        async with self.store.transaction() as tx:
            return await tx.update_onboard(
                request_id, expect=frozenset({state}), at_stage=frozenset({stage}), stage=to
            )

    async def note(self, request_id: str, lines: list[str]) -> None:
        """Append lines (redacted here) to the request's log."""
        async with self.store.transaction() as tx:
            await tx.append_onboard_log(request_id, [redact(line) for line in lines], self.clock())

    async def announce(self, request: OnboardRequest) -> None:
        """Tell listeners; a failing listener is logged, never the caller's problem."""
        for listener in self._listeners:
            try:
                await listener(request)
            except Exception:
                log.exception("onboarding listener failed on %s", request.id)


class Onboarding:
    """Onboarding requests as callers see them."""

    def __init__(
        self,
        store: Store,
        onboarder: HostOnboarder,
        clock: Clock,
        data_dir: Path,
        *,
        worker: str,
        lease_seconds: float = 30.0,
        rate_limit: int = 5,
        rate_window: timedelta = timedelta(minutes=10),
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._store, self._onboarder, self._clock = store, onboarder, clock
        self._keys_dir = data_dir / "onboard"
        self.worker, self.lease = worker, timedelta(seconds=lease_seconds)
        self._rate_limit, self._rate_window = rate_limit, rate_window
        self.vault, self.transitions, self.wake = PasswordVault(), Transitions(store, clock), wake

    async def request(self, actor: Actor, spec: OnboardInput) -> OnboardRequest:
        """Take a request: checked, rate-limited, stored; its password held in memory here."""
        request_id = new_id("onb")
        # Held (and masked) from the first moment: the runner may see the row before we return,
        # and even a failure's traceback must not carry the password.
        self.vault.hold(request_id, spec.login_password)
        try:
            request = await self._store_new(actor, request_id, onboard_rules.check(spec))
        except BaseException:
            self.vault.drop(request_id)
            raise
        self.vault.stored(request_id)
        self.wake()
        return request

    async def _store_new(
        self, actor: Actor, request_id: str, checked: onboard_rules.CheckedInput
    ) -> OnboardRequest:
        """Insert the request (and write a generated key) inside the rate-limit lock."""
        spec, now = checked.spec, self._clock()
        line, fingerprint, key_path = checked.public_key, checked.fingerprint, None
        private = None
        if line is None:
            pair = self._onboarder.new_keypair(f"{spec.desired_user}@{checked.host} ({request_id})")
            private, line = pair.private, pair.public
            fingerprint = parse_public_key(line)[1]
            key_path = self._keys_dir / request_id / "id_ed25519"
        assert fingerprint is not None
        request = OnboardRequest(
            id=request_id,
            requested_by=actor.name,
            host=checked.host,
            port=spec.port,
            login_user=spec.login_user,
            desired_user=spec.desired_user,
            sudo=bool(spec.sudo),
            generated_key=private is not None,
            public_key=line,
            key_fingerprint=fingerprint,
            state=S.CREATED,
            stage=OnboardStage.NEW,
            holder=self.worker,
            lease_until=now + self.lease,
            created_at=now,
            updated_at=now,
            private_key_path=str(key_path) if key_path else None,
        )
        where = f"{spec.login_user}@{checked.host}:{spec.port}"
        async with self._store.transaction() as tx:
            await tx.lock("onboard-rate")
            await self._check_rate(tx, now, actor.name, checked.host)
            await tx.insert_onboard(request)
            why = f"{spec.desired_user} on {where}, key {fingerprint}"
            await record(tx, now, actor, "onboard.created", request_id, reason=why)
            await tx.append_onboard_log(request_id, [f"created: {why}"], now)
            if private is not None and key_path is not None:
                _write_private(key_path, private)
        return request

    async def _check_rate(self, tx: Transaction, now: datetime, requester: str, host: str) -> None:
        """RateLimited when the requester or the host had too many requests in the window."""
        since = now - self._rate_window
        by_requester = await tx.onboard_created_since(since, requested_by=requester)
        by_host = await tx.onboard_created_since(since, host=host)
        for what, times in ((f"requester {requester}", by_requester), (f"host {host}", by_host)):
            if len(times) >= self._rate_limit:
                retry = times[-self._rate_limit] + self._rate_window - now
                seconds = max(1, math.ceil(retry.total_seconds()))
                raise RateLimited(
                    f"too many onboarding requests for {what}: at most {self._rate_limit} per "
                    f"{self._rate_window.total_seconds() / 60:g} minutes; retry in {seconds} s",
                    retry_after=seconds,
                )

    async def get(self, actor: Actor, request_id: str) -> OnboardRequest:
        """The request, if the actor may see it (NotFound otherwise)."""
        async with self._store.read() as tx:
            request = await tx.get_onboard(request_id)
        if request is None or not actor.sees(request.requested_by):
            raise NotFound(f"no onboarding request {request_id}")
        return request

    async def log(
        self, actor: Actor, request_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[OnboardLogLine]:
        """The request's log lines after the id `after`."""
        await self.get(actor, request_id)
        async with self._store.read() as tx:
            return await tx.onboard_log(request_id, after=after, limit=limit)

    async def list(
        self,
        actor: Actor,
        *,
        state: OnboardState | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[OnboardRequest]:
        """Requests the actor may see, oldest first; `cursor` is the last id already seen."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        async with self._store.read() as tx:
            items = await tx.list_onboard(
                requested_by=actor.owner_scope, state=state, after=cursor, limit=limit + 1
            )
        return Page.from_overfetch(items, limit, lambda request: request.id)

    async def approve(self, actor: Actor, request_id: str, fingerprint: str) -> OnboardRequest:
        """Trust the host key the request's host presents, if it is the one the operator checked."""
        request = await self._decidable(actor, request_id, fingerprint)
        now = self._clock()
        pin = PinnedHostKey(
            request.host, request.port, request.presented_key or "", fingerprint, actor.name, now
        )
        async with self._store.transaction() as tx:
            moved = await tx.update_onboard(
                request_id,
                expect=frozenset({S.AWAITING_APPROVAL}),
                at_stage=frozenset({OnboardStage.WAITING}),
                fingerprint=fingerprint,
                state=S.RUNNING,
                stage=OnboardStage.APPROVED,
                approved_key=request.presented_key,
                decided_by=actor.name,
                updated_at=now,
            )
            if moved is None:
                raise self._mismatch(request, fingerprint)
            await tx.lock("onboard-pin")
            await tx.set_onboard_pin(pin)
            why = f"host key {fingerprint} approved by {actor.name}"
            await record(tx, now, actor, "onboard.approved", request_id, reason=why)
            await tx.append_onboard_log(request_id, [f"approved: {why}"], now)
        await self.transitions.announce(moved)
        self.wake()
        return moved

    async def deny(
        self, actor: Actor, request_id: str, fingerprint: str, reason: str | None = None
    ) -> OnboardRequest:
        """Refuse the presented host key: the request fails and nothing is done on the host."""
        request = await self._decidable(actor, request_id, fingerprint)
        why = f"host key {fingerprint} refused by {actor.name}" + (f": {reason}" if reason else "")
        moved = await self.transitions.move(
            request_id,
            actor,
            "denied",
            why,
            expect=frozenset({S.AWAITING_APPROVAL}),
            at_stage=frozenset({OnboardStage.WAITING}),
            fingerprint=fingerprint,
            state=S.FAILED,
            stage=OnboardStage.DONE,
            decided_by=actor.name,
            reason=redact(why),
        )
        if moved is None:
            raise self._mismatch(request, fingerprint)
        self.wake()
        return moved

    async def cancel(self, actor: Actor, request_id: str) -> OnboardRequest:
        """Withdraw a request that has not started on the host yet."""
        await self.get(actor, request_id)
        why = f"cancelled by {actor.name}"
        moved = await self.transitions.move(
            request_id,
            actor,
            "cancelled",
            why,
            expect=frozenset({S.CREATED, S.AWAITING_APPROVAL}),
            state=S.CANCELLED,
            stage=OnboardStage.DONE,
            decided_by=actor.name,
            reason=why,
        )
        if moved is None:
            current = await self.get(actor, request_id)
            raise Conflict(
                f"onboarding request {request_id} is {current.state.value}; only a created or "
                "awaiting_approval request can be cancelled (a running one ends within its "
                "timeouts)",
                code="not_cancellable",
            )
        self.wake()
        return moved

    async def _decidable(self, actor: Actor, request_id: str, fingerprint: str) -> OnboardRequest:
        """The request, if `actor` may decide on its host key and the fingerprint is well formed."""
        request = await self.get(actor, request_id)
        if request.requested_by == actor.name:
            raise PermissionDenied("you may not approve or deny a host key of your own request")
        if not (
            isinstance(fingerprint, str)
            and fingerprint.startswith("SHA256:")
            and len(fingerprint) == len("SHA256:") + FINGERPRINT_CHARS
        ):
            raise InvalidInput('fingerprint must look like "SHA256:…"', field="fingerprint")
        return request

    def _mismatch(self, request: OnboardRequest, fingerprint: str) -> Conflict:
        """The refusal of a decision on a key the host does not (or no longer) present."""
        if request.state != S.AWAITING_APPROVAL:
            return Conflict(
                f"onboarding request {request.id} is {request.state.value}, not awaiting approval",
                code="not_awaiting_approval",
            )
        return Conflict(
            f"onboarding request {request.id}: the host presents "
            f"{request.presented_fingerprint}, not {fingerprint}; compare again",
            code="fingerprint_mismatch",
        )


def live(request: OnboardRequest) -> bool:
    """Whether the request can still change."""
    return request.state in LIVE_ONBOARD_STATES


def _write_private(path: Path, private: str) -> None:
    """Write a private key readable by us only (0600 in a 0700 directory), never briefly wider."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(private)
