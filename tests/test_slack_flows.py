"""Slack flows end to end: signed requests into the real app, the fake Slack's record, the store.

Each test drives the system only the way Slack would (slash commands, button clicks, modal
submissions, Events API deliveries) and checks what users would see in the fake Slack and what
the store holds afterwards. Nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from provisioner.models import Actor, Role, SshKey, Workspace
from provisioner.requests import CreateRequest
from provisioner.settings import Settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import Message
from tests.slack_harness import DEV, OPS, OPS_CHANNEL, OTHER_OPS, SlackWorld, slack_world

ADMIN = Actor("test-admin", Role.ADMIN, "test")
DEV_EMAIL, OPS_EMAIL, OTHER_OPS_EMAIL = (
    "dana.dev@example.com",
    "olga.ops@example.com",
    "omar.ops@example.com",
)
STRANGER, STRANGER_EMAIL = "U333", "eve.dev@example.com"
DECISIONS = ("approval.approved", "approval.denied")


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[SlackWorld]:
    """Slack on, against a fresh fake."""
    async with slack_world(settings) as built:
        yield built


# ----- helpers -------------------------------------------------------------------------------


def top_level(world: SlackWorld, channel: str) -> list[Message]:
    """Messages in a channel, without thread replies."""
    return [m for m in world.fake.channel(channel) if m.thread_ts is None]


def dm_top_level(world: SlackWorld, user_id: str) -> list[Message]:
    """The app's DMs to a user, without thread replies."""
    return [m for m in world.fake.dms(user_id) if m.thread_ts is None]


def block_texts(message: Message | dict[str, Any]) -> str:
    """Every text in a message's or view's blocks, joined (what a reader sees)."""
    blocks = message.blocks if isinstance(message, Message) else message.get("blocks")
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks or [])
    return "\n".join(out)


def buttons(blocks: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Every button element in a list of blocks, in order."""
    found: list[dict[str, Any]] = []
    for block in blocks or []:
        for element in block.get("elements", []):
            if element.get("type") == "button":
                found.append(element)
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") == "button":
            found.append(accessory)
    return found


async def workspace(world: SlackWorld, name: str) -> Workspace:
    """The newest workspace called `name`, as the store holds it."""
    page = await world.system.core.list_workspaces(ADMIN, name=name)
    assert page.items, f"no workspace named {name}"
    return page.items[-1]


async def stored_keys(world: SlackWorld, owner: str) -> list[SshKey]:
    """The SSH keys the store holds for an owner."""
    assert world.system.bot is not None
    return await world.system.bot.deps.keys.list(owner)


async def audit_actions(world: SlackWorld, target: str | None = None) -> list[tuple[str, str]]:
    """(action, actor) of every audit event, oldest first."""
    page = await world.system.audit.list(target=target, limit=500)
    return [(event.action, event.actor) for event in page.items]


async def ask(world: SlackWorld, text: str, user_id: str = DEV, **extra: Any) -> str:
    """Run a slash command and return what its user was told privately."""
    before = len(world.fake.responses(0))
    resp = await world.command(text, user_id=user_id, **extra)
    assert resp.status == 200
    immediate = await resp.text()
    await world.settle()
    answers = world.fake.responses(0)[before:]
    if immediate:
        return immediate
    assert answers, f"no answer to /workspace {text}"
    assert all(a.get("response_type") == "ephemeral" for a in answers)
    return "\n".join(str(a.get("text", "")) for a in answers)


async def create_running(world: SlackWorld, name: str, user_id: str = DEV, *opts: str) -> Workspace:
    """Create a workspace from Slack and wait until it runs."""
    resp = await world.command(" ".join(("create", name, *opts)), user_id=user_id)
    assert resp.status == 200
    await world.settle()
    ws = await workspace(world, name)
    assert ws.state.value == "running"
    return ws


async def request_large(world: SlackWorld, name: str, user_id: str = DEV) -> tuple[Message, str]:
    """Ask for a gated workspace; the ops-channel message and the approval id."""
    assert (await world.command(f"create {name} plan=large", user_id=user_id)).status == 200
    await world.settle()
    [request] = [m for m in top_level(world, OPS_CHANNEL) if name in m.text]
    approve, deny = buttons(request.blocks)
    assert (approve["action_id"], deny["action_id"]) == ("approve_request", "deny_request")
    assert approve["value"] == deny["value"]
    return copy.deepcopy(request), str(approve["value"])  # as the clicker's client shows it


def click(request: Message, user_id: str, action: str, **extra: Any) -> str:
    """A click on a button of the ops-channel message."""
    value = next(b["value"] for b in buttons(request.blocks) if b["action_id"] == action)
    return sp.block_action(
        action,
        value,
        user_id=user_id,
        channel_id=OPS_CHANNEL,
        message=request.to_payload(),
        block_id=f"approval:{value}",
        **extra,
    )


def home_click(world: SlackWorld, user_id: str, action: str, ws: Workspace) -> str:
    """A click on a button of the user's App Home (container type view, no channel)."""
    home = world.fake.home(user_id)
    assert home is not None
    return sp.block_action(
        action,
        ws.id,
        user_id=user_id,
        view={"id": home["id"], "type": "home", "blocks": home["blocks"], "hash": home["hash"]},
        block_id=f"act:{ws.id}",
    )


def home_actions(world: SlackWorld, user_id: str, ws: Workspace) -> list[str]:
    """The action ids of the buttons the user's Home shows for a workspace."""
    home = world.fake.home(user_id)
    assert home is not None
    [row] = [b for b in home["blocks"] if b.get("block_id") == f"act:{ws.id}"]
    return [b["action_id"] for b in buttons([row])]


def publishes(world: SlackWorld, user_id: str) -> int:
    """How many views.publish calls the app made for a user."""
    return sum(1 for c in world.fake.calls_of("views.publish") if c.params["user_id"] == user_id)


async def set_expiry(world: SlackWorld, ws: Workspace, hours_from_now: float) -> None:
    """Move a workspace's expiry, as the passing of time would."""
    async with world.system.store.transaction() as tx:
        await tx.update_workspace(
            ws.id, expires_at=datetime.now(UTC) + timedelta(hours=hours_from_now)
        )


def ed25519_public_key(tmp_path: Path) -> tuple[str, str]:
    """A real `ssh-ed25519 AAAA… comment` line and its SHA256 fingerprint, computed apart."""
    keygen = shutil.which("ssh-keygen")
    if keygen is not None:
        path = tmp_path / "id_ed25519"
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "dana@laptop", "-f", str(path)],
            check=True,
        )
        listed = subprocess.run(
            [keygen, "-l", "-E", "sha256", "-f", f"{path}.pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return Path(f"{path}.pub").read_text().strip(), listed[1]
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    )
    blob = base64.b64decode(raw.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return raw.decode() + " dana@laptop", f"SHA256:{digest}"


# ----- 1. deny ---------------------------------------------------------------------------------


async def test_deny_asks_for_a_reason_then_denies_and_tells_everyone(world: SlackWorld) -> None:
    request, approval_id = await request_large(world, "big")
    assert (await world.post(click(request, OPS, "deny_request"))).status == 200
    await world.settle()
    [opened] = world.fake.calls_of("views.open")
    modal = opened.params["view"]
    assert modal["callback_id"] == "deny_reason" and modal["private_metadata"] == approval_id
    assert opened.reply["ok"] is True
    nothing_decided = await world.system.approvals.get(approval_id)
    assert nothing_decided.state.value == "pending"

    for empty in ("", "   \n ", None):
        body = sp.view_submission(
            "deny_reason",
            {"reason": {"reason": sp.plain_text_value(empty)}},
            user_id=OPS,
            private_metadata=approval_id,
            view_id=opened.reply["view"]["id"],
            title="Deny request",
        )
        resp = await world.post(body)
        assert resp.status == 200
        answer = await resp.json()
        assert answer["response_action"] == "errors" and set(answer["errors"]) == {"reason"}
    await world.settle()
    assert (await world.system.approvals.get(approval_id)).state.value == "pending"

    reason = "large needs a cost centre; ask again with one"
    body = sp.view_submission(
        "deny_reason",
        {"reason": {"reason": sp.plain_text_value(reason)}},
        user_id=OPS,
        private_metadata=approval_id,
        view_id=opened.reply["view"]["id"],
        title="Deny request",
    )
    resp = await world.post(body)
    assert resp.status == 200 and await resp.text() == ""  # an empty ack closes the modal
    await world.settle()

    denied = await world.system.approvals.get(approval_id)
    assert (denied.state.value, denied.decided_by, denied.reason) == ("denied", OPS_EMAIL, reason)
    decided = world.fake.messages[(OPS_CHANNEL, request.ts)]
    assert f"Denied by {OPS_EMAIL}" in decided.text
    assert reason in block_texts(decided)
    assert buttons(decided.blocks) == []
    assert all(block["type"] != "actions" for block in decided.blocks or [])
    assert any("Denied" in m.text for m in world.fake.dms(DEV))
    [status] = top_level(world, "C111")  # the requester's own status message says why
    assert "cancelled" in status.text and reason in status.text
    assert (await workspace(world, "big")).state.value == "denied"
    assert [a for a in await audit_actions(world) if a[0] in DECISIONS] == [
        ("approval.denied", OPS_EMAIL)
    ]
    # A click on the (stale) Approve button afterwards changes nothing.
    assert (await world.post(click(request, OTHER_OPS, "approve_request"))).status == 200
    await world.settle()
    assert "already denied by olga.ops@example.com" in world.fake.ephemerals[-1].text
    assert (await workspace(world, "big")).state.value == "denied"


async def test_the_denied_requester_is_told_why_in_the_dm(world: SlackWorld) -> None:
    request, approval_id = await request_large(world, "big")
    await world.post(click(request, OPS, "deny_request"))
    await world.settle()
    reason = "large needs a cost centre"
    await world.post(
        sp.view_submission(
            "deny_reason",
            {"reason": {"reason": sp.plain_text_value(reason)}},
            user_id=OPS,
            private_metadata=approval_id,
        )
    )
    await world.settle()
    [dm] = [m for m in world.fake.dms(DEV) if "Denied" in m.text]
    assert reason in dm.text + block_texts(dm)


async def test_a_click_on_a_withdrawn_request_says_so_plainly(world: SlackWorld) -> None:
    request, approval_id = await request_large(world, "big")
    assert (await world.command("delete big")).status == 200
    await world.settle()
    assert (await world.system.approvals.get(approval_id)).state.value == "withdrawn"
    outcome = world.fake.messages[(OPS_CHANNEL, request.ts)]
    assert "Withdrawn by the requester" in outcome.text and buttons(outcome.blocks) == []
    assert (await world.post(click(request, OPS, "approve_request"))).status == 200
    await world.settle()
    [told] = world.fake.ephemerals
    assert "withdrawn" in told.text and "None" not in told.text


# ----- 2. own request ---------------------------------------------------------------------------


async def test_only_other_operators_decide_a_request(world: SlackWorld) -> None:
    request, approval_id = await request_large(world, "mine", user_id=OPS)
    assert "<@UOPS1>" in request.text
    assert (await world.post(click(request, OPS, "approve_request"))).status == 200
    await world.settle()
    [told] = [e for e in world.fake.ephemerals if e.recipient == OPS]
    assert told.channel == OPS_CHANNEL and "your own request" in told.text
    assert (await world.system.approvals.get(approval_id)).state.value == "pending"
    assert (await workspace(world, "mine")).state.value == "awaiting_approval"
    assert [a for a in await audit_actions(world) if a[0] in DECISIONS] == []
    unchanged = world.fake.messages[(OPS_CHANNEL, request.ts)]
    assert unchanged.edits == 0 and len(buttons(unchanged.blocks)) == 2

    # Denying your own request through the modal is refused the same way.
    await world.post(
        sp.view_submission(
            "deny_reason",
            {"reason": {"reason": sp.plain_text_value("changed my mind")}},
            user_id=OPS,
            private_metadata=approval_id,
        )
    )
    await world.settle()
    assert any("your own request" in m.text for m in world.fake.dms(OPS))
    assert (await world.system.approvals.get(approval_id)).state.value == "pending"

    # A developer may not deny either (the decision is refused after the modal).
    await world.post(
        sp.view_submission(
            "deny_reason",
            {"reason": {"reason": sp.plain_text_value("no")}},
            user_id=DEV,
            private_metadata=approval_id,
        )
    )
    await world.settle()
    assert any("may not" in m.text for m in world.fake.dms(DEV))
    assert (await world.system.approvals.get(approval_id)).state.value == "pending"
    assert world.fake.messages[(OPS_CHANNEL, request.ts)].edits == 0

    # Another operator may.
    await world.post(click(request, OTHER_OPS, "approve_request"))
    await world.settle()
    assert (await workspace(world, "mine")).state.value == "running"


# ----- 3. create modal --------------------------------------------------------------------------


def form(
    name: str | None = None,
    plan: str = "small",
    image: str = "debian-12",
    ttl: str | None = None,
    playbooks: str | None = None,
) -> dict[str, dict[str, Any]]:
    """state.values of the create modal as Slack sends them."""
    return {
        "name": {"name": sp.plain_text_value(name)},
        "plan": {"plan": sp.selected_value(plan)},
        "image": {"image": sp.selected_value(image)},
        "ttl": {"ttl": {"type": "number_input", "value": ttl}},
        "playbooks": {"playbooks": sp.plain_text_value(playbooks)},
    }


async def test_create_without_arguments_opens_a_form_that_checks_each_field(
    world: SlackWorld,
) -> None:
    resp = await world.command("create", channel_id="C777")
    assert resp.status == 200
    await world.settle()
    [opened] = world.fake.calls_of("views.open")
    modal = opened.params["view"]
    assert modal["callback_id"] == "create_ws" and opened.reply["ok"] is True
    assert json.loads(modal["private_metadata"]) == {"channel": "C777"}
    by_block = {b["block_id"]: b["element"] for b in modal["blocks"]}
    catalog = world.system.core.catalog
    plan_options = [o["value"] for o in by_block["plan"]["options"]]
    image_options = [o["value"] for o in by_block["image"]["options"]]
    assert plan_options == list(catalog.plans) and image_options == list(catalog.images)
    view_id = opened.reply["view"]["id"]

    def submit(values: dict[str, dict[str, Any]]) -> str:
        return sp.view_submission(
            "create_ws",
            values,
            user_id=DEV,
            private_metadata=modal["private_metadata"],
            view_id=view_id,
        )

    for bad_name in ("Bad_Name", "-x", "a" * 41):
        resp = await world.post(submit(form(name=bad_name)))
        assert resp.status == 200
        answer = await resp.json()
        assert answer["response_action"] == "errors" and set(answer["errors"]) == {"name"}
    resp = await world.post(submit(form(name="fine", playbooks="site.yml\n")))
    answer = await resp.json()
    assert answer["response_action"] == "errors" and set(answer["errors"]) == {"playbooks"}
    resp = await world.post(submit(form(name="fine", plan="huge")))
    assert set((await resp.json())["errors"]) == {"plan"}
    resp = await world.post(submit(form(name="fine", ttl="100000")))
    assert set((await resp.json())["errors"]) == {"ttl"}
    await world.settle()
    assert (await world.system.core.list_workspaces(ADMIN)).items == ()
    assert world.fake.calls_of("chat.postMessage") == []

    resp = await world.post(submit(form(name="from-form", ttl="8")))
    assert resp.status == 200 and await resp.text() == ""
    await world.settle()
    ws = await workspace(world, "from-form")
    assert ws.state.value == "running" and ws.owner == DEV_EMAIL
    assert ws.expires_at is not None
    assert timedelta(hours=7) < ws.expires_at - datetime.now(UTC) <= timedelta(hours=8)
    [status] = top_level(world, "C777")
    assert "create of from-form done" in status.text
    assert any("from-form is ready" in m.text for m in world.fake.dms(DEV))

    # The same view submitted again (a second click on Create) creates nothing new.
    await world.post(submit(form(name="from-form", ttl="8")))
    await world.settle()
    assert len((await world.system.core.list_workspaces(ADMIN)).items) == 1


async def test_a_form_submitted_twice_has_one_status_message(world: SlackWorld) -> None:
    body = sp.view_submission(
        "create_ws", form(name="twice"), user_id=DEV, private_metadata='{"channel":"C777"}'
    )
    first, second = await asyncio.gather(world.post(body), world.post(body))
    assert (first.status, second.status) == (200, 200)
    await world.settle()
    assert len((await world.system.core.list_workspaces(ADMIN)).items) == 1
    statuses = [m.text for m in top_level(world, "C777")]
    assert len(statuses) == 1, statuses


# ----- 4. App Home ------------------------------------------------------------------------------


async def test_app_home_lists_workspaces_and_its_buttons_act(world: SlackWorld) -> None:
    ws = await create_running(world, "demo")
    published = publishes(world, DEV)
    resp = await world.post(sp.event(sp.app_home_opened(DEV, tab="messages")))
    assert resp.status == 200
    await world.settle()
    assert publishes(world, DEV) == published

    resp = await world.post(sp.event(sp.app_home_opened(DEV, tab="home")))
    assert resp.status == 200
    await world.settle()
    assert publishes(world, DEV) == published + 1
    home = world.fake.home(DEV)
    assert home is not None and home["type"] == "home"
    assert "demo" in block_texts(home)
    assert home_actions(world, DEV, ws) == ["home_stop", "extend_ws", "home_delete"]
    assert all(
        b["value"] == ws.id
        for b in buttons(home["blocks"])
        if b["action_id"] != "open_create_modal"
    )

    async def press(action: str) -> None:
        before = publishes(world, DEV)
        assert (await world.post(home_click(world, DEV, action, ws))).status == 200
        await world.settle()
        assert publishes(world, DEV) > before

    await press("home_stop")
    assert (await workspace(world, "demo")).state.value == "stopped"
    assert any("stop of demo done" in m.text for m in dm_top_level(world, DEV))
    assert home_actions(world, DEV, ws) == ["home_start", "extend_ws", "home_delete"]

    await press("home_start")
    assert (await workspace(world, "demo")).state.value == "running"
    assert any("start of demo done" in m.text for m in dm_top_level(world, DEV))
    assert home_actions(world, DEV, ws) == ["home_stop", "extend_ws", "home_delete"]

    old_expiry = (await workspace(world, "demo")).expires_at
    await press("extend_ws")
    new_expiry = (await workspace(world, "demo")).expires_at
    assert old_expiry is not None and new_expiry is not None
    assert new_expiry - old_expiry >= timedelta(hours=23, minutes=59)
    assert any("now expires" in m.text for m in world.fake.dms(DEV))

    # New workspace: the same form, its status message goes to the DM (no channel here).
    assert (await world.post(home_click(world, DEV, "open_create_modal", ws))).status == 200
    await world.settle()
    [opened] = world.fake.calls_of("views.open")
    assert opened.params["view"]["callback_id"] == "create_ws"
    submitted = sp.view_submission(
        "create_ws",
        form(name="from-home"),
        user_id=DEV,
        private_metadata=opened.params["view"]["private_metadata"],
        view_id=opened.reply["view"]["id"],
    )
    assert (await world.post(submitted)).status == 200
    await world.settle()
    assert (await workspace(world, "from-home")).state.value == "running"
    assert any("create of from-home done" in m.text for m in dm_top_level(world, DEV))

    await press("home_delete")
    assert (await workspace(world, "demo")).state.value == "deleted"
    assert any("delete of demo done" in m.text for m in dm_top_level(world, DEV))
    home = world.fake.home(DEV)
    assert home is not None and "*demo*" not in block_texts(home)
    assert "*from-home*" in block_texts(home)
    assert world.fake.ephemerals == []  # no Slack errors told to the user on the way


# ----- 5. commands ------------------------------------------------------------------------------


async def test_commands_on_a_named_workspace(world: SlackWorld, tmp_path: Path) -> None:
    assert "You have no workspaces" in await ask(world, "list")
    ws = await create_running(world, "demo")
    listed = await ask(world, "list")
    assert "*demo*" in listed and "running" in listed

    before = ws.expires_at
    assert before is not None
    answer = await ask(world, "extend demo 5")
    assert "*demo* now expires" in answer
    after = (await workspace(world, "demo")).expires_at
    assert after is not None and timedelta(hours=4, minutes=59) < after - before
    assert "whole number" in await ask(world, "extend demo soon")

    reach = await ask(world, "ssh demo")
    assert f"@{ws.address}`: on node local's network (Tailscale is off)" in reach

    for verb, state in (("stop", "stopped"), ("start", "running"), ("delete", "deleted")):
        assert (await world.command(f"{verb} demo")).status == 200
        await world.settle()
        assert (await workspace(world, "demo")).state.value == state
        assert any(f"{verb} of demo done" in m.text for m in top_level(world, "C111"))
    assert "you have no workspace named 'demo'" in await ask(world, "ssh demo")

    key, fingerprint = ed25519_public_key(tmp_path)
    answer = await ask(world, f"keys add {key}")
    assert f"Added key `{fingerprint}`" in answer
    assert "You already had" in await ask(world, f"keys add {key}")
    assert [k.fingerprint for k in await stored_keys(world, DEV_EMAIL)] == [fingerprint]
    garbage = await ask(world, "keys add garbage")
    assert garbage.startswith(":warning:") and "not an SSH public key" in garbage
    assert "ssh-ed25519 AAAA" in garbage  # shows what a key looks like
    damaged = await ask(world, f"keys add {key[:41]}")  # base64 cut mid-quantum
    assert ":warning:" in damaged and "damaged" in damaged


async def test_keys_list_playbooks_and_run_answer_in_plain_words(
    world: SlackWorld, tmp_path: Path
) -> None:
    assert "No SSH keys yet" in await ask(world, "keys list")
    key, fingerprint = ed25519_public_key(tmp_path)
    await ask(world, f"keys add {key}")
    assert fingerprint in await ask(world, "keys list")
    private = "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA"
    refused = await ask(world, f"keys add {private}")
    assert "private key" in refused and "b3BlbnNzaC1rZXkt" not in refused
    assert all("b3BlbnNzaC1rZXkt" not in str(call) for call in world.fake.calls)

    assert "No playbooks yet" in await ask(world, "playbooks")
    await create_running(world, "demo")
    unknown = await ask(world, "run demo nothing")
    assert ":warning:" in unknown and "nothing" in unknown
    assert "unknown option" in await ask(world, "create x flavour=big")


async def test_a_truncated_key_is_refused(world: SlackWorld, tmp_path: Path) -> None:
    key, _ = ed25519_public_key(tmp_path)
    cut = key[:40]  # 'ssh-ed25519 ' and 28 base64 chars: the type, then 6 bytes, no key
    answer = await ask(world, f"keys add {cut}")
    assert answer.startswith(":warning:")
    assert await stored_keys(world, DEV_EMAIL) == []


async def test_another_users_workspace_is_never_revealed(world: SlackWorld) -> None:
    ws = await create_running(world, "demo")
    world.fake.add_user(STRANGER, email=STRANGER_EMAIL)
    for text in ("stop demo", "start demo", "delete demo", "ssh demo", "extend demo 5"):
        answer = await ask(world, text, user_id=STRANGER)
        assert "you have no workspace named 'demo'" in answer, text
        assert DEV_EMAIL not in answer and ws.id not in answer and "running" not in answer
    assert "You have no workspaces" in await ask(world, "list", user_id=STRANGER)
    assert (await workspace(world, "demo")).state.value == "running"
    assert (await workspace(world, "demo")).expires_at == ws.expires_at

    # Nor through App Home: their Home lacks it, and a forged click does nothing.
    await world.post(sp.event(sp.app_home_opened(STRANGER)))
    await world.settle()
    home = world.fake.home(STRANGER)
    assert home is not None and "demo" not in block_texts(home)
    forged = sp.block_action(
        "home_delete", ws.id, user_id=STRANGER, view={"id": home["id"], "type": "home"}
    )
    assert (await world.post(forged)).status == 200
    await world.settle()
    assert (await workspace(world, "demo")).state.value == "running"
    [warning] = dm_top_level(world, STRANGER)
    assert warning.text.startswith(":warning:") and DEV_EMAIL not in warning.text


# ----- 6. resilience ----------------------------------------------------------------------------


async def test_slack_hiccups_do_not_lose_a_request(world: SlackWorld) -> None:
    """users.info answers 429 once (retried after Retry-After); the app is not in the channel
    the command came from (the status message goes to the requester's DM instead)."""
    world.fake.fail_next("users.info", status=429, headers={"Retry-After": "1"})
    world.fake.fail_next(
        "chat.postMessage", status=200, body={"ok": False, "error": "not_in_channel"}
    )
    assert (await world.command("create demo", channel_id="CSECRET")).status == 200
    await world.settle()
    lookups = world.fake.calls_of("users.info")
    assert [c.status for c in lookups] == [429, 200]
    assert lookups[1].at - lookups[0].at >= 1.0  # Retry-After was honoured
    [refused] = world.fake.calls_of("chat.postMessage")[:1]
    assert refused.params["channel"] == "CSECRET" and refused.reply["error"] == "not_in_channel"
    assert top_level(world, "CSECRET") == []
    [status] = [m for m in dm_top_level(world, DEV) if "create of demo" in m.text]
    assert "done" in status.text and status.edits >= 1
    assert world.fake.thread(status.channel, status.ts) != []
    assert any("demo is ready" in m.text for m in world.fake.dms(DEV))
    assert (await workspace(world, "demo")).state.value == "running"
    assert world.fake.responses(0) == []  # no error told to the user


async def test_a_retried_event_delivery_is_answered_and_harmless(world: SlackWorld) -> None:
    """Slack redelivers an event it saw no 2xx for within 3 s, with the same event_id.

    The app does not deduplicate by event_id: each delivery republishes the Home once.
    views.publish replaces the whole view, so the retry is harmless; this pins that each
    delivery causes at most one publish and that the Home is the same afterwards.
    """
    await create_running(world, "demo")
    body = sp.event(sp.app_home_opened(DEV), event_id="Ev0RETRY1")
    first = await world.post(body)
    await world.settle()
    home_after_first = world.fake.home(DEV)
    published = publishes(world, DEV)
    retry = await world.post(
        body, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    await world.settle()
    assert (first.status, retry.status) == (200, 200)
    assert publishes(world, DEV) - published <= 1
    home = world.fake.home(DEV)
    assert home is not None and home_after_first is not None
    assert home["blocks"] == home_after_first["blocks"]


async def test_unknown_interactions_answer_without_5xx(world: SlackWorld) -> None:
    """Nothing we never sent may break the endpoint; Bolt answers 404 "unhandled request".

    (A 404 to an event would make Slack retry it; the manifest subscribes only to
    app_home_opened, which is handled, so no other event type is ever delivered.)
    """
    bodies = {
        "action": sp.block_action("no_such_action", "x"),
        "home-action": sp.block_action("no_such_action", "x", view={"id": "V1", "type": "home"}),
        "view": sp.view_submission("no_such_callback", {}),
        "event": sp.event({"type": "member_joined_channel", "user": DEV, "channel": "C111"}),
        "shortcut": "payload=" + json.dumps({"type": "shortcut", "callback_id": "nope"}),
    }
    for kind, body in bodies.items():
        resp = await world.post(body)
        assert resp.status < 500, kind
    await world.settle()
    assert world.fake.calls_of("chat.postMessage") == []
    assert world.fake.calls_of("chat.postEphemeral") == []


# ----- 7. Enterprise Grid -----------------------------------------------------------------------


async def test_enterprise_grid_commands_and_clicks_work(world: SlackWorld) -> None:
    grid_user = "W0GRID1"
    world.fake.add_user(grid_user, email="gina.grid@example.com", enterprise_id="E111")
    resp = await world.command(
        "create grid-big plan=large", user_id=grid_user, enterprise_id="E111"
    )
    assert resp.status == 200
    await world.settle()
    [request] = top_level(world, OPS_CHANNEL)
    assert "<@W0GRID1>" in request.text
    org_click = click(
        request, OPS, "approve_request", team=None, enterprise_id="E111", is_enterprise_install=True
    )
    assert (await world.post(org_click)).status == 200
    await world.settle()
    ws = await workspace(world, "grid-big")
    assert ws.state.value == "running" and ws.owner == "gina.grid@example.com"
    assert "Approved by olga.ops@example.com" in world.fake.messages[(OPS_CHANNEL, request.ts)].text
    assert any("grid-big is ready" in m.text for m in world.fake.dms(grid_user))

    org_event = sp.event(
        sp.app_home_opened(grid_user),
        team_id=None,
        enterprise_id="E111",
        is_enterprise_install=True,
    )
    assert (await world.post(org_event)).status == 200
    await world.settle()
    home = world.fake.home(grid_user)
    assert home is not None and "grid-big" in block_texts(home)
    stop = sp.block_action(
        "home_stop",
        ws.id,
        user_id=grid_user,
        view={"id": home["id"], "type": "home"},
        team=None,
        enterprise_id="E111",
        is_enterprise_install=True,
    )
    assert (await world.post(stop)).status == 200
    await world.settle()
    assert (await workspace(world, "grid-big")).state.value == "stopped"


# ----- 8. TTL reminders -------------------------------------------------------------------------


async def test_expiry_reminder_once_until_extended_and_near_expiry_again(
    world: SlackWorld,
) -> None:
    bot = world.system.bot
    assert bot is not None
    ws, _ = await world.system.core.create_workspace(
        ADMIN,
        CreateRequest(plan="small", image="debian-12", name="soon", owner=DEV_EMAIL, ttl_hours=5),
    )
    await world.system.core.create_workspace(
        ADMIN,
        CreateRequest(plan="small", image="debian-12", name="later", owner=DEV_EMAIL),
    )
    await world.settle()
    assert world.fake.dms(DEV) == []

    await bot.remind()
    [lookup] = world.fake.calls_of("users.lookupByEmail")
    assert lookup.params["email"] == DEV_EMAIL
    [reminder] = world.fake.dms(DEV)
    assert "soon" in reminder.text and "later" not in reminder.text + block_texts(reminder)
    [extend] = buttons(reminder.blocks)
    assert (extend["action_id"], extend["value"]) == ("extend_ws", ws.id)

    await bot.remind()
    await bot.remind()
    assert len(world.fake.dms(DEV)) == 1

    before = (await workspace(world, "soon")).expires_at
    press = sp.block_action(
        "extend_ws",
        ws.id,
        user_id=DEV,
        channel_id=world.fake.dm_channel(DEV),
        message=reminder.to_payload(),
    )
    assert (await world.post(press)).status == 200
    await world.settle()
    after = (await workspace(world, "soon")).expires_at
    assert before is not None and after is not None
    assert after - before >= timedelta(hours=23, minutes=59)
    [told] = [e for e in world.fake.ephemerals if e.recipient == DEV]
    assert "now expires" in told.text

    await bot.remind()  # 29 h left: not due
    assert [m for m in world.fake.dms(DEV) if "expires soon" in m.text] == [reminder]

    await set_expiry(world, ws, 3)  # a day later
    await bot.remind()
    reminders = [m for m in world.fake.dms(DEV) if "expires soon" in m.text]
    assert len(reminders) == 2 and "soon" in reminders[-1].text
    await bot.remind()
    assert len([m for m in world.fake.dms(DEV) if "expires soon" in m.text]) == 2


# ----- 9. concurrent approval -------------------------------------------------------------------


async def test_two_operators_approving_at_once_approve_once(world: SlackWorld) -> None:
    request, approval_id = await request_large(world, "big")
    first, second = await asyncio.gather(
        world.post(click(request, OPS, "approve_request")),
        world.post(click(request, OTHER_OPS, "approve_request")),
    )
    assert (first.status, second.status) == (200, 200)
    await world.settle()
    decisions = [a for a in await audit_actions(world) if a[0] in DECISIONS]
    assert len(decisions) == 1 and decisions[0][0] == "approval.approved"
    winner = decisions[0][1]
    assert winner in (OPS_EMAIL, OTHER_OPS_EMAIL)
    loser = OTHER_OPS if winner == OPS_EMAIL else OPS
    [told] = world.fake.ephemerals
    assert told.recipient == loser and told.channel == OPS_CHANNEL
    assert "already approved" in told.text or "at the same moment" in told.text
    decided = world.fake.messages[(OPS_CHANNEL, request.ts)]
    assert f"Approved by {winner}" in decided.text and buttons(decided.blocks) == []
    assert (await world.system.approvals.get(approval_id)).decided_by == winner
    assert (await workspace(world, "big")).state.value == "running"
    assert len([m for m in world.fake.dms(DEV) if "is ready" in m.text]) == 1


async def test_the_slower_operator_is_told_who_approved(
    world: SlackWorld, backend: str, request: pytest.FixtureRequest
) -> None:
    """Both decisions read the approval while it is pending, then race to write it.

    The test holds the approval row (PostgreSQL) or the write lock (SQLite) until both
    clicks wait on it, so the race happens every time.
    """
    slack_request, approval_id = await request_large(world, "big")
    store = world.system.store
    async with store.transaction() as tx:
        if backend == "postgresql":
            await tx.conn.execute(
                sa.text("SELECT id FROM approvals WHERE id = :id FOR UPDATE"), {"id": approval_id}
            )
        else:
            await tx.conn.execute(sa.text("SELECT 1"))
        clicks = [
            world.post(click(slack_request, OPS, "approve_request")),
            world.post(click(slack_request, OTHER_OPS, "approve_request")),
        ]
        assert [r.status for r in await asyncio.gather(*clicks)] == [200, 200]
        await world.fake.wait_for("users.info", 2)
        await both_waiting_on_a_lock(world, backend)
    await world.settle()
    decisions = [a for a in await audit_actions(world) if a[0] in DECISIONS]
    assert len(decisions) == 1
    [told] = world.fake.ephemerals
    assert f"already approved by {decisions[0][1]}" in told.text


async def both_waiting_on_a_lock(world: SlackWorld, backend: str) -> None:
    """Until two sessions wait for a lock (PostgreSQL), or a moment for SQLite's BEGIN."""
    if backend != "postgresql":
        await asyncio.sleep(0.3)
        return
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(250):
        async with world.system.store.read() as tx:
            if (await tx.conn.execute(query)).scalar_one() >= 2:
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the two decisions never both waited on the approval")
