"""The Slack fake and payload builders behave like Slack for the real slack-sdk and Bolt."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import extract_enterprise_id, extract_team_id, parse_body
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlack

SECRET = "test-secret"
FORM_TYPE = "application/x-www-form-urlencoded"
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "Approve *dev-alice*?"}}]


def bolt_request(body: str, ts: int | None = None) -> AsyncBoltRequest:
    """A Bolt request carrying a body signed like Slack signs it."""
    headers: dict[str, str | Sequence[str]] = {**sp.signed_headers(body, SECRET, ts)}
    return AsyncBoltRequest(body=body, headers=headers)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    """A running fake Slack on loopback."""
    async with FakeSlack.running() as running:
        yield running


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    """The real SDK client pointed at the fake, retrying 429s once."""
    web = AsyncWebClient(token="xoxb-test", base_url=fake.api_url)
    web.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    return web


async def test_post_then_update_changes_what_users_see(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    """chat.postMessage hands out increasing ts; chat.update replaces text and blocks."""
    first = await client.chat_postMessage(channel="C111", text="Approval needed", blocks=BLOCKS)
    second = await client.chat_postMessage(channel="C111", text="other")
    assert (first["ts"], second["ts"]) == ("1700000000.000001", "1700000000.000002")
    assert first["channel"] == "C111"
    assert first["message"]["blocks"] == BLOCKS and first["message"]["bot_id"] == "B0BOT"
    assert fake.calls_of("chat.postMessage")[0].params["blocks"] == BLOCKS

    done = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "Approved by <@U333>"}]}]
    answer = await client.chat_update(channel="C111", ts=first["ts"], text="Approved", blocks=done)
    assert answer["ts"] == first["ts"] and answer["text"] == "Approved"
    shown = fake.messages[("C111", first["ts"])]
    assert (shown.text, shown.blocks, shown.edits) == ("Approved", done, 1)
    assert shown.history[0]["text"] == "Approval needed"

    await client.chat_update(channel="C111", ts=first["ts"], text="Approved, creating")
    assert fake.messages[("C111", first["ts"])].blocks == done  # left out: kept

    with pytest.raises(SlackApiError) as missing:
        await client.chat_update(channel="C111", ts="1.2", text="x")
    assert missing.value.response["error"] == "message_not_found"


async def test_threads_dms_ephemerals_and_delete(fake: FakeSlack, client: AsyncWebClient) -> None:
    """Thread replies, DMs via conversations.open, ephemerals and deletes are all visible."""
    parent = await client.chat_postMessage(channel="C111", text="Creating dev-alice")
    await client.chat_postMessage(channel="C111", thread_ts=parent["ts"], text="VM booted")
    await client.chat_postMessage(channel="C111", thread_ts=parent["ts"], text="Ready")
    assert [m.text for m in fake.thread("C111", parent["ts"])] == ["VM booted", "Ready"]
    assert [m.text for m in fake.channel("C111")] == ["Creating dev-alice"]

    opened = await client.conversations_open(users="U222")
    assert opened["channel"]["id"] == "DU222"
    again = await client.conversations_open(users=["U222"])
    assert again["already_open"] is True
    await client.chat_postMessage(channel=opened["channel"]["id"], text="Your VM is ready")
    by_user_id = await client.chat_postMessage(channel="U222", text="also via user id")
    assert by_user_id["channel"] == "DU222"
    assert [m.text for m in fake.dms("U222")] == ["Your VM is ready", "also via user id"]

    eph = await client.chat_postEphemeral(channel="C111", user="U333", text="Already approved")
    assert eph["message_ts"]
    assert [(m.recipient, m.text) for m in fake.ephemerals] == [("U333", "Already approved")]

    await client.chat_delete(channel="C111", ts=parent["ts"])
    assert ("C111", parent["ts"]) not in fake.messages
    assert fake.deleted[0].text == "Creating dev-alice"


async def test_429_with_retry_after_is_retried_by_the_sdk(
    fake: FakeSlack, client: AsyncWebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's AsyncRateLimitErrorRetryHandler waits Retry-After and then succeeds."""
    monkeypatch.setattr(random, "random", lambda: 0.0)  # the handler adds random() jitter
    fake.fail_next("chat.postMessage")  # 429, ratelimited, Retry-After: 1
    answer = await client.chat_postMessage(channel="C111", text="hello")
    assert answer["ok"] is True
    first, second = fake.calls_of("chat.postMessage")
    assert (first.status, first.reply["error"], second.status) == (429, "ratelimited", 200)
    assert second.at - first.at >= 1.0
    assert len(fake.messages) == 1


async def test_429_without_the_handler_raises(fake: FakeSlack) -> None:
    """Without a rate-limit handler the SDK raises SlackApiError carrying status and header."""
    plain = AsyncWebClient(token="xoxb-test", base_url=fake.api_url)
    fake.fail_next("chat.update", headers={"Retry-After": "30"})
    with pytest.raises(SlackApiError) as raised:
        await plain.chat_update(channel="C111", ts="1.1", text="x")
    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "30"

    fake.fail_next("views.open", status=200, body={"ok": False, "error": "expired_trigger_id"})
    with pytest.raises(SlackApiError) as expired:
        await plain.views_open(trigger_id="1.2.3", view={"type": "modal", "blocks": []})
    assert expired.value.response["error"] == "expired_trigger_id"


async def test_hang_makes_the_sdk_time_out(fake: FakeSlack) -> None:
    """A hung answer trips the client timeout; the SDK does not retry a plain timeout."""
    slow = AsyncWebClient(token="xoxb-test", base_url=fake.api_url, timeout=0.2)  # type: ignore[arg-type]
    fake.hang("auth.test", 5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await slow.auth_test()
    assert time.monotonic() - started < 1.0
    assert len(fake.calls_of("auth.test")) == 1
    fake.hang("auth.test", 0)
    assert (await slow.auth_test())["user_id"] == "U0BOT"


async def test_users_info_and_lookup(fake: FakeSlack, client: AsyncWebClient) -> None:
    """Configured users are found with their e-mail; unknown ones give Slack's errors."""
    fake.add_user("U222", email="alice@example.com", team_id="T111", enterprise_id=None)
    fake.add_user("W333", email="bob@example.com", team_id="T111", enterprise_id="E111")
    info = await client.users_info(user="U222")
    assert info["user"]["profile"]["email"] == "alice@example.com"
    assert info["user"]["team_id"] == "T111" and "enterprise_user" not in info["user"]
    grid = await client.users_info(user="W333")
    assert grid["user"]["enterprise_user"]["enterprise_id"] == "E111"
    assert fake.calls_of("users.info")[0].params == {"user": "U222"}  # GET query string

    found = await client.users_lookupByEmail(email="Alice@Example.com")
    assert found["user"]["id"] == "U222"
    with pytest.raises(SlackApiError) as unknown:
        await client.users_info(user="U999")
    assert unknown.value.response["error"] == "user_not_found"
    with pytest.raises(SlackApiError) as nobody:
        await client.users_lookupByEmail(email="carol@example.com")
    assert nobody.value.response["error"] == "users_not_found"


async def test_views_publish_open_update(fake: FakeSlack, client: AsyncWebClient) -> None:
    """views.* record the view object, hand out ids and hashes, and check hash and size."""
    home = {"type": "home", "blocks": BLOCKS}
    published = await client.views_publish(user_id="U222", view=home)
    view = published["view"]
    assert view["id"] and view["hash"] and view["type"] == "home"
    assert fake.calls_of("views.publish")[0].params["view"] == home
    assert fake.home("U222") == view
    again = await client.views_publish(user_id="U222", view=home, hash=view["hash"])
    assert again["view"]["id"] == view["id"] and again["view"]["hash"] != view["hash"]
    with pytest.raises(SlackApiError) as stale:
        await client.views_publish(user_id="U222", view=home, hash=view["hash"])
    assert stale.value.response["error"] == "hash_conflict"
    too_big = {"type": "home", "blocks": [{"type": "divider"}] * 101}
    with pytest.raises(SlackApiError) as large:
        await client.views_publish(user_id="U222", view=too_big)
    assert large.value.response["error"] == "invalid_arguments"

    modal = {
        "type": "modal",
        "callback_id": "create_ws",
        "title": {"type": "plain_text", "text": "Wait"},
    }
    opened = await client.views_open(trigger_id="1.2.3", view=modal)
    assert opened["view"]["callback_id"] == "create_ws"
    updated = await client.views_update(
        view_id=opened["view"]["id"], hash=opened["view"]["hash"], view={**modal, "blocks": BLOCKS}
    )
    assert fake.views[opened["view"]["id"]]["blocks"] == BLOCKS == updated["view"]["blocks"]


async def test_auth_unknown_method_and_form_bodies(fake: FakeSlack) -> None:
    """Tokens are checked, unknown methods refused, form JSON strings decoded into objects."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.api_url}auth.test") as response:
            assert await response.json() == {"ok": False, "error": "not_authed"}
        bad = {"Authorization": "Bearer nope"}
        async with session.post(f"{fake.api_url}auth.test", headers=bad) as response:
            assert (await response.json())["error"] == "invalid_auth"
        good = {"Authorization": "Bearer xoxb-test"}
        async with session.post(f"{fake.api_url}no.such", headers=good) as response:
            assert (await response.json())["error"] == "unknown_method"
        form = {"channel": "C111", "text": "hi", "blocks": json.dumps(BLOCKS)}
        async with session.post(
            f"{fake.api_url}chat.postMessage", data=form, headers=good
        ) as response:
            assert (await response.json())["ok"] is True
    assert fake.calls_of("chat.postMessage")[0].params["blocks"] == BLOCKS
    assert fake.calls_of("auth.test")[1].token == "nope"


async def test_wait_for_and_response_url(fake: FakeSlack) -> None:
    """wait_for times out with a useful message; response_url posts are recorded."""
    with pytest.raises(TimeoutError, match=r"saw 0 of 1 chat\.update"):
        await fake.wait_for("chat.update", timeout=0.05)
    async with aiohttp.ClientSession() as session:
        url = fake.response_url(7)
        async with session.post(url, json={"text": "Working on it"}) as response:
            assert await response.text() == "ok"
        async with session.post(url, json={}) as response:
            assert response.status == 400 and await response.text() == "no_text"
    assert fake.responses(7) == [{"text": "Working on it"}, {}]
    assert len(await fake.wait_for("response_url", count=2)) == 2


def test_signing_verifies_with_slack_sdk() -> None:
    """sign() output passes SignatureVerifier; a 6-minute-old timestamp does not."""
    verifier = SignatureVerifier(SECRET)
    for body in (
        sp.slash_command("create payload-svc"),
        sp.block_action("approve_request", "req-42", "U333"),
        sp.view_submission("create_ws", {"name_b": {"name_a": sp.plain_text_value("x")}}),
        sp.event(sp.app_home_opened("U222")),
        sp.url_verification("abc123"),
    ):
        headers = sp.sign(body, SECRET)
        assert verifier.is_valid(
            body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
        )
    old = sp.sign("x=1", SECRET, ts=int(time.time()) - 360)
    assert not verifier.is_valid("x=1", old["X-Slack-Request-Timestamp"], old["X-Slack-Signature"])


def test_payload_shapes_and_enterprise_grid() -> None:
    """Builders parse with Bolt's parser; Grid variants resolve team/enterprise like Bolt."""
    command = dict(parse_qsl(sp.slash_command("create large", enterprise_id="E111")))
    assert command["command"] == "/workspace" and command["enterprise_id"] == "E111"
    assert command["is_enterprise_install"] == "false" and command["trigger_id"]

    action = parse_body(sp.block_action("approve_request", "req-42", "U333"), FORM_TYPE)
    assert action["container"]["type"] == "message" and action["response_url"]
    assert action["actions"][0]["value"] == "req-42" and extract_team_id(action) == "T111"

    home_button = parse_body(
        sp.block_action("open_create_modal", view={"id": "V9", "type": "home"}), FORM_TYPE
    )
    assert home_button["container"] == {"type": "view", "view_id": "V9"}
    assert not {"channel", "message", "response_url"} & home_button.keys()

    org = parse_body(
        sp.block_action(
            "approve_request",
            "req-42",
            "W333",
            team=None,
            enterprise_id="E111",
            is_enterprise_install=True,
        ),
        FORM_TYPE,
    )
    assert org["team"] is None and org["enterprise"]["id"] == "E111"
    assert (extract_team_id(org), extract_enterprise_id(org)) == ("T111", "E111")

    submitted = parse_body(
        sp.view_submission(
            "create_ws",
            {"size_b": {"size_a": sp.selected_value("large")}},
            private_metadata='{"channel":"C111"}',
        ),
        FORM_TYPE,
    )
    state = submitted["view"]["state"]["values"]
    assert state["size_b"]["size_a"]["selected_option"]["value"] == "large"

    org_event = json.loads(
        sp.event(sp.app_home_opened("W111"), enterprise_id="E111", is_enterprise_install=True)
    )
    assert org_event["authorizations"][0]["team_id"] is None
    assert (extract_team_id(org_event), extract_enterprise_id(org_event)) == (None, "E111")


async def test_bolt_app_end_to_end(fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signed button click reaches Bolt, whose respond() and chat.update land in the fake."""
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_CLIENT_ID",
        "SLACK_CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    bolt = AsyncApp(
        client=AsyncWebClient(token="xoxb-test", base_url=fake.api_url),
        signing_secret=SECRET,
        process_before_response=True,
    )

    @bolt.action("approve_request")
    async def approve(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await respond(text="Approved", replace_original=True)
        await respond(text="Only you see this")

    @bolt.command("/workspace")
    async def workspace(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack(f"Queued {command['text']}")
        await respond(text=f"Working on: {command['text']}", response_type="in_channel")

    posted = await AsyncWebClient(token="xoxb-test", base_url=fake.api_url).chat_postMessage(
        channel="C111", text="Approve?", blocks=BLOCKS
    )
    original = fake.messages[("C111", posted["ts"])]
    body = sp.block_action(
        "approve_request",
        "req-42",
        "U333",
        message=original.to_payload(),
        response_url=fake.response_url(1, channel="C111", message_ts=posted["ts"], user_id="U333"),
    )
    response = await bolt.async_dispatch(bolt_request(body))
    assert response.status == 200
    assert fake.messages[("C111", posted["ts"])].text == "Approved"
    assert [(m.recipient, m.text) for m in fake.ephemerals] == [("U333", "Only you see this")]
    assert len(fake.calls_of("auth.test")) == 1

    command = sp.slash_command("create x", response_url=fake.response_url(2, channel="C111"))
    acked = await bolt.async_dispatch(bolt_request(command))
    assert (acked.status, acked.body) == (200, "Queued create x")
    assert fake.responses(2) == [{"text": "Working on: create x", "response_type": "in_channel"}]
    assert fake.channel("C111")[-1].text == "Working on: create x"
    stale = await bolt.async_dispatch(bolt_request(command, ts=int(time.time()) - 301))
    assert stale.status == 401
