"""What each kind of operation does, as a table of steps that observe before they act.

Every step may run again after a crash, so each one looks at the node first and does
nothing when its effect is already there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from provisioner.domain_steps import (
    define_domain,
    destroy_domain,
    shutdown_domain,
    start_domain,
    undefine_domain,
)
from provisioner.guest_steps import onboard_guest, wait_for_address, wait_for_ssh
from provisioner.models import OperationKind, OperationState, WorkspaceState
from provisioner.playbook_steps import run_playbooks
from provisioner.step_context import StepContext
from provisioner.tailnet_steps import join_tailnet, leave_tailnet
from provisioner.volume_steps import delete_disk, delete_seed, prepare_disk, write_seed

StepFn = Callable[[StepContext], Awaitable[str]]


@dataclass(frozen=True)
class StepDef:
    """A named step; `run` returns a short detail line for the record."""

    name: str
    run: StepFn


@dataclass(frozen=True)
class Recipe:
    """How an operation kind runs, and what the workspace becomes when it ends."""

    steps: tuple[StepDef, ...]
    on_success: WorkspaceState
    on_failure: WorkspaceState | None
    compensation: tuple[StepDef, ...] = ()
    on_cancel: WorkspaceState | None = None
    cancellable_while_running: bool = True

    def outcome(self, state: OperationState) -> WorkspaceState | None:
        """The workspace state after the operation ends in `state` (None: unchanged)."""
        if state == OperationState.SUCCEEDED:
            return self.on_success
        if state == OperationState.CANCELLED:
            return self.on_cancel
        return self.on_failure


DISK = StepDef("prepare_disk", prepare_disk)
SEED = StepDef("write_seed", write_seed)
DEFINE = StepDef("define_domain", define_domain)
START = StepDef("start_domain", start_domain)
ADDRESS = StepDef("wait_for_address", wait_for_address)
SSH = StepDef("wait_for_ssh", wait_for_ssh)
SHUTDOWN = StepDef("shutdown_domain", shutdown_domain)
DESTROY = StepDef("destroy_domain", destroy_domain)
UNDEFINE = StepDef("undefine_domain", undefine_domain)
DROP_DISK = StepDef("delete_disk", delete_disk)
DROP_SEED = StepDef("delete_seed", delete_seed)
JOIN = StepDef("join_tailnet", join_tailnet)
ONBOARD = StepDef("onboard", onboard_guest)
PLAYBOOKS = StepDef("run_playbooks", run_playbooks)
LEAVE = StepDef("leave_tailnet", leave_tailnet)
# Everything a workspace owns on its node and on the tailnet, in the order it is taken apart.
TEAR_DOWN = (DESTROY, UNDEFINE, DROP_DISK, DROP_SEED, LEAVE)
BOOT = (START, ADDRESS, SSH)

RECIPES: dict[OperationKind, Recipe] = {
    OperationKind.CREATE: Recipe(
        steps=(DISK, SEED, DEFINE, *BOOT, JOIN, ONBOARD, PLAYBOOKS),
        on_success=WorkspaceState.RUNNING,
        on_failure=WorkspaceState.FAILED,
        compensation=TEAR_DOWN,
        on_cancel=WorkspaceState.DELETED,
    ),
    OperationKind.DELETE: Recipe(
        steps=TEAR_DOWN,
        on_success=WorkspaceState.DELETED,
        on_failure=WorkspaceState.FAILED,
        cancellable_while_running=False,
    ),
    OperationKind.START: Recipe(steps=BOOT, on_success=WorkspaceState.RUNNING, on_failure=None),
    OperationKind.STOP: Recipe(
        steps=(SHUTDOWN,), on_success=WorkspaceState.STOPPED, on_failure=None
    ),
    OperationKind.REBOOT: Recipe(
        steps=(SHUTDOWN, *BOOT), on_success=WorkspaceState.RUNNING, on_failure=None
    ),
    # A fresh disk and seed under the same domain: the workspace comes back as new, and
    # joins the tailnet again as a new device with a new key.
    OperationKind.REBUILD: Recipe(
        steps=(DESTROY, LEAVE, DROP_DISK, DROP_SEED, DISK, SEED, *BOOT, JOIN, ONBOARD),
        on_success=WorkspaceState.RUNNING,
        on_failure=WorkspaceState.FAILED,
        cancellable_while_running=False,
    ),
    # Runs in a workspace that stays as it is, whether the playbook succeeds or fails.
    OperationKind.PLAYBOOK: Recipe(
        steps=(PLAYBOOKS,), on_success=WorkspaceState.RUNNING, on_failure=None
    ),
}
