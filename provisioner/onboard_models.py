"""Records of existing-host onboarding: the request as stored, and what a caller asks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class OnboardState(StrEnum):
    """Lifecycle of an onboarding request (CONTRACT §6)."""

    CREATED = "created"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether no further transition can happen."""
        return self not in LIVE_ONBOARD_STATES


LIVE_ONBOARD_STATES = frozenset(
    {OnboardState.CREATED, OnboardState.AWAITING_APPROVAL, OnboardState.RUNNING}
)


class OnboardStage(StrEnum):
    """Where the runner is inside a live state; compare-and-set on it claims the next piece."""

    NEW = "new"  # created, nobody has fetched the host key yet
    HOST_KEY = "host_key"  # fetching the host key
    WAITING = "waiting"  # the presented key waits for an operator
    APPROVED = "approved"  # an operator approved; the login has not started
    LOGIN = "login"  # logging in with the password, creating the user, verifying
    DONE = "done"


@dataclass(frozen=True)
class OnboardRequest:
    """One request to onboard an existing host, as stored (never with the password)."""

    id: str
    requested_by: str
    host: str
    port: int
    login_user: str
    desired_user: str
    sudo: bool
    generated_key: bool
    public_key: str
    key_fingerprint: str
    state: OnboardState
    stage: OnboardStage
    holder: str  # the process that holds the password in memory
    lease_until: datetime
    created_at: datetime
    updated_at: datetime
    presented_key: str | None = None
    presented_fingerprint: str | None = None
    pinned_fingerprint: str | None = None  # what ops had pinned when a different key showed
    approved_key: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    private_key_path: str | None = None


@dataclass(frozen=True)
class OnboardInput:
    """What a caller asks for; the password is kept out of every repr."""

    host: str
    login_user: str
    login_password: str = field(repr=False)
    desired_user: str
    port: int = 22
    generate_key: bool = False
    public_key: str | None = None
    sudo: bool = False


@dataclass(frozen=True)
class OnboardLogLine:
    """One line of a request's log (redacted before it is stored)."""

    id: int
    at: datetime
    line: str


@dataclass(frozen=True)
class PinnedHostKey:
    """A host key ops approved for an existing host (host, port)."""

    host: str
    port: int
    public_key: str
    fingerprint: str
    approved_by: str
    approved_at: datetime
