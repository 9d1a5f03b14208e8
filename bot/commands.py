"""The `/workspace` grammar: one table drives dispatch, permissions and the help text."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from acl.rbac import Permission, require
from bot import views
from bot.deps import BotDeps
from bot.identity import SlackUser
from provisioner.errors import InvalidInput
from provisioner.models import OperationKind
from provisioner.requests import CreateRequest, Idempotency

Reply = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Invocation:
    """One slash command, after ack: who, where, what, and how to answer them privately."""

    user: SlackUser
    channel: str
    trigger_id: str
    args: list[str]
    reply: Reply


Handler = Callable[[BotDeps, Invocation], Awaitable[None]]


@dataclass(frozen=True)
class Command:
    """A row of the command table."""

    name: str
    usage: str
    summary: str
    permission: Permission
    run: Handler
    min_args: int = 0
    max_args: int = 0
    # Without arguments the command opens a form, which must happen within 3 s of the trigger.
    form_without_args: bool = False


async def create(deps: BotDeps, inv: Invocation) -> None:
    """`create [name] [plan=P] [image=I] [ttl=H]`; no arguments opens the form."""
    if not inv.args:
        view = views.create_modal(
            deps.core.catalog.plans.values(), deps.core.catalog.images.values(), inv.channel
        )
        await deps.client.views_open(trigger_id=inv.trigger_id, view=view)
        return
    request = parse_create(inv.args)
    # The trigger id is unique per invocation: a retried command replays instead of doubling.
    key = Idempotency(
        f"slack:{inv.trigger_id}", hashlib.sha256(" ".join(inv.args).encode()).hexdigest()
    )
    ws, op = await deps.core.create_workspace(inv.user.actor, request, key)
    await deps.post_status(inv.channel, inv.user.user_id, op, ws)


def parse_create(args: list[str]) -> CreateRequest:
    """A create request from `[name] [plan=P] [image=I] [ttl=H] [playbooks=A,B]`.

    A plan or image left out is the deployment's default, which the core fills in.
    """
    name: str | None = None
    options: dict[str, str | None] = {"plan": None, "image": None}
    ttl: int | None = None
    playbooks: tuple[str, ...] = ()
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            if name is not None:
                raise InvalidInput(
                    f"two names given ({name!r}, {arg!r}); write options as key=value"
                )
            name = arg
        elif key in ("plan", "image"):
            options[key] = value
        elif key == "ttl":
            if not value.isdigit():
                raise InvalidInput("ttl is a number of hours, like ttl=8")
            ttl = int(value)
        elif key == "playbooks":
            playbooks = tuple(p for p in value.split(",") if p)
        else:
            raise InvalidInput(f"unknown option {key!r}; use plan=, image=, ttl= or playbooks=")
    return CreateRequest(
        plan=options["plan"],
        image=options["image"],
        name=name,
        ttl_hours=ttl,
        playbooks=playbooks,
    )


async def list_(deps: BotDeps, inv: Invocation) -> None:
    """`list`: your workspaces (all of them for operators)."""
    page = await deps.core.list_workspaces(inv.user.actor, limit=100)
    await inv.reply(views.workspace_list(page.items))


def power(kind: OperationKind) -> Handler:
    """`start NAME`, `stop NAME`."""

    async def run(deps: BotDeps, inv: Invocation) -> None:
        ws = await deps.core.workspace_named(inv.user.actor, inv.args[0])
        op = await deps.core.power(inv.user.actor, ws.id, kind)
        await deps.post_status(inv.channel, inv.user.user_id, op, ws)

    return run


async def delete(deps: BotDeps, inv: Invocation) -> None:
    """`delete NAME`."""
    ws = await deps.core.workspace_named(inv.user.actor, inv.args[0])
    op = await deps.core.delete_workspace(inv.user.actor, ws.id)
    await deps.post_status(inv.channel, inv.user.user_id, op, ws)


async def extend(deps: BotDeps, inv: Invocation) -> None:
    """`extend NAME HOURS`."""
    if not inv.args[1].isdigit():
        raise InvalidInput("HOURS is a whole number, like `extend dev 24`")
    ws = await deps.core.workspace_named(inv.user.actor, inv.args[0])
    ws = await deps.core.extend_workspace(inv.user.actor, ws.id, int(inv.args[1]))
    await inv.reply(f"*{ws.name}* now expires {views.when(ws.expires_at)}.")


async def ssh(deps: BotDeps, inv: Invocation) -> None:
    """`ssh NAME`: how to reach a workspace."""
    ws = await deps.core.workspace_named(inv.user.actor, inv.args[0])
    await inv.reply(views.how_to_reach(ws))


async def keys(deps: BotDeps, inv: Invocation) -> None:
    """`keys add KEY` (an SSH public key for your workspaces), `keys list`."""
    if inv.args[0] == "list" and len(inv.args) == 1:
        found = await deps.keys.list(inv.user.actor.name)
        lines = [
            f"• `{k.fingerprint}` {k.public_key.split()[0]} {_comment(k.public_key)}" for k in found
        ]
        await inv.reply(
            "\n".join(lines) or "No SSH keys yet: `keys add ssh-ed25519 AAAA… you@host`"
        )
        return
    if inv.args[0] != "add" or len(inv.args) < 2:
        raise InvalidInput("usage: `keys add ssh-ed25519 AAAA… you@host` or `keys list`")
    key, added = await deps.keys.add(inv.user.actor, inv.user.actor.name, " ".join(inv.args[1:]))
    verb = "Added" if added else "You already had"
    await inv.reply(f"{verb} key `{key.fingerprint}`; new workspaces will accept it.")


async def run_playbook(deps: BotDeps, inv: Invocation) -> None:
    """`run NAME PLAYBOOK`: a playbook in a workspace; its output goes to the thread."""
    ws = await deps.core.workspace_named(inv.user.actor, inv.args[0])
    op = await deps.core.run_playbook(inv.user.actor, ws.id, inv.args[1])
    await deps.post_status(inv.channel, inv.user.user_id, op, ws)


async def list_playbooks(deps: BotDeps, inv: Invocation) -> None:
    """`playbooks`: what can be run."""
    catalog = deps.core.playbooks
    found = await catalog.all() if catalog is not None else []
    lines = [f"• `{p.name}` ({p.source.value})" for p in found]
    await inv.reply("\n".join(lines) or "No playbooks yet: ops add them (POST /v1/playbooks).")


def _comment(line: str) -> str:
    """The comment of a public key line, if it has one."""
    parts = line.split(maxsplit=2)
    return parts[2] if len(parts) > 2 else ""


async def help_(deps: BotDeps, inv: Invocation) -> None:
    """`help`."""
    await inv.reply(help_text(deps.config.slash_command))


W = Permission.WRITE_WORKSPACES
R = Permission.READ_WORKSPACES
COMMANDS = (
    Command(
        "create",
        "create [name] [plan=P] [image=I] [ttl=H] [playbooks=A,B]",
        "a new workspace (no arguments: a form)",
        W,
        create,
        0,
        4,
        form_without_args=True,
    ),
    Command("list", "list", "your workspaces", R, list_),
    Command("delete", "delete NAME", "delete a workspace", W, delete, 1, 1),
    Command(
        "start", "start NAME", "power a stopped workspace on", W, power(OperationKind.START), 1, 1
    ),
    Command(
        "stop",
        "stop NAME",
        "shut a workspace down (its disk stays)",
        W,
        power(OperationKind.STOP),
        1,
        1,
    ),
    Command("extend", "extend NAME HOURS", "keep a workspace longer", W, extend, 2, 2),
    Command("ssh", "ssh NAME", "how to reach a workspace", R, ssh, 1, 1),
    Command("keys", "keys add KEY | keys list", "your SSH public keys", W, keys, 1, 40),
    Command("run", "run NAME PLAYBOOK", "run a playbook in a workspace", W, run_playbook, 2, 2),
    Command("playbooks", "playbooks", "the playbooks you can run", R, list_playbooks),
    Command("help", "help", "this text", R, help_),
)
BY_NAME = {command.name: command for command in COMMANDS}


def help_text(slash: str) -> str:
    """Every command with its usage, from the table."""
    lines = [f"`{slash} {c.usage}`: {c.summary}" for c in COMMANDS]
    return "Workspaces from Slack:\n" + "\n".join(lines)


def lookup(slash: str, text: str) -> tuple[Command, list[str]]:
    """The command and its arguments; InvalidInput with a suggestion if it is not one."""
    words = text.split()
    if not words:
        return BY_NAME["help"], []
    command = BY_NAME.get(words[0].lower())
    if command is None:
        close = difflib.get_close_matches(words[0].lower(), list(BY_NAME), n=1)
        hint = f" Did you mean `{slash} {close[0]}`?" if close else ""
        raise InvalidInput(f"`{words[0]}` is not a command.{hint}\n{help_text(slash)}")
    args = words[1:]
    if not command.min_args <= len(args) <= max(command.max_args, command.min_args):
        raise InvalidInput(f"usage: `{slash} {command.usage}`")
    return command, args


async def run(deps: BotDeps, command: Command, inv: Invocation) -> None:
    """Authorise and run one command."""
    require(inv.user.actor, command.permission)
    await command.run(deps, inv)
