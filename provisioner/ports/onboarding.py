"""The existing-host onboarding seam: the SSH work the core asks for, and the rows it keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from provisioner.onboard_models import (
    OnboardLogLine,
    OnboardRequest,
    OnboardStage,
    OnboardState,
    PinnedHostKey,
)


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 key pair: OpenSSH private key text (never in a repr) and public key line."""

    private: str = field(repr=False)
    public: str


@dataclass(frozen=True)
class PasswordLogin:
    """How to log in once with a one-time password, the host key pinned."""

    host: str
    port: int
    host_key: str  # the pinned public key line
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Account:
    """The account to make on the host and the key lines to authorise for it."""

    name: str
    keys: tuple[str, ...]
    sudo: bool


class HostOnboarder(Protocol):
    """SSH to an existing host: its host key, a password login that sets up an account, a check."""

    def new_keypair(self, comment: str) -> KeyPair:
        """A fresh Ed25519 key pair."""
        ...

    async def host_key(self, host: str, port: int) -> str:
        """The public host key line the host presents (no login); TimedOut, OnboardingFailed."""
        ...

    async def create_account(self, login: PasswordLogin, account: Account) -> Sequence[str]:
        """Log in with the password, make the account, install its keys; the lines to log."""
        ...

    async def verify_key_login(
        self,
        host: str,
        port: int,
        host_key: str,
        user: str,
        private_key: str,
        *,
        expect: str,
        drop: str | None = None,
    ) -> Sequence[str]:
        """Log in fresh as `user` with the key; check `expect` is authorised, remove `drop`."""
        ...


class OnboardRows(Protocol):
    """The store queries onboarding needs (part of the Transaction port)."""

    async def insert_onboard(self, request: OnboardRequest) -> None:
        """Store a new onboarding request."""
        ...

    async def get_onboard(self, request_id: str) -> OnboardRequest | None:
        """The request with this id."""
        ...

    async def list_onboard(
        self,
        *,
        requested_by: str | None,
        state: OnboardState | None,
        after: str | None,
        limit: int,
    ) -> list[OnboardRequest]:
        """Requests in id (creation) order, after the id `after`."""
        ...

    async def onboard_created_since(
        self, since: datetime, *, requested_by: str | None = None, host: str | None = None
    ) -> list[datetime]:
        """When each request of this requester (or to this host) since `since` was made."""
        ...

    async def update_onboard(
        self,
        request_id: str,
        *,
        expect: frozenset[OnboardState],
        at_stage: frozenset[OnboardStage] | None = None,
        fingerprint: str | None = None,
        lapsed_before: datetime | None = None,
        **changes: Any,
    ) -> OnboardRequest | None:
        """Change a request if state, stage, fingerprint (and a lapsed lease) match; else None."""
        ...

    async def held_onboard(self, holder: str) -> list[OnboardRequest]:
        """The live requests whose password `holder` has in memory."""
        ...

    async def renew_onboard_leases(self, holder: str, until: datetime) -> None:
        """Extend the lease of every live request `holder` holds."""
        ...

    async def lapsed_onboard(self, now: datetime, limit: int) -> list[OnboardRequest]:
        """Live requests whose holder stopped renewing (it crashed or stopped)."""
        ...

    async def append_onboard_log(self, request_id: str, lines: Sequence[str], at: datetime) -> None:
        """Append (already redacted) lines to a request's log."""
        ...

    async def onboard_log(self, request_id: str, *, after: int, limit: int) -> list[OnboardLogLine]:
        """A request's log lines after the id `after`, oldest first."""
        ...

    async def onboard_pin(self, host: str, port: int) -> PinnedHostKey | None:
        """The host key ops approved for this host, if any."""
        ...

    async def set_onboard_pin(self, pin: PinnedHostKey) -> None:
        """Pin (or re-pin) the host key of a host."""
        ...
