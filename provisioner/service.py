"""Use cases of the provisioner, one method per user intent; both edges call these."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from provisioner.approvals import request_approval
from provisioner.audit import record
from provisioner.catalog import Catalog
from provisioner.errors import (
    Conflict,
    InvalidInput,
    NotFound,
)
from provisioner.fleet import Fleet
from provisioner.ids import new_id
from provisioner.models import (
    LIVE_WORKSPACE_STATES,
    Actor,
    Capacity,
    Operation,
    OperationKind,
    OperationState,
    OutputLine,
    Page,
    Plan,
    Quota,
    Workspace,
    WorkspaceState,
)
from provisioner.nodes import Nodes
from provisioner.playbook_runs import resolve_runs
from provisioner.playbooks import PlaybookCatalog
from provisioner.ports import Store, Transaction
from provisioner.requests import (
    CreateRequest,
    Defaults,
    Idempotency,
    image_for,
    owner_for,
    owner_tag,
    plan_for,
    ttl_hours,
    workspace_name,
)
from provisioner.steps import RECIPES

Clock = Callable[[], datetime]
MAX_PAGE = 200
MAX_OUTPUT_LINES = 100_000
PENDING_STATES = frozenset({OperationState.PENDING, OperationState.AWAITING_APPROVAL})
# Which workspace states each power action starts from.
POWER_ACTIONS = {
    OperationKind.START: frozenset({WorkspaceState.STOPPED}),
    OperationKind.STOP: frozenset({WorkspaceState.RUNNING}),
    OperationKind.REBOOT: frozenset({WorkspaceState.RUNNING}),
    OperationKind.REBUILD: frozenset({WorkspaceState.RUNNING, WorkspaceState.STOPPED}),
}
DELETABLE = frozenset(
    {
        WorkspaceState.AWAITING_APPROVAL,
        WorkspaceState.PROVISIONING,
        WorkspaceState.RUNNING,
        WorkspaceState.STOPPED,
        WorkspaceState.FAILED,
        WorkspaceState.DELETING,
    }
)


class Provisioner:
    """The core's use cases over the store, the catalog and the fleet."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        fleet: Fleet,
        clock: Clock,
        wake_workers: Callable[[], None],
        *,
        quota: Quota | None = None,
        tag_owners: bool = False,
        defaults: Defaults | None = None,
        playbooks: PlaybookCatalog | None = None,
    ) -> None:
        self.catalog = catalog
        # The plan and image a create naming none gets; edges read it to show the defaults.
        self.defaults = defaults or Defaults()
        self.nodes = Nodes(store, fleet, clock)
        self._quota = quota or Quota()
        self._tag_owners = tag_owners  # a tailnet is on: every owner needs a valid tag
        self.playbooks = playbooks
        self._store, self._fleet, self._clock, self._wake = store, fleet, clock, wake_workers

    async def create_workspace(
        self, actor: Actor, request: CreateRequest, idempotency: Idempotency | None = None
    ) -> tuple[Workspace, Operation]:
        """Validate, place and record a new workspace and its create operation."""
        owner = owner_for(actor, request.owner)
        if self._tag_owners:
            owner_tag(owner)
        plan = plan_for(self.catalog, request.plan, self.defaults)
        if (request.image or self.defaults.image) not in self.catalog.images:
            # Perhaps imported a moment ago by another process: look in the store first.
            async with self._store.read() as tx:
                self.catalog.learn_images(await tx.list_images())
        image = image_for(self.catalog, request.image, self.defaults)
        ttl = ttl_hours(plan, request.ttl_hours)
        runs = await resolve_runs(self.playbooks, request.playbooks)
        name = workspace_name(request.name, owner)
        size = Capacity(plan.vcpus, plan.memory_mib, plan.disk_gib)
        if not self._fleet.holds_image(image):
            # Maybe it was imported since we last looked: look again before refusing.
            await self._fleet.survey(timeout=2.0)
        now = self._clock()
        async with self._store.transaction() as tx:
            # Placement is serialised; checking the key under the same lock lets twins replay.
            await tx.lock("placement")
            if idempotency is not None:
                replay = await self._replay(tx, actor, idempotency)
                if replay is not None:
                    return replay
            node = self._fleet.place(size, await tx.usage_by_node(), image)
            if runs and node.simulated:
                raise InvalidInput(
                    f"playbooks need a real guest, and node {node.name} is libvirt's test "
                    "driver: create without playbooks, or on a node reached over SSH",
                    field="playbooks",
                )
            why_gated = await self._approval_reason(tx, plan, owner)
            gated = why_gated is not None
            ws_id = new_id("ws")
            ws = Workspace(
                id=ws_id,
                name=name,
                owner=owner,
                plan=plan.name,
                image=image.name,
                node=node.name,
                state=WorkspaceState.AWAITING_APPROVAL if gated else WorkspaceState.PROVISIONING,
                domain_name=f"ws-{name}-{ws_id[-6:]}",
                created_at=now,
                updated_at=now,
                expires_at=now + timedelta(hours=ttl),
            )
            await tx.insert_workspace(ws, size)
            op = await self._enqueue(
                tx,
                actor,
                ws,
                OperationKind.CREATE,
                awaiting_approval=gated,
                why=why_gated,
                playbooks=runs,
            )
            if gated:
                await request_approval(tx, actor, op, now)
            await record(
                tx, now, actor, "workspace.requested", ws.id, operation_id=op.id, reason=plan.name
            )
            if idempotency is not None:
                await tx.put_idempotent(
                    actor.name,
                    idempotency.key,
                    idempotency.request_hash,
                    {"workspace_id": ws.id, "operation_id": op.id},
                    now,
                )
        self._wake()
        return ws, op

    async def _approval_reason(self, tx: Transaction, plan: Plan, owner: str) -> str | None:
        """Why a new workspace of `plan` for `owner` needs approval, or None if it does not."""
        if plan.requires_approval:
            return f"plan {plan.name} requires approval"
        count, held = await tx.owner_usage(owner)
        return self._quota.exceeded_by(count + 1, held.vcpus + plan.vcpus)

    async def _replay(
        self, tx: Transaction, actor: Actor, idempotency: Idempotency
    ) -> tuple[Workspace, Operation] | None:
        """The earlier answer for this key, 422 if the body differs, None if the key is new."""
        stored = await tx.get_idempotent(actor.name, idempotency.key)
        if stored is None:
            return None
        request_hash, answer = stored
        if request_hash != idempotency.request_hash:
            raise InvalidInput(
                "this Idempotency-Key was already used with a different request body",
                code="idempotency_key_reused",
            )
        ws = await tx.get_workspace(answer["workspace_id"])
        op = await tx.get_operation(answer["operation_id"])
        assert ws is not None and op is not None
        return ws, op

    async def list_workspaces(
        self,
        actor: Actor,
        *,
        owner: str | None = None,
        state: WorkspaceState | None = None,
        name: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[Workspace]:
        """A page of the workspaces the actor may see, in creation order."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        if actor.owner_scope is not None:
            if owner is not None and owner != actor.owner_scope:
                return Page(())
            owner = actor.owner_scope
        async with self._store.read() as tx:
            items = await tx.list_workspaces(
                owner=owner, state=state, name=name, after=cursor, limit=limit + 1
            )
        return Page.from_overfetch(items, limit, lambda item: item.id)

    async def get_workspace(self, actor: Actor, workspace_id: str) -> Workspace:
        """One workspace the actor may see."""
        async with self._store.read() as tx:
            return await _visible(tx, actor, workspace_id)

    async def workspace_named(self, actor: Actor, name: str) -> Workspace:
        """The live workspace called `name` that the actor may see."""
        async with self._store.read() as tx:
            found = await tx.list_workspaces(
                owner=actor.owner_scope, state=None, name=name, after=None, limit=MAX_PAGE
            )
        live = [ws for ws in found if ws.state in LIVE_WORKSPACE_STATES]
        if not live:
            raise NotFound(f"you have no workspace named {name!r}; `list` shows yours")
        return live[-1]

    async def delete_workspace(self, actor: Actor, workspace_id: str) -> Operation:
        """Start deleting a workspace; a pending create is cancelled first."""
        now = self._clock()
        async with self._store.transaction() as tx:
            await tx.lock(f"workspace:{workspace_id}")
            ws = await _visible(tx, actor, workspace_id)
            if ws.state not in DELETABLE:
                raise Conflict(f"workspace {ws.name} is {ws.state.value}; nothing to delete")
            active = await tx.active_operation(ws.id)
            if active is not None and active.kind == OperationKind.DELETE:
                return active
            if active is not None:
                await self._withdraw(tx, actor, active, now)
            await tx.update_workspace(ws.id, state=WorkspaceState.DELETING, updated_at=now)
            op = await self._enqueue(tx, actor, ws, OperationKind.DELETE)
        self._wake()
        return op

    async def _withdraw(
        self, tx: Transaction, actor: Actor, active: Operation, now: datetime
    ) -> None:
        """Cancel an operation that has not started, or refuse while one is running."""
        if active.state in PENDING_STATES:
            await tx.set_operation_state(
                active.id,
                OperationState.CANCELLED,
                expect=PENDING_STATES,
                now=now,
                error="superseded by a delete",
            )
            await tx.withdraw_approvals(active.id, now)
            await record(
                tx, now, actor, "operation.cancelled", active.workspace_id, operation_id=active.id
            )
            return
        raise Conflict(
            f"the workspace is busy with a running {active.kind.value} operation ({active.id}); "
            "wait for it or cancel it first",
            code="busy",
        )

    async def power(self, actor: Actor, workspace_id: str, kind: OperationKind) -> Operation:
        """Start, stop, reboot or rebuild a workspace."""
        what = f"{kind.value} workspace"
        return await self._act(actor, workspace_id, kind, POWER_ACTIONS[kind], what)

    async def run_playbook(
        self,
        actor: Actor,
        workspace_id: str,
        playbook: str,
        extra_vars: Mapping[str, Any] | None = None,
    ) -> Operation:
        """Run a playbook from the catalogue in a running workspace, as an operation."""
        runs = await resolve_runs(self.playbooks, [playbook], extra_vars)
        running = frozenset({WorkspaceState.RUNNING})
        what = f"run {playbook} in workspace"
        return await self._act(
            actor, workspace_id, OperationKind.PLAYBOOK, running, what, playbooks=runs
        )

    async def _act(
        self,
        actor: Actor,
        workspace_id: str,
        kind: OperationKind,
        allowed: frozenset[WorkspaceState],
        what: str,
        *,
        playbooks: list[dict[str, Any]] | None = None,
    ) -> Operation:
        """Enqueue `kind` on an idle workspace whose state is in `allowed`."""
        async with self._store.transaction() as tx:
            await tx.lock(f"workspace:{workspace_id}")
            ws = await _visible(tx, actor, workspace_id)
            if ws.state not in allowed:
                raise Conflict(
                    f"cannot {what} {ws.name}: it is {ws.state.value}", code="wrong_state"
                )
            active = await tx.active_operation(ws.id)
            if active is not None:
                raise Conflict(
                    f"workspace {ws.name} is busy with {active.kind.value} ({active.id})",
                    code="busy",
                )
            op = await self._enqueue(tx, actor, ws, kind, playbooks=playbooks)
        self._wake()
        return op

    async def extend_workspace(self, actor: Actor, workspace_id: str, hours: int) -> Workspace:
        """Push a workspace's expiry later, within its plan's maximum."""
        now = self._clock()
        async with self._store.transaction() as tx:
            ws = await _visible(tx, actor, workspace_id)
            if ws.state not in (WorkspaceState.RUNNING, WorkspaceState.STOPPED):
                raise Conflict(f"cannot extend workspace {ws.name}: it is {ws.state.value}")
            plan = self.catalog.plans.get(ws.plan)
            limit = plan.max_ttl_hours if plan else 24
            if not 1 <= hours <= limit:
                raise InvalidInput(f"hours must be between 1 and {limit}")
            expires = min(
                max(ws.expires_at or now, now) + timedelta(hours=hours),
                now + timedelta(hours=limit),
            )
            updated = await tx.update_workspace(
                ws.id, expires_at=expires, updated_at=now, reminded_at=None
            )
            await record(
                tx, now, actor, "workspace.extended", ws.id, reason=f"until {expires.isoformat()}"
            )
        assert updated is not None
        return updated

    async def get_operation(self, actor: Actor, operation_id: str) -> Operation:
        """One operation on a workspace the actor may see."""
        async with self._store.read() as tx:
            op = await tx.get_operation(operation_id)
            if op is None:
                raise NotFound(f"no operation {operation_id}")
            await _visible(tx, actor, op.workspace_id, what=f"operation {operation_id}")
            return op

    async def operation_with_output(
        self, actor: Actor, operation_id: str
    ) -> tuple[Operation, list[OutputLine]]:
        """One operation and the lines its steps printed (playbook output), oldest first."""
        async with self._store.read() as tx:
            op = await tx.get_operation(operation_id)
            if op is None:
                raise NotFound(f"no operation {operation_id}")
            await _visible(tx, actor, op.workspace_id, what=f"operation {operation_id}")
            return op, await tx.operation_output(op.id, after=0, limit=MAX_OUTPUT_LINES)

    async def cancel_operation(self, actor: Actor, operation_id: str) -> Operation:
        """Cancel an operation now if it waits, or ask its worker to stop at the next step."""
        now = self._clock()
        async with self._store.transaction() as tx:
            op = await tx.get_operation(operation_id)
            if op is None:
                raise NotFound(f"no operation {operation_id}")
            await _visible(tx, actor, op.workspace_id, what=f"operation {operation_id}")
            if op.state.terminal:
                raise Conflict(f"operation {op.id} already {op.state.value}", code="not_cancelable")
            recipe = RECIPES[op.kind]
            if op.state == OperationState.RUNNING and not recipe.cancellable_while_running:
                raise Conflict(
                    f"a running {op.kind.value} cannot be cancelled", code="not_cancelable"
                )
            if await tx.set_operation_state(
                op.id,
                OperationState.CANCELLED,
                expect=PENDING_STATES,
                now=now,
                error="cancelled on request",
            ):
                await tx.withdraw_approvals(op.id, now)
                new_state = recipe.on_cancel
                if new_state is not None:
                    await tx.update_workspace(op.workspace_id, state=new_state, updated_at=now)
            else:
                await tx.request_cancel(op.id, now)
            await record(
                tx, now, actor, "operation.cancel_requested", op.workspace_id, operation_id=op.id
            )
            updated = await tx.get_operation(op.id)
        assert updated is not None
        return updated

    async def expire_workspaces(self, actor: Actor, batch: int = 50) -> int:
        """Start deleting every workspace past its expiry; returns how many."""
        async with self._store.read() as tx:
            expired = await tx.expired_workspaces(self._clock(), batch)
        started = 0
        for ws in expired:
            try:
                await self.delete_workspace(actor, ws.id)
                started += 1
            except Conflict:
                continue
        return started

    async def counts(self) -> tuple[dict[OperationState, int], dict[WorkspaceState, int]]:
        """Operations and workspaces per state, for metrics."""
        async with self._store.read() as tx:
            return await tx.count_operations_by_state(), await tx.count_workspaces_by_state()

    async def _enqueue(
        self,
        tx: Transaction,
        actor: Actor,
        ws: Workspace,
        kind: OperationKind,
        *,
        awaiting_approval: bool = False,
        why: str | None = None,
        playbooks: list[dict[str, Any]] | None = None,
    ) -> Operation:
        """Record a new operation on `ws` for the workers, and audit it."""
        now = self._clock()
        params: dict[str, Any] = {"approval_reason": why} if why else {}
        if playbooks:
            params["playbooks"] = playbooks
        op = Operation(
            id=new_id("op"),
            kind=kind,
            state=OperationState.AWAITING_APPROVAL if awaiting_approval else OperationState.PENDING,
            workspace_id=ws.id,
            requested_by=actor.name,
            created_at=now,
            updated_at=now,
            params=params,
        )
        await tx.insert_operation(op)
        await record(
            tx,
            now,
            actor,
            f"operation.{op.state.value}",
            ws.id,
            operation_id=op.id,
            reason=kind.value,
        )
        return op


async def _visible(
    tx: Transaction, actor: Actor, workspace_id: str, *, what: str | None = None
) -> Workspace:
    """The workspace if it exists and the actor may see it; otherwise NotFound."""
    ws = await tx.get_workspace(workspace_id)
    if ws is None or not actor.sees(ws.owner):
        raise NotFound(f"no {what or 'workspace ' + workspace_id}")
    return ws
