"""Domain records of the provisioner: frozen dataclasses and string enums, stdlib only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class WorkspaceState(StrEnum):
    """Lifecycle of a workspace as users see it."""

    AWAITING_APPROVAL = "awaiting_approval"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPED = "stopped"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"
    DENIED = "denied"


LIVE_WORKSPACE_STATES = frozenset(
    {
        WorkspaceState.AWAITING_APPROVAL,
        WorkspaceState.PROVISIONING,
        WorkspaceState.RUNNING,
        WorkspaceState.STOPPED,
        WorkspaceState.DELETING,
    }
)


class OperationState(StrEnum):
    """State machine of a durable operation."""

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether no further transition can happen."""
        return self in TERMINAL_OPERATION_STATES


TERMINAL_OPERATION_STATES = frozenset(
    {OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED}
)


class OperationKind(StrEnum):
    """What an operation does to its workspace."""

    CREATE = "create"
    DELETE = "delete"
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    REBUILD = "rebuild"
    PLAYBOOK = "playbook"


class StepState(StrEnum):
    """Outcome of one recorded step of an operation."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class Role(StrEnum):
    """Roles a token or Slack user can hold."""

    ADMIN = "admin"
    OPERATOR = "operator"
    DEVELOPER = "developer"
    VIEWER = "viewer"


class ApprovalState(StrEnum):
    """Whether an operator has decided on a request."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"


class DomainState(StrEnum):
    """Power state of a libvirt domain, reduced to what the core acts on."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"
    OTHER = "other"


class NodeTrust(StrEnum):
    """Whether a node's SSH host key is one we trust."""

    TRUSTED = "trusted"
    PENDING = "pending"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class Actor:
    """Who asks for something: name for audit, owner scope for visibility (None sees all)."""

    name: str
    role: Role
    source: str
    owner_scope: str | None = None

    def sees(self, owner: str) -> bool:
        """Whether this actor may see a resource owned by `owner`."""
        return self.owner_scope is None or self.owner_scope == owner


SYSTEM_ACTOR = Actor(name="system", role=Role.ADMIN, source="system")


@dataclass(frozen=True)
class Plan:
    """Size and policy of a workspace."""

    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    ttl_hours: int = 72
    max_ttl_hours: int = 720
    requires_approval: bool = False


@dataclass(frozen=True)
class Quota:
    """What one owner may hold before further requests need an operator's approval (0: no limit)."""

    max_workspaces: int = 0
    max_vcpus: int = 0

    def exceeded_by(self, count: int, vcpus: int) -> str | None:
        """Why an owner holding `count` workspaces and `vcpus` would be over quota, or None."""
        if self.max_workspaces and count > self.max_workspaces:
            return f"over quota: {count} workspaces (quota {self.max_workspaces})"
        if self.max_vcpus and vcpus > self.max_vcpus:
            return f"over quota: {vcpus} vCPUs (quota {self.max_vcpus})"
        return None


@dataclass(frozen=True)
class Image:
    """A base image that workspaces boot from."""

    name: str
    base_volume: str
    os: str = "debian"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True)
class Capacity:
    """Resources a node offers, or a workspace takes."""

    vcpus: int
    memory_mib: int
    disk_gib: int

    def fits(self, need: Capacity) -> bool:
        """Whether `need` fits inside this capacity."""
        return (
            need.vcpus <= self.vcpus
            and need.memory_mib <= self.memory_mib
            and need.disk_gib <= self.disk_gib
        )

    def minus(self, used: Capacity) -> Capacity:
        """The capacity left after `used` is taken."""
        return Capacity(
            self.vcpus - used.vcpus,
            self.memory_mib - used.memory_mib,
            self.disk_gib - used.disk_gib,
        )


@dataclass(frozen=True)
class Node:
    """A provisioner node: a libvirt host, reached over SSH unless it is the test driver."""

    name: str
    libvirt_uri: str = "qemu:///system"
    ssh_host: str | None = None
    ssh_port: int = 2222
    ssh_user: str = "root"
    ssh_key: str | None = None
    host_key: str | None = None
    pool: str = "default"
    network: str = "default"
    capacity: Capacity = field(default_factory=lambda: Capacity(64, 262144, 4096))
    virt_type: str = "auto"
    trust: NodeTrust = NodeTrust.TRUSTED
    presented_fingerprint: str | None = None

    def __post_init__(self) -> None:
        # The test driver has one pool, `default-pool`; "default" can only mean that one.
        if self.simulated and self.pool == "default":
            object.__setattr__(self, "pool", "default-pool")

    @property
    def simulated(self) -> bool:
        """Whether this is libvirt's in-process test driver (no SSH, no real guests)."""
        return self.libvirt_uri.startswith("test:")


class TailnetReach(StrEnum):
    """How a workspace can be reached once it is ready."""

    TAILNET = "tailnet"  # its device joined and carries its tags
    NODE_ONLY = "node"  # the device never appeared (join optional): through its node only


@dataclass(frozen=True)
class TailscaleInfo:
    """How a workspace is reached on the tailnet; `hostname` is its MagicDNS name."""

    hostname: str | None = None
    ip: str | None = None
    tags: tuple[str, ...] = ()
    device_id: str | None = None
    ipv6: str | None = None
    key_id: str | None = None  # an auth key minted for the seed and not revoked yet
    key_created_at: datetime | None = None  # the tailnet's clock: older devices are not ours
    reach: TailnetReach | None = None


@dataclass(frozen=True)
class Workspace:
    """A developer's VM as the provisioner tracks it."""

    id: str
    name: str
    owner: str
    plan: str
    image: str
    node: str
    state: WorkspaceState
    domain_name: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    tailscale: TailscaleInfo = field(default_factory=TailscaleInfo)
    error: str | None = None
    address: str | None = None
    guest_host_key: str | None = None

    @property
    def disk_volume(self) -> str:
        """The workspace's qcow2 overlay in its node's pool."""
        return f"{self.domain_name}.qcow2"

    @property
    def seed_volume(self) -> str:
        """The workspace's cloud-init seed in its node's pool."""
        return f"{self.domain_name}-seed.iso"


@dataclass(frozen=True)
class Step:
    """One recorded step of an operation."""

    name: str
    state: StepState
    started_at: datetime
    finished_at: datetime | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Operation:
    """A durable unit of long work on one workspace."""

    id: str
    kind: OperationKind
    state: OperationState
    workspace_id: str
    requested_by: str
    created_at: datetime
    updated_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()
    error: str | None = None
    attempts: int = 0
    fence: int = 0
    cancel_requested: bool = False


@dataclass(frozen=True)
class OutputLine:
    """One line a step printed (ansible's output), redacted before it was stored."""

    id: int
    step: str
    at: datetime
    line: str


@dataclass(frozen=True)
class Claim:
    """A worker's lease on an operation; `fence` guards every write it makes."""

    operation: Operation
    worker: str
    fence: int


@dataclass(frozen=True)
class Approval:
    """A request waiting for, or having had, an operator's decision."""

    id: str
    operation_id: str
    requested_by: str
    state: ApprovalState
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ApiToken:
    """A stored API token (the secret itself is never kept, only its hash)."""

    id: str
    role: Role
    owner: str
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class AuditEvent:
    """Who did what to which target, when, with what outcome and why."""

    actor: str
    source: str
    action: str
    target: str
    outcome: str = "ok"
    reason: str | None = None
    operation_id: str | None = None
    at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True)
class ChatMessage:
    """A chat message that mirrors an operation or an approval; the chat edge keeps it in sync."""

    id: int
    subject_kind: str
    subject_id: str
    channel: str
    ts: str
    chat_user: str
    posted_steps: tuple[str, ...] = ()
    synced_at: datetime | None = None
    done: bool = False


@dataclass(frozen=True)
class SshKey:
    """A user's SSH public key, installed into their workspaces."""

    owner: str
    fingerprint: str
    public_key: str
    created_at: datetime

    @property
    def id(self) -> str:
        """A URL-safe name for the key: its SHA256 fingerprint in base64url."""
        digest = self.fingerprint.removeprefix("SHA256:")
        return "key_" + digest.replace("+", "-").replace("/", "_")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the cursor to the next one."""

    items: tuple[T, ...]
    next_cursor: str | None = None

    @classmethod
    def from_overfetch(cls, items: list[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
        """A page from `limit + 1` fetched items: the extra one only says there is more."""
        more = len(items) > limit
        kept = items[:limit]
        return cls(tuple(kept), cursor_of(kept[-1]) if more else None)
