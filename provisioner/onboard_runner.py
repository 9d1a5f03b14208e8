"""The onboarding runner: the SSH work of the requests whose password this process holds.

Only the holder can run a request (nobody else has its password), and each piece of work is
claimed by a compare-and-set on the request's stage, so no request runs twice. The holder renews
a lease on its requests; when a holder stops renewing (crash, kill), any process fails them as
interrupted: the password went with the process and is stored nowhere, so they cannot resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from provisioner.errors import ProvisionerError
from provisioner.keys import parse_public_key
from provisioner.models import SYSTEM_ACTOR
from provisioner.onboard_models import LIVE_ONBOARD_STATES, OnboardRequest, OnboardStage
from provisioner.onboard_models import OnboardState as S
from provisioner.onboarding import Onboarding
from provisioner.ports.onboarding import Account, HostOnboarder, PasswordLogin
from provisioner.redaction import redact

log = logging.getLogger(__name__)
LIVE = frozenset(LIVE_ONBOARD_STATES)
INTERRUPTED = (
    "interrupted: the provisioner process that held the one-time password stopped ({why}); "
    "the password is never stored, so the request cannot resume: submit a new request"
)


class OnboardRunner:
    """Fetches host keys, waits for approval, logs in once with the password, verifies."""

    def __init__(
        self,
        onboarding: Onboarding,
        onboarder: HostOnboarder,
        *,
        poll_seconds: float = 1.0,
        approval_timeout: timedelta = timedelta(hours=1),
        concurrency: int = 8,
    ) -> None:
        self._core, self._onboarder = onboarding, onboarder
        self._moves, self._vault = onboarding.transitions, onboarding.vault
        self._poll, self._approval_timeout = poll_seconds, approval_timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        onboarding.wake = self._wake.set

    def start(self) -> None:
        """Start the loop (in the running event loop)."""
        self._loop_task = asyncio.create_task(self._loop(), name="onboard-runner")

    async def stop(self) -> None:
        """Stop: work in flight is cut off and every request held here fails as interrupted."""
        tasks = [t for t in (self._loop_task, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._moves.store.read() as tx:
            held = await tx.held_onboard(self._core.worker)
        for request in held:
            await self._fail(request, INTERRUPTED.format(why="the server shut down"), LIVE)

    async def _loop(self) -> None:
        """Tick at every wake-up or poll period; a failing tick is logged and retried."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("onboarding runner tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()

    async def tick(self) -> None:
        """Renew our leases, fail lapsed requests, start the work that is due."""
        now, worker = self._moves.clock(), self._core.worker
        # Only requests committed before we read: one being taken right now is not ended.
        known = self._vault.stored_ids()
        async with self._moves.store.transaction() as tx:
            await tx.renew_onboard_leases(worker, now + self._core.lease)
            held = await tx.held_onboard(worker)
            lapsed = await tx.lapsed_onboard(now, 50)
        for request in lapsed:
            why = INTERRUPTED.format(why="it did not renew its lease")
            await self._fail(request, why, LIVE, lapsed_before=now)
        live = {request.id for request in held}
        for request_id in known - live - set(self._tasks):
            self._vault.drop(request_id)  # ended elsewhere: cancelled or denied
        for request in held:
            if request.id not in self._tasks:
                await self._due(request)

    async def _due(self, request: OnboardRequest) -> None:
        """Start or end what this request waits for."""
        if self._vault.peek(request.id) is None:
            await self._fail(request, INTERRUPTED.format(why="it restarted"), LIVE)
        elif request.state == S.CREATED and request.stage == OnboardStage.NEW:
            self._spawn(request, self._fetch(request))
        elif request.state == S.RUNNING and request.stage == OnboardStage.APPROVED:
            self._spawn(request, self._login(request))
        elif (
            request.state == S.AWAITING_APPROVAL
            and request.created_at + self._approval_timeout < self._moves.clock()
        ):
            minutes = self._approval_timeout.total_seconds() / 60
            why = f"the host key was not approved within {minutes:g} minutes; password discarded"
            await self._fail(request, why, frozenset({S.AWAITING_APPROVAL}))

    def _spawn(self, request: OnboardRequest, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task of this request, within the concurrency limit."""

        async def run() -> None:
            async with self._slots:
                await work

        task = asyncio.create_task(run(), name=f"onboard-{request.id}")
        self._tasks[request.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(request.id, None))

    async def _fetch(self, request: OnboardRequest) -> None:
        """Fetch the host key; pinned → log in, else wait for an operator."""
        claimed = await self._moves.claim(
            request.id, S.CREATED, OnboardStage.NEW, OnboardStage.HOST_KEY
        )
        if claimed is None:
            return
        where = f"{request.host}:{request.port}"
        try:
            line = await self._onboarder.host_key(request.host, request.port)
            fingerprint = parse_public_key(line)[1]
        except ProvisionerError as error:
            await self._fail(request, error.message, frozenset({S.CREATED}))
            return
        async with self._moves.store.read() as tx:
            pin = await tx.onboard_pin(request.host, request.port)
        expect, at = frozenset({S.CREATED}), frozenset({OnboardStage.HOST_KEY})
        if pin is not None and pin.fingerprint == fingerprint:
            why = f"host key {fingerprint} of {where} is pinned (approved by {pin.approved_by})"
            moved = await self._moves.move(
                request.id,
                SYSTEM_ACTOR,
                "running",
                why,
                expect=expect,
                at_stage=at,
                state=S.RUNNING,
                stage=OnboardStage.LOGIN,
                approved_key=pin.public_key,
                presented_key=line,
                presented_fingerprint=fingerprint,
            )
            if moved is not None:
                await self._login(moved)
            return
        why = f"{where} presents the unknown host key {fingerprint}; an operator must approve it"
        if pin is not None:
            why = (
                f"{where} presents host key {fingerprint}, not the pinned {pin.fingerprint} "
                f"(approved by {pin.approved_by}); an operator must approve the new key"
            )
        await self._moves.move(
            request.id,
            SYSTEM_ACTOR,
            "awaiting_approval",
            why,
            expect=expect,
            at_stage=at,
            state=S.AWAITING_APPROVAL,
            stage=OnboardStage.WAITING,
            pinned_fingerprint=pin.fingerprint if pin else None,
            presented_key=line,
            presented_fingerprint=fingerprint,
        )

    async def _login(self, request: OnboardRequest) -> None:
        """Log in once with the password, set up the account, then verify a key login."""
        if request.stage == OnboardStage.APPROVED:
            claimed = await self._moves.claim(
                request.id, S.RUNNING, OnboardStage.APPROVED, OnboardStage.LOGIN
            )
            if claimed is None:
                return
            request = claimed
        running = frozenset({S.RUNNING})
        password = self._vault.peek(request.id)
        if password is None or request.approved_key is None:
            await self._fail(request, INTERRUPTED.format(why="it restarted"), running)
            return
        try:
            keys, private, helper = self._keys(request)
            login = PasswordLogin(
                request.host, request.port, request.approved_key, request.login_user, password
            )
            account = Account(request.desired_user, keys, request.sudo)
            await self._moves.note(request.id, [f"logging in as {request.login_user}"])
            await self._moves.note(request.id, list(await self._create(login, account, request)))
            verified = await self._onboarder.verify_key_login(
                request.host,
                request.port,
                request.approved_key,
                request.desired_user,
                private,
                expect=request.public_key,
                drop=helper,
            )
            await self._moves.note(request.id, list(verified))
        except ProvisionerError as error:
            await self._fail(request, error.message, running)
            return
        why = f"{request.desired_user}@{request.host}:{request.port} logs in with key "
        why += request.key_fingerprint
        await self._moves.move(
            request.id,
            SYSTEM_ACTOR,
            "succeeded",
            why,
            expect=running,
            state=S.SUCCEEDED,
            stage=OnboardStage.DONE,
        )

    async def _create(
        self, login: PasswordLogin, account: Account, request: OnboardRequest
    ) -> list[str]:
        """The one use of the password; it is forgotten whatever happens."""
        try:
            return list(await self._onboarder.create_account(login, account))
        finally:
            self._vault.drop(request.id)

    def _keys(self, request: OnboardRequest) -> tuple[tuple[str, ...], str, str | None]:
        """Key lines to install, the private key to verify with, and a helper line to remove.

        With a given public key we hold no private half: a helper key of ours proves the
        account takes key logins, and goes once it has.
        """
        if request.generated_key and request.private_key_path:
            return (request.public_key,), Path(request.private_key_path).read_text(), None
        helper = self._onboarder.new_keypair(f"provisioner-onboard-check {request.id}")
        return (request.public_key, helper.public), helper.private, helper.public

    async def _fail(
        self,
        request: OnboardRequest,
        why: str,
        expect: frozenset[S],
        *,
        lapsed_before: datetime | None = None,
    ) -> None:
        """End the request as failed (if it still is as expected) and forget its password."""
        self._vault.drop(request.id)
        await self._moves.move(
            request.id,
            SYSTEM_ACTOR,
            "failed",
            why,
            expect=expect,
            state=S.FAILED,
            stage=OnboardStage.DONE,
            reason=redact(why),
            lapsed_before=lapsed_before,
        )
