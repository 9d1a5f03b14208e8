"""Durable operation runner: claims with a lease and fence, runs steps, resumes, cancels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from provisioner.audit import record
from provisioner.errors import Cancelled, InfrastructureError, LeaseLost, ProvisionerError
from provisioner.ids import new_id
from provisioner.metrics import Metrics
from provisioner.models import (
    SYSTEM_ACTOR,
    Claim,
    OperationState,
    Step,
    StepState,
)
from provisioner.ports import Store
from provisioner.redaction import redact
from provisioner.step_context import StepContext, StepContexts
from provisioner.steps import RECIPES, Recipe, StepDef

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
TRANSIENT_RETRIES = (0.5, 1.0, 2.0)


class OperationRunner:
    """Claims operations from the store and drives them through their recipe's steps."""

    def __init__(
        self,
        store: Store,
        contexts: StepContexts,
        clock: Clock,
        metrics: Metrics,
        *,
        lease_seconds: float = 30.0,
        concurrency: int = 16,
        poll_seconds: float = 1.0,
        max_attempts: int = 3,
        fault_point: str | None = None,
    ) -> None:
        self.worker = f"{socket.gethostname()}-{os.getpid()}-{new_id('w')[-6:]}"
        self._store, self._contexts = store, contexts
        self._clock, self._metrics = clock, metrics
        self._lease = timedelta(seconds=lease_seconds)
        self._concurrency, self._poll, self._max_attempts = concurrency, poll_seconds, max_attempts
        self._fault_point = fault_point
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._claims: dict[str, Claim] = {}
        self._node_of: dict[str, str] = {}  # running operation → its node
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._listeners: list[Callable[[], None]] = []

    def on_progress(self, listener: Callable[[], None]) -> None:
        """Call `listener` (cheap, synchronous) after each recorded step and final state."""
        self._listeners.append(listener)

    def _progressed(self) -> None:
        """Tell listeners something changed (they read the store themselves)."""
        for listener in self._listeners:
            listener()

    def wake(self) -> None:
        """Look for new work now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        """Begin claiming and running operations in the background."""
        self._loop_task = asyncio.create_task(self._claim_loop(), name="operation-claims")

    async def stop(self, drain_seconds: float) -> None:
        """Stop claiming, let running operations finish, then hand the rest back."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=drain_seconds)
        unfinished = list(self._claims.values())
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for claim in unfinished:
            await self._release(claim)

    async def _claim_loop(self) -> None:
        """Claim while there is room, otherwise wait for a wake-up or the poll interval."""
        while not self._stopping:
            # Cleared before claiming, so a wake-up during the claim is not lost.
            self._wake.clear()
            room = self._concurrency - len(self._tasks)
            claims: list[Claim] = []
            if room > 0:
                try:
                    claims = await self._claim(room, self._full_nodes())
                except InfrastructureError as error:
                    log.warning("claiming operations failed: %s", error.message)
                except Exception:
                    log.exception("claiming operations failed unexpectedly")
            for claim in claims:
                self._spawn(claim)
            if len(claims) < room or room <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)

    def _full_nodes(self) -> frozenset[str]:
        """Nodes already running their share of this runner's workers.

        A hung node's operations hold their workers until their steps give up; without a
        share per node, they would starve the work of every healthy node.
        """
        share = max(1, self._concurrency // 2)
        running = Counter(self._node_of.values())
        return frozenset(node for node, count in running.items() if count >= share)

    async def _claim(self, limit: int, full: frozenset[str]) -> list[Claim]:
        """Lease up to `limit` operations (none on `full` nodes) and audit each claim."""
        now = self._clock()
        async with self._store.transaction() as tx:
            claims = await tx.claim_operations(
                worker=self.worker,
                now=now,
                lease_until=now + self._lease,
                limit=limit,
                exclude_nodes=full,
            )
            for claim in claims:
                op = claim.operation
                reason = f"attempt {op.attempts} by {self.worker}"
                await record(
                    tx,
                    now,
                    SYSTEM_ACTOR,
                    "operation.running",
                    op.workspace_id,
                    operation_id=op.id,
                    reason=reason,
                )
        return claims

    def _spawn(self, claim: Claim) -> None:
        """Run a claimed operation as a tracked task."""
        op_id = claim.operation.id
        self._claims[op_id] = claim
        task = asyncio.create_task(self._execute(claim), name=f"operation-{op_id}")
        self._tasks[op_id] = task

        def forget(_task: asyncio.Task[None]) -> None:
            self._tasks.pop(op_id, None)
            self._claims.pop(op_id, None)
            self._node_of.pop(op_id, None)
            self._wake.set()

        task.add_done_callback(forget)

    async def _execute(self, claim: Claim) -> None:
        """Run one claim under a heartbeat; a lost lease stops all further side effects."""
        work = asyncio.current_task()
        assert work is not None
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(claim, work, lost))
        started = time.monotonic()
        outcome = "lost"
        try:
            outcome = (await self._run(claim)).value
        except LeaseLost:
            log.warning("operation %s: lease lost, another worker took over", claim.operation.id)
        except asyncio.CancelledError:
            if not lost.is_set():
                raise
            log.warning("operation %s: lease lost, stopped mid-step", claim.operation.id)
        finally:
            heartbeat.cancel()
            self._metrics.observe_operation(
                claim.operation.kind.value, outcome, time.monotonic() - started
            )

    async def _heartbeat(self, claim: Claim, work: asyncio.Task[None], lost: asyncio.Event) -> None:
        """Renew the lease every third of its length; cancel the work if it was lost."""
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._store.transaction() as tx:
                    kept = await tx.renew_lease(claim, self._clock() + self._lease)
            except InfrastructureError as error:
                log.warning("lease renewal failed: %s", error.message)
                continue
            if not kept:
                lost.set()
                work.cancel()
                return

    async def _run(self, claim: Claim) -> OperationState:
        """Drive the recipe from the first unfinished step to a final state."""
        op = claim.operation
        recipe = RECIPES[op.kind]
        try:
            ctx = await self._contexts.build(op.workspace_id, op)
        except ProvisionerError as error:
            return await self._finish(claim, OperationState.FAILED, error.message)
        self._node_of[op.id] = ctx.node.name
        try:
            if op.attempts > self._max_attempts:
                await self._mark_interrupted(claim)
                raise InfrastructureError(f"interrupted {op.attempts - 1} times; giving up")
            done = {s.name for s in op.steps if s.state == StepState.SUCCEEDED}
            for step in recipe.steps:
                if step.name not in done:
                    await self._check_cancel(claim, recipe)
                    await self._run_step(claim, step, ctx)
        except Cancelled:
            await self._compensate(claim, recipe, ctx)
            return await self._finish(claim, OperationState.CANCELLED, "cancelled on request")
        except LeaseLost:
            raise
        except ProvisionerError as error:
            await self._compensate(claim, recipe, ctx)
            return await self._finish(claim, OperationState.FAILED, error.message)
        except Exception:
            log.exception("operation %s failed unexpectedly", op.id)
            await self._compensate(claim, recipe, ctx)
            return await self._finish(
                claim, OperationState.FAILED, "internal error; see server log"
            )
        return await self._finish(claim, OperationState.SUCCEEDED, None)

    async def _check_cancel(self, claim: Claim, recipe: Recipe) -> None:
        """Raise Cancelled if a cancel was requested and this kind allows it now."""
        if not recipe.cancellable_while_running:
            return
        async with self._store.read() as tx:
            if await tx.cancel_requested(claim.operation.id):
                raise Cancelled("cancelled on request")

    async def _run_step(self, claim: Claim, step: StepDef, ctx: StepContext) -> None:
        """Record, run (retrying transient failures) and record the outcome of one step."""
        started = self._clock()
        await self._record(claim, Step(step.name, StepState.RUNNING, started))
        self._crash_point(step.name, "before")
        for delay in (*TRANSIENT_RETRIES, None):
            try:
                detail = await step.run(ctx)
                break
            except LeaseLost:
                raise
            except InfrastructureError as error:
                if delay is None:
                    await self._record(
                        claim,
                        Step(step.name, StepState.FAILED, started, self._clock(), error.message),
                    )
                    raise
                log.info("step %s: %s; retrying in %g s", step.name, error.message, delay)
                await asyncio.sleep(delay)
            except ProvisionerError as error:
                await self._record(
                    claim, Step(step.name, StepState.FAILED, started, self._clock(), error.message)
                )
                raise
        self._crash_point(step.name, "after")
        await self._record(
            claim, Step(step.name, StepState.SUCCEEDED, started, self._clock(), detail)
        )

    async def _mark_interrupted(self, claim: Claim) -> None:
        """Close the steps a killed worker left running, so none stays running forever."""
        for step in claim.operation.steps:
            if step.state == StepState.RUNNING:
                interrupted = Step(
                    step.name, StepState.FAILED, step.started_at, self._clock(), "interrupted"
                )
                await self._record(claim, interrupted)

    async def _compensate(self, claim: Claim, recipe: Recipe, ctx: StepContext) -> None:
        """Undo what a failed or cancelled operation left behind; each undo is idempotent."""
        for step in recipe.compensation:
            try:
                await self._run_step(claim, StepDef(f"undo_{step.name}", step.run), ctx)
            except LeaseLost:
                raise
            except ProvisionerError as error:
                log.warning("operation %s: %s failed: %s", claim.operation.id, step.name, error)

    async def _finish(
        self, claim: Claim, state: OperationState, error: str | None
    ) -> OperationState:
        """End the operation and move its workspace, in one fenced transaction."""
        op = claim.operation
        recipe = RECIPES[op.kind]
        now = self._clock()
        ws_state = recipe.outcome(state)
        error = redact(error) if error else error
        async with self._store.transaction() as tx:
            if not await tx.finish_operation(claim, state, error, now):
                raise LeaseLost(f"operation {op.id} was taken over before it finished")
            changes: dict[str, Any] = {"updated_at": now, "error": error}
            if ws_state is not None:
                changes["state"] = ws_state
            await tx.update_workspace(op.workspace_id, **changes)
            await record(
                tx,
                now,
                SYSTEM_ACTOR,
                f"operation.{state.value}",
                op.workspace_id,
                operation_id=op.id,
                reason=error,
            )
            if ws_state is not None:
                await record(
                    tx,
                    now,
                    SYSTEM_ACTOR,
                    f"workspace.{ws_state.value}",
                    op.workspace_id,
                    operation_id=op.id,
                    reason=error,
                )
        self._progressed()
        log.info(
            "operation %s (%s) %s%s",
            op.id,
            op.kind.value,
            state.value,
            f": {error}" if error else "",
        )
        return state

    async def _record(self, claim: Claim, step: Step) -> None:
        """Write a step record (its detail redacted), or stop if the claim went stale."""
        if step.detail:
            step = replace(step, detail=redact(step.detail))
        async with self._store.transaction() as tx:
            if not await tx.record_step(claim, step):
                raise LeaseLost(f"operation {claim.operation.id} was taken over")
        self._progressed()

    async def _release(self, claim: Claim) -> None:
        """Hand a claim back at shutdown so the next worker need not wait for the lease."""
        try:
            async with self._store.transaction() as tx:
                await tx.renew_lease(claim, self._clock())
        except InfrastructureError as error:
            log.warning("could not release %s: %s", claim.operation.id, error.message)

    def _crash_point(self, step: str, when: str) -> None:
        """Kill the process here when PROVISIONER_FAULT_POINT names this step (crash tests)."""
        if self._fault_point == f"{step}:{when}":
            log.warning("fault point %s:%s reached; killing the process", step, when)
            os.kill(os.getpid(), signal.SIGKILL)
