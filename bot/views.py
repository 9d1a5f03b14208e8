"""Block Kit views, as pure functions from core records to Slack JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from provisioner.models import (
    Approval,
    ApprovalState,
    Image,
    Operation,
    OperationState,
    Plan,
    StepState,
    TailnetReach,
    Workspace,
    WorkspaceState,
)
from provisioner.requests import login_name

Block = dict[str, Any]
STATE_ICONS = {
    WorkspaceState.AWAITING_APPROVAL: ":hourglass:",
    WorkspaceState.PROVISIONING: ":gear:",
    WorkspaceState.RUNNING: ":large_green_circle:",
    WorkspaceState.STOPPED: ":white_circle:",
    WorkspaceState.DELETING: ":wastebasket:",
    WorkspaceState.DELETED: ":heavy_minus_sign:",
    WorkspaceState.FAILED: ":red_circle:",
    WorkspaceState.DENIED: ":no_entry:",
}
STEP_ICONS = {
    StepState.RUNNING: ":arrow_forward:",
    StepState.SUCCEEDED: ":white_check_mark:",
    StepState.FAILED: ":x:",
    StepState.SKIPPED: ":fast_forward:",
}
HOME_LIMIT = 40  # each workspace takes two blocks; a Home view holds at most 100


def plain(text: str) -> dict[str, Any]:
    """A plain_text object (emoji on)."""
    return {"type": "plain_text", "text": text, "emoji": True}


def section(text: str, block_id: str | None = None) -> Block:
    """A mrkdwn section block."""
    block: Block = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def context(text: str) -> Block:
    """A small grey context line."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def button(
    text: str, action_id: str, value: str, style: str | None = None, confirm: str | None = None
) -> Block:
    """A button, optionally coloured and guarded by a confirm dialog."""
    element: Block = {"type": "button", "text": plain(text), "action_id": action_id, "value": value}
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = {
            "title": plain(f"{text}?"),
            "text": {"type": "mrkdwn", "text": confirm},
            "confirm": plain(text),
            "deny": plain("Back"),
            **({"style": style} if style else {}),
        }
    return element


def when(moment: datetime | None) -> str:
    """A Slack date token that each reader sees in their own time zone."""
    if moment is None:
        return "never"
    stamp = int(moment.timestamp())
    return f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{moment.isoformat(timespec='minutes')}>"


def workspace_line(ws: Workspace) -> str:
    """One line about a workspace."""
    icon = STATE_ICONS.get(ws.state, "")
    expires = when(ws.expires_at)
    return f"{icon} *{ws.name}* · {ws.state.value} · {ws.plan} on {ws.node} · expires {expires}"


def status_message(op: Operation, ws: Workspace, user_id: str) -> tuple[str, list[Block]]:
    """The one message per request, as it should read now."""
    verb = {"create": "Creating", "delete": "Deleting", "start": "Starting", "stop": "Stopping"}
    doing = verb.get(op.kind.value, op.kind.value.capitalize())
    if op.state == OperationState.SUCCEEDED:
        headline = f":white_check_mark: {op.kind.value} of *{ws.name}* done: it is {ws.state.value}"
    elif op.state == OperationState.FAILED:
        headline = f":x: {op.kind.value} of *{ws.name}* failed: {op.error}"
    elif op.state == OperationState.CANCELLED:
        headline = f":no_entry_sign: {op.kind.value} of *{ws.name}* cancelled: {op.error or ''}"
    elif op.state == OperationState.AWAITING_APPROVAL:
        headline = f":hourglass: *{ws.name}* waits for an operator's approval"
    else:
        headline = f":gear: {doing} *{ws.name}* for <@{user_id}>…"
    done = sum(1 for s in op.steps if s.state == StepState.SUCCEEDED)
    progress = f"{ws.plan} on {ws.node} · {done} step(s) done · operation `{op.id}`"
    blocks = [section(headline), context(progress)]
    if op.state == OperationState.FAILED:
        blocks.append(context(failure_advice(op)))
    return headline.replace("*", ""), blocks


def failure_advice(op: Operation) -> str:
    """What to do after a failure."""
    ask = "if it keeps failing, ask in the ops channel with the operation id"
    if op.kind.value == "create":
        return f"Nothing was left behind. Try again, or pick another plan; {ask}."
    return f"Try again in a minute; {ask}."


def step_line(name: str, state: StepState, detail: str | None) -> str:
    """One thread reply about a finished step."""
    return f"{STEP_ICONS.get(state, '')} `{name}` {state.value}" + (f": {detail}" if detail else "")


OUTPUT_CHUNK_CHARS = 2800  # a thread message stays readable and far from Slack's limits
OUTPUT_CHUNKS_PER_ROUND = 5
FENCE = "```"


def output_chunks(lines: list[str]) -> list[str]:
    """Output lines as a few code blocks; when there are too many, the last ones, said so."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for raw in lines:
        line = raw[:500].replace(FENCE, "` ` `")  # a fence inside would end the code block
        if current and size + len(line) > OUTPUT_CHUNK_CHARS:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append("\n".join(current))
    skipped = len(chunks) - OUTPUT_CHUNKS_PER_ROUND
    shown = [f"{FENCE}{chunk}{FENCE}" for chunk in chunks[-OUTPUT_CHUNKS_PER_ROUND:]]
    if skipped > 0:
        shown.insert(0, f"… {skipped} earlier part(s) of the output: see the operation log")
    return shown


def how_to_reach(ws: Workspace) -> str:
    """The ssh command for a workspace (over the tailnet when it is on it), or why there is none."""
    login, ts = login_name(ws.owner), ws.tailscale
    if ts.hostname or ts.ip:
        also = f" (or `ssh {login}@{ts.ip}`)" if ts.hostname and ts.ip else ""
        return (
            f"`ssh {login}@{ts.hostname or ts.ip}`{also}: over the tailnet, from any device of "
            f"yours that is on it (`tailscale status` shows whether yours is)."
        )
    if ts.reach == TailnetReach.NODE_ONLY:
        return (
            f"*{ws.name}* did not join the tailnet: it is reachable only through node "
            f"{ws.node}, at {ws.address or 'an address on its private network'}. Ask ops for "
            "a jump host, or to rebuild it so that it tries joining again."
        )
    if ws.address:
        return f"`ssh {login}@{ws.address}`: on node {ws.node}'s network (Tailscale is off)."
    return (
        f"*{ws.name}* has no network address yet; `/workspace ssh {ws.name}` shows it once it has."
    )


def ready_message(ws: Workspace) -> tuple[str, list[Block]]:
    """The DM sent when a workspace is ready: how to reach it."""
    text = f"Your workspace {ws.name} is ready"
    blocks = [
        section(f":rocket: Your workspace *{ws.name}* is ready ({ws.plan} on {ws.node})."),
        section(how_to_reach(ws)),
        context(
            f"It expires {when(ws.expires_at)}; "
            f"`/workspace extend {ws.name} HOURS` keeps it longer."
        ),
    ]
    return text, blocks


def approval_request(
    approval: Approval, ws: Workspace, requester: str, why: str
) -> tuple[str, list[Block]]:
    """The ops-channel message asking for a decision, and why one is needed."""
    text = f"Approval needed: {ws.name} ({ws.plan}) for {requester}: {why}"
    return text, [
        section(
            f":raising_hand: {requester} requests workspace *{ws.name}* "
            f"(plan *{ws.plan}*, image {ws.image}, expires {when(ws.expires_at)})",
            block_id=f"request:{approval.id}",
        ),
        context(f"Needs approval: {why}"),
        {
            "type": "actions",
            "block_id": f"approval:{approval.id}",
            "elements": [
                button(
                    "Approve",
                    "approve_request",
                    approval.id,
                    "primary",
                    f"Create *{ws.name}* ({ws.plan}) for {requester}?",
                ),
                button(
                    "Deny",
                    "deny_request",
                    approval.id,
                    "danger",
                    "You will be asked for a reason; the requester sees it.",
                ),
            ],
        },
    ]


def approval_outcome(approval: Approval, ws: Workspace, requester: str) -> tuple[str, list[Block]]:
    """The ops-channel message once decided: who decided, when, and why."""
    verdict = {
        ApprovalState.APPROVED: ":white_check_mark: Approved",
        ApprovalState.DENIED: ":no_entry: Denied",
        ApprovalState.WITHDRAWN: ":leftwards_arrow_with_hook: Withdrawn by the requester",
    }[approval.state]
    by = f" by {approval.decided_by}" if approval.decided_by else ""
    reason = f": {approval.reason}" if approval.reason else ""
    text = f"{verdict}{by}: {ws.name} for {requester}"
    return text, [
        section(f"{requester} requested workspace *{ws.name}* (plan *{ws.plan}*)"),
        context(f"{verdict}{by} {when(approval.decided_at)}{reason}"),
    ]


def deny_modal(
    approval_id: str,
    *,
    callback_id: str = "deny_reason",
    title: str = "Deny request",
    question: str = "Why? The requester will see this.",
) -> dict[str, Any]:
    """A modal asking the operator why they deny (a request, or a node's host key)."""
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": approval_id,
        "title": plain(title),
        "submit": plain("Deny"),
        "close": plain("Back"),
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": plain(question),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": True,
                    "max_length": 500,
                },
            }
        ],
    }


def create_modal(plans: Iterable[Plan], images: Iterable[Image], channel: str) -> dict[str, Any]:
    """The form behind `/workspace create` with no arguments."""

    def options(names: Iterable[str]) -> list[Block]:
        return [{"text": plain(name), "value": name} for name in names]

    plan_list = list(plans)
    return {
        "type": "modal",
        "callback_id": "create_ws",
        "private_metadata": json.dumps({"channel": channel}),
        "title": plain("New workspace"),
        "submit": plain("Create"),
        "close": plain("Cancel"),
        "blocks": [
            _input("name", "Name", {"type": "plain_text_input", "max_length": 40}, optional=True),
            _input(
                "plan",
                "Plan",
                {
                    "type": "static_select",
                    "options": options(p.name for p in plan_list),
                    "initial_option": options([plan_list[0].name])[0],
                },
            ),
            _input(
                "image",
                "Image",
                {"type": "static_select", "options": options(i.name for i in images)},
            ),
            _input(
                "ttl",
                "Hours to keep it",
                {"type": "number_input", "is_decimal_allowed": False},
                optional=True,
            ),
            _input(
                "playbooks",
                "Playbooks (one per line)",
                {"type": "plain_text_input", "multiline": True},
                optional=True,
            ),
        ],
    }


def _input(block_id: str, label: str, element: Block, *, optional: bool = False) -> Block:
    """An input block whose action id equals its block id."""
    return {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": plain(label),
        "element": {**element, "action_id": block_id},
    }


def home_view(workspaces: Sequence[Workspace]) -> dict[str, Any]:
    """App Home: the user's workspaces with buttons."""
    blocks: list[Block] = [
        {"type": "header", "text": plain("Your workspaces")},
        {
            "type": "actions",
            "elements": [button("New workspace", "open_create_modal", "new", "primary")],
        },
    ]
    live = [ws for ws in workspaces if ws.state not in (WorkspaceState.DELETED,)]
    for ws in live[-HOME_LIMIT:]:
        blocks.append(section(workspace_line(ws), block_id=f"ws:{ws.id}"))
        blocks.append({"type": "actions", "block_id": f"act:{ws.id}", "elements": home_buttons(ws)})
    if not live:
        blocks.append(section("You have no workspaces. `/workspace create` makes one."))
    return {"type": "home", "blocks": blocks}


def home_buttons(ws: Workspace) -> list[Block]:
    """The buttons that make sense for a workspace's state."""
    buttons = []
    if ws.state == WorkspaceState.RUNNING:
        buttons.append(button("Stop", "home_stop", ws.id, confirm=f"Stop *{ws.name}*?"))
    if ws.state == WorkspaceState.STOPPED:
        buttons.append(button("Start", "home_start", ws.id))
    if ws.state in (WorkspaceState.RUNNING, WorkspaceState.STOPPED):
        buttons.append(button("Extend 24 h", "extend_ws", ws.id))
    if ws.state not in (WorkspaceState.DELETING, WorkspaceState.DELETED):
        buttons.append(
            button("Delete", "home_delete", ws.id, "danger", f"Delete *{ws.name}* and its disk?")
        )
    return buttons


def reminder(ws: Workspace) -> tuple[str, list[Block]]:
    """The DM sent before a workspace expires."""
    text = f"Workspace {ws.name} expires soon"
    return text, [
        section(f":alarm_clock: Your workspace *{ws.name}* will be deleted {when(ws.expires_at)}."),
        {"type": "actions", "elements": [button("Extend 24 h", "extend_ws", ws.id, "primary")]},
    ]


def workspace_list(workspaces: Sequence[Workspace]) -> str:
    """The answer to `/workspace list`."""
    if not workspaces:
        return "You have no workspaces. `/workspace create` makes one."
    return "\n".join(workspace_line(ws) for ws in workspaces)
