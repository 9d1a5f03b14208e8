"""Small protocols the core needs from the outside world; adapters implement them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from provisioner.models import (
    ApiToken,
    Approval,
    ApprovalState,
    AuditEvent,
    Capacity,
    ChatMessage,
    Claim,
    DomainState,
    Image,
    Node,
    Operation,
    OperationState,
    OutputLine,
    Plan,
    SshKey,
    Step,
    Workspace,
    WorkspaceState,
)
from provisioner.ports.onboarding import OnboardRows


@dataclass(frozen=True)
class DomainSpec:
    """Everything a hypervisor needs to define a workspace's domain."""

    name: str
    workspace_id: str
    owner: str
    vcpus: int
    memory_mib: int
    image: Image
    disk_volume: str
    seed_volume: str
    network: str


@dataclass(frozen=True)
class VolumeInfo:
    """A volume in a node's storage pool."""

    name: str
    path: str
    capacity_bytes: int


@dataclass(frozen=True)
class PoolSpace:
    """How much room a node's storage pool has."""

    capacity_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class DomainInfo:
    """A domain as the hypervisor reports it; `workspace_id` is None if it is not ours."""

    name: str
    state: DomainState
    workspace_id: str | None


class Hypervisor(Protocol):
    """One node's libvirt, every call idempotent where the name says so."""

    async def lookup(self, name: str) -> DomainInfo | None:
        """The domain called `name`, or None."""
        ...

    async def define(self, spec: DomainSpec) -> None:
        """Define the domain; fails if the name is taken."""
        ...

    async def start(self, name: str) -> None:
        """Power the domain on."""
        ...

    async def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI)."""
        ...

    async def destroy(self, name: str) -> None:
        """Power the domain off at once."""
        ...

    async def undefine(self, name: str) -> None:
        """Remove the domain's definition."""
        ...

    async def list_ours(self) -> Sequence[DomainInfo]:
        """Every domain carrying our metadata; raises if the listing is incomplete."""
        ...

    async def addresses(self, name: str) -> Sequence[str]:
        """The domain's IPv4 addresses, from DHCP leases or else the guest agent."""
        ...

    async def volume(self, name: str) -> VolumeInfo | None:
        """The volume called `name` in the node's pool, or None."""
        ...

    async def volumes(self) -> Sequence[str]:
        """The names of every volume in the node's pool."""
        ...

    async def create_overlay(self, name: str, base: str, size_gib: int) -> None:
        """A qcow2 volume of `size_gib` backed by the volume `base` (copy-on-write, no copy)."""
        ...

    async def upload_volume(self, name: str, source: bytes | Path) -> None:
        """A new volume holding `source`; it only appears once the upload is complete."""
        ...

    async def download_volume(self, name: str, limit: int) -> bytes:
        """The contents of the volume called `name` (at most `limit` bytes, else InvalidInput)."""
        ...

    async def delete_volume(self, name: str) -> None:
        """Delete the volume called `name`."""
        ...

    async def check(self) -> PoolSpace:
        """Raise NodeUnavailable unless the node and its pool answer; the pool's room."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


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


@dataclass(frozen=True)
class SeedSpec:
    """What a workspace's cloud-init seed says: who it is, who may log in, how it joins."""

    instance_id: str
    hostname: str
    user: str
    user_keys: tuple[str, ...]
    admin_user: str
    admin_key: str
    host_key_private: str
    host_key_public: str
    tailscale_auth_key: str | None = None
    tailscale_hostname: str | None = None


class SeedMaker(Protocol):
    """Builds cloud-init NoCloud seeds and the guest host keys they carry."""

    def host_keypair(self) -> tuple[str, str]:
        """A fresh ed25519 host key: (OpenSSH private key, OpenSSH public key line)."""
        ...

    def build(self, spec: SeedSpec) -> bytes:
        """The seed image (ISO 9660, volume label `cidata`) for `spec`."""
        ...


class Transaction(OnboardRows, Protocol):
    """Reads and writes inside one database transaction."""

    async def add_audit(self, event: AuditEvent) -> None:
        """Append an audit event."""
        ...

    async def list_audit(
        self,
        *,
        target: str | None,
        actor: str | None,
        after: int | None,
        limit: int,
        action: str | None = None,
    ) -> list[AuditEvent]:
        """Audit events, oldest first, after the id `after`."""
        ...

    async def lock(self, name: str) -> None:
        """Serialise transactions that take the same named lock until commit."""
        ...

    async def insert_workspace(self, workspace: Workspace, size: Capacity) -> None:
        """Store a new workspace; Conflict if a live one has the same name."""
        ...

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        """The workspace with this id."""
        ...

    async def list_workspaces(
        self,
        *,
        owner: str | None,
        state: WorkspaceState | None,
        after: str | None,
        limit: int,
        name: str | None = None,
    ) -> list[Workspace]:
        """Workspaces ordered by id, after the id `after`."""
        ...

    async def workspaces_on_node(self, node: str) -> list[Workspace]:
        """Workspaces on `node` that are not deleted or denied."""
        ...

    async def workspaces_on_tailnet(self) -> list[Workspace]:
        """Workspaces not deleted or denied that have, or are getting, a tailnet device."""
        ...

    async def update_workspace(
        self,
        workspace_id: str,
        *,
        expect: frozenset[WorkspaceState] | None = None,
        **changes: Any,
    ) -> Workspace | None:
        """Change a workspace if its state is in `expect`; None if not."""
        ...

    async def owner_usage(self, owner: str) -> tuple[int, Capacity]:
        """How many live workspaces an owner holds, and their resources."""
        ...

    async def usage_by_node(self) -> dict[str, Capacity]:
        """Resources taken by live workspaces, per node."""
        ...

    async def count_workspaces_by_state(self) -> dict[WorkspaceState, int]:
        """How many workspaces are in each state."""
        ...

    async def expired_workspaces(self, now: datetime, limit: int) -> list[Workspace]:
        """Running or stopped workspaces whose expiry has passed."""
        ...

    async def insert_operation(self, operation: Operation) -> None:
        """Store a new operation."""
        ...

    async def get_operation(self, operation_id: str) -> Operation | None:
        """The operation with its steps."""
        ...

    async def cancel_requested(self, operation_id: str) -> bool:
        """Whether a cancel was asked for (False for an unknown operation)."""
        ...

    async def active_operation(self, workspace_id: str) -> Operation | None:
        """The workspace's operation that has not ended, if any."""
        ...

    async def claim_operations(
        self,
        *,
        worker: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        exclude_nodes: frozenset[str] = frozenset(),
    ) -> list[Claim]:
        """Lease up to `limit` pending or abandoned operations, none on `exclude_nodes`."""
        ...

    async def renew_lease(self, claim: Claim, lease_until: datetime) -> bool:
        """Extend the lease; False if the claim is no longer ours."""
        ...

    async def finish_operation(
        self, claim: Claim, state: OperationState, error: str | None, now: datetime
    ) -> bool:
        """Move a claimed operation to a final state; False if the claim is stale."""
        ...

    async def set_operation_state(
        self,
        operation_id: str,
        state: OperationState,
        *,
        expect: frozenset[OperationState],
        now: datetime,
        error: str | None = None,
    ) -> bool:
        """Compare-and-set an operation's state outside any claim."""
        ...

    async def record_step(self, claim: Claim, step: Step) -> bool:
        """Insert or update the step with this name; False if the claim is stale."""
        ...

    async def append_output(
        self, operation_id: str, step: str, lines: Sequence[str], at: datetime
    ) -> None:
        """Append lines printed by `step` of the operation."""
        ...

    async def operation_output(
        self, operation_id: str, *, after: int, limit: int
    ) -> list[OutputLine]:
        """The operation's output lines after the id `after`, oldest first."""
        ...

    async def request_cancel(self, operation_id: str, now: datetime) -> bool:
        """Flag a live operation for cancellation; False if it already ended."""
        ...

    async def count_operations_by_state(self) -> dict[OperationState, int]:
        """How many operations are in each state."""
        ...

    async def insert_approval(self, approval: Approval) -> None:
        """Store a new pending approval."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None:
        """The approval with this id."""
        ...

    async def list_approvals(
        self, *, state: ApprovalState | None, after: str | None, limit: int
    ) -> list[Approval]:
        """Approvals in creation order, after the id `after`."""
        ...

    async def decide_approval(
        self, approval_id: str, state: ApprovalState, by: str, reason: str | None, now: datetime
    ) -> bool:
        """Record a decision if none was made yet; False if one already was."""
        ...

    async def withdraw_approvals(self, operation_id: str, now: datetime) -> None:
        """Close the pending approvals of an operation that no longer waits."""
        ...

    async def insert_token(self, token: ApiToken, secret_hash: str) -> None:
        """Store a token by the hash of its secret."""
        ...

    async def token_by_hash(self, secret_hash: str) -> ApiToken | None:
        """The token whose secret hashes to this value."""
        ...

    async def touch_token(self, token_id: str, now: datetime) -> None:
        """Record that the token was just used."""
        ...

    async def list_tokens(self, *, after: str | None, limit: int) -> list[ApiToken]:
        """Tokens in creation order, after the id `after`."""
        ...

    async def revoke_token(self, token_id: str, now: datetime) -> ApiToken | None:
        """Mark a token revoked (once); the token, or None if there is no such token."""
        ...

    async def count_tokens(self) -> int:
        """How many tokens exist, revoked ones included."""
        ...

    async def get_idempotent(self, scope: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """The request hash and answer stored for this key."""
        ...

    async def put_idempotent(
        self, scope: str, key: str, request_hash: str, answer: Mapping[str, Any], now: datetime
    ) -> None:
        """Remember the answer given for this key."""
        ...

    async def insert_node(self, node: Node) -> None:
        """Store a node added at run time; Conflict if the name is taken."""
        ...

    async def list_nodes(self) -> list[Node]:
        """Every stored node, with its host-key trust."""
        ...

    async def note_host_key(
        self, node: str, fingerprint: str, public_key: str, *, untrusted: bool, now: datetime
    ) -> bool:
        """Remember a key a node presented; False if this sighting was already known."""
        ...

    async def trust_host_key(self, node: str, fingerprint: str, now: datetime) -> str | None:
        """Trust the presented key if its fingerprint matches; the key, or None."""
        ...

    async def add_chat_message(
        self, kind: str, subject_id: str, *, channel: str, ts: str, chat_user: str, now: datetime
    ) -> bool:
        """Remember the chat message that mirrors a subject (the first one wins)."""
        ...

    async def chat_message(self, kind: str, subject_id: str) -> ChatMessage | None:
        """The chat message that mirrors this subject."""
        ...

    async def chat_messages_to_sync(self, limit: int) -> list[ChatMessage]:
        """Open chat messages whose subject changed since they were last synced."""
        ...

    async def update_chat_message(
        self, message_id: int, *, posted_steps: tuple[str, ...], synced_at: datetime, done: bool
    ) -> None:
        """Record how far a chat message has been brought in line with its subject."""
        ...

    async def add_ssh_key(self, key: SshKey) -> bool:
        """Store a key; False if the owner already has it."""
        ...

    async def ssh_keys(self, owner: str) -> list[SshKey]:
        """The owner's SSH keys."""
        ...

    async def delete_ssh_key(self, owner: str, fingerprint: str) -> bool:
        """Remove one of the owner's keys; False if they had no such key."""
        ...

    async def workspaces_to_remind(self, before: datetime, limit: int) -> list[Workspace]:
        """Live workspaces expiring before `before` whose owner was not reminded yet."""
        ...

    async def save_image(self, image: Image) -> None:
        """Store an image registered by an import."""
        ...

    async def get_image(self, name: str) -> Image | None:
        """The stored image called `name`."""
        ...

    async def list_images(self) -> list[Image]:
        """Every stored image, configured or imported."""
        ...

    async def sync_catalog(
        self, node_list: Sequence[Node], plan_list: Sequence[Plan], image_list: Sequence[Image]
    ) -> None:
        """Make the stored nodes, plans and images match the configuration."""
        ...


class Store(Protocol):
    """Durable state: everything the provisioner knows lives here."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction that commits on success and rolls back on error."""
        ...

    def read(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction that only reads; cheaper, never waits for writers."""
        ...

    async def ping(self) -> None:
        """Raise InfrastructureError unless the database answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


from provisioner.ports.playbooks import (  # noqa: E402 (the seams of their own modules)
    LineSink,
    PlaybookRecap,
    PlaybookRunner,
    PlaybookTarget,
)
from provisioner.ports.tailnet import (  # noqa: E402
    AuthKey,
    PolicyDocument,
    TagPolicy,
    Tailnet,
    TailnetDevice,
)

__all__ = [
    "AuthKey",
    "CommandResult",
    "DomainInfo",
    "DomainSpec",
    "HostKeyReporter",
    "HostKeySighting",
    "Hypervisor",
    "LineSink",
    "NodeLink",
    "PlaybookRecap",
    "PlaybookRunner",
    "PlaybookTarget",
    "PolicyDocument",
    "PoolSpace",
    "SeedMaker",
    "SeedSpec",
    "Store",
    "TagPolicy",
    "Tailnet",
    "TailnetDevice",
    "Transaction",
    "VolumeInfo",
]
