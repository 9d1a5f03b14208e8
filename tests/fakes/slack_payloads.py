"""Builders for signed requests exactly as Slack sends them to the app's Request URL.

Bodies are strings: sign them with ``sign``/``signed_headers`` and POST them unchanged.
Enterprise Grid: pass ``enterprise_id`` (workspace in an org), and for org-wide installs
also ``is_enterprise_install=True`` with ``team=None`` (interactivity) or ``team_id=None``
(events: ``authorizations[0].team_id`` becomes null).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Mapping
from types import EllipsisType
from typing import Any
from urllib.parse import urlencode

Json = dict[str, Any]

TOKEN = "verification-token"
APP_ID = "A111"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
ENTERPRISE_NAME = "Acme Grid"
COMMAND_RESPONSE_URL = "https://hooks.slack.com/commands/T111/1111111111/abcdefABCDEF"
ACTION_RESPONSE_URL = "https://hooks.slack.com/actions/T111/2222222222/abcdefABCDEF"
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"

_counter = itertools.count(1)


def _dumps(data: Any) -> str:
    """Compact JSON, as Slack sends it."""
    return json.dumps(data, separators=(",", ":"))


def new_trigger_id() -> str:
    """A fresh, unique trigger_id in Slack's shape."""
    n = next(_counter)
    return f"{1_000_000_000 + n}.{1_700_000_000 + n}.{n:032x}"


def new_event_id() -> str:
    """A fresh, unique Events API event_id."""
    return f"Ev{next(_counter):08X}"


def sign(body: str, secret: str, ts: int | None = None) -> dict[str, str]:
    """Slack's v0 signature headers: HMAC-SHA256 over ``v0:{ts}:{body}``."""
    stamp = str(int(time.time()) if ts is None else ts)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest.hexdigest()}"}


def signed_headers(body: str, secret: str, ts: int | None = None) -> dict[str, str]:
    """``sign`` plus the Content-Type Slack sends for this body (JSON for events)."""
    ctype = JSON_TYPE if body.lstrip().startswith("{") else FORM
    return {"Content-Type": ctype, **sign(body, secret, ts)}


def _enterprise(enterprise_id: str | None, name: str) -> Json | None:
    """The ``enterprise`` object of interactivity payloads."""
    return None if enterprise_id is None else {"id": enterprise_id, "name": name}


def _team(
    team: Mapping[str, Any] | EllipsisType | None,
    team_id: str,
    team_domain: str,
    enterprise_id: str | None,
    enterprise_name: str,
) -> Json | None:
    """The ``team`` object: given, null (org install) or built from the ids."""
    if team is None:
        return None
    if not isinstance(team, EllipsisType):
        return dict(team)
    out: Json = {"id": team_id, "domain": team_domain}
    if enterprise_id is not None:
        out.update(enterprise_id=enterprise_id, enterprise_name=enterprise_name)
    return out


def slash_command(
    text: str,
    user_id: str = "U222",
    command: str = "/workspace",
    channel_id: str = "C111",
    team_id: str | None = "T111",
    enterprise_id: str | None = None,
    trigger_id: str | None = None,
    response_url: str = COMMAND_RESPONSE_URL,
    *,
    channel_name: str = "ops",
    user_name: str = "alice",
    team_domain: str = "acme",
    enterprise_name: str = ENTERPRISE_NAME,
    is_enterprise_install: bool = False,
    api_app_id: str = APP_ID,
    token: str = TOKEN,
) -> str:
    """A slash command body (form-encoded, every field Slack sends; None ids left out)."""
    fields: dict[str, str | None] = {
        "token": token,
        "team_id": team_id,
        "team_domain": team_domain,
        "enterprise_id": enterprise_id,
        "enterprise_name": enterprise_name if enterprise_id is not None else None,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "true" if is_enterprise_install else "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }
    return urlencode({k: v for k, v in fields.items() if v is not None})


def block_action(
    action_id: str,
    value: str | None = None,
    user_id: str = "U222",
    container: Mapping[str, Any] | None = None,
    message: Mapping[str, Any] | None = None,
    team: Mapping[str, Any] | EllipsisType | None = ...,
    *,
    view: Mapping[str, Any] | None = None,
    channel_id: str = "C111",
    channel_name: str = "ops",
    message_ts: str = "1700000000.000100",
    block_id: str = "actions",
    action_type: str = "button",
    selected_option: Mapping[str, Any] | None = None,
    action_fields: Mapping[str, Any] | None = None,
    state_values: Mapping[str, Any] | None = None,
    team_id: str = "T111",
    team_domain: str = "acme",
    enterprise_id: str | None = None,
    enterprise_name: str = ENTERPRISE_NAME,
    is_enterprise_install: bool = False,
    user_name: str = "alice",
    response_url: str = ACTION_RESPONSE_URL,
    trigger_id: str | None = None,
    api_app_id: str = APP_ID,
    token: str = TOKEN,
) -> str:
    """A block_actions body (``payload=`` JSON); with ``view`` it comes from a modal/Home."""
    action: Json = {
        "action_id": action_id,
        "block_id": block_id,
        "type": action_type,
        "action_ts": f"{time.time():.6f}",
    }
    if selected_option is not None:
        action["selected_option"] = dict(selected_option)
    elif value is not None:
        action["value"] = value
    if action_type == "button":
        action["text"] = {"type": "plain_text", "text": value or action_id, "emoji": True}
    action.update(action_fields or {})
    payload: Json = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": token,
        "trigger_id": trigger_id or new_trigger_id(),
        "team": _team(team, team_id, team_domain, enterprise_id, enterprise_name),
        "enterprise": _enterprise(enterprise_id, enterprise_name),
        "is_enterprise_install": is_enterprise_install,
    }
    if view is not None:
        full_view = {"team_id": team_id, "app_id": api_app_id, "bot_id": BOT_ID, **view}
        payload["container"] = (
            dict(container)
            if container is not None
            else {"type": "view", "view_id": full_view.get("id", "V111")}
        )
        payload["view"] = full_view
    else:
        msg: Json = (
            dict(message)
            if message is not None
            else {
                "user": BOT_USER_ID,
                "type": "message",
                "ts": message_ts,
                "bot_id": BOT_ID,
                "app_id": api_app_id,
                "text": "",
                "team": team_id,
                "blocks": [],
            }
        )
        ts = str(msg.get("ts", message_ts))
        payload["container"] = (
            dict(container)
            if container is not None
            else {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel_id,
                "is_ephemeral": False,
            }
        )
        payload["channel"] = {"id": channel_id, "name": channel_name}
        payload["message"] = msg
        payload["response_url"] = response_url
    payload["state"] = {"values": dict(state_values or {})}
    payload["actions"] = [action]
    return urlencode({"payload": _dumps(payload)})


def plain_text_value(value: str | None) -> Json:
    """A plain_text_input entry for ``view.state.values[block][action]``."""
    return {"type": "plain_text_input", "value": value}


def selected_value(value: str, text: str | None = None, kind: str = "static_select") -> Json:
    """A select entry for ``view.state.values[block][action]``."""
    option = {"text": {"type": "plain_text", "text": text or value, "emoji": True}, "value": value}
    return {"type": kind, "selected_option": option}


def view_submission(
    callback_id: str,
    values: Mapping[str, Mapping[str, Any]],
    user_id: str = "U222",
    private_metadata: str = "",
    view_id: str = "V111",
    *,
    team: Mapping[str, Any] | EllipsisType | None = ...,
    team_id: str = "T111",
    team_domain: str = "acme",
    enterprise_id: str | None = None,
    enterprise_name: str = ENTERPRISE_NAME,
    is_enterprise_install: bool = False,
    user_name: str = "alice",
    blocks: list[Json] | None = None,
    title: str = "New workspace",
    view_hash: str = "1700000000.abcdef12",
    external_id: str = "",
    trigger_id: str | None = None,
    response_urls: list[Json] | None = None,
    api_app_id: str = APP_ID,
    token: str = TOKEN,
) -> str:
    """A view_submission body (``payload=`` JSON); ``values`` is ``state.values``."""
    payload: Json = {
        "type": "view_submission",
        "team": _team(team, team_id, team_domain, enterprise_id, enterprise_name),
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": token,
        "trigger_id": trigger_id or new_trigger_id(),
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "blocks": blocks or [],
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": {k: dict(v) for k, v in values.items()}},
            "hash": view_hash,
            "title": {"type": "plain_text", "text": title, "emoji": True},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": {"type": "plain_text", "text": "Cancel", "emoji": True},
            "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": api_app_id,
            "external_id": external_id,
            "app_installed_team_id": team_id,
            "bot_id": BOT_ID,
        },
        "response_urls": response_urls or [],
        "is_enterprise_install": is_enterprise_install,
        "enterprise": _enterprise(enterprise_id, enterprise_name),
    }
    return urlencode({"payload": _dumps(payload)})


def app_home_opened(
    user_id: str = "U222", tab: str = "home", view: Mapping[str, Any] | None = None
) -> Json:
    """The inner ``event`` of app_home_opened (``view`` only once a Home was published)."""
    event: Json = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": f"D{user_id}",
        "tab": tab,
        "event_ts": f"{time.time():.6f}",
    }
    if view is not None:
        event["view"] = dict(view)
    return event


def event(
    event_dict: Mapping[str, Any],
    event_id: str | None = None,
    team_id: str | None = "T111",
    *,
    enterprise_id: str | None = None,
    is_enterprise_install: bool = False,
    bot_user_id: str = BOT_USER_ID,
    event_time: int | None = None,
    is_ext_shared_channel: bool = False,
    api_app_id: str = APP_ID,
    token: str = TOKEN,
) -> str:
    """An Events API ``event_callback`` JSON body; org installs null authorizations' team_id."""
    payload: Json = {"token": token}
    if team_id is not None:
        payload["team_id"] = team_id
    if enterprise_id is not None:
        payload["enterprise_id"] = enterprise_id
    payload.update(
        api_app_id=api_app_id,
        event=dict(event_dict),
        type="event_callback",
        event_id=event_id or new_event_id(),
        event_time=int(time.time()) if event_time is None else event_time,
        authorizations=[
            {
                "enterprise_id": enterprise_id,
                "team_id": None if is_enterprise_install else team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": is_enterprise_install,
            }
        ],
        is_ext_shared_channel=is_ext_shared_channel,
        context_team_id=team_id,
        context_enterprise_id=enterprise_id,
    )
    return _dumps(payload)


def url_verification(challenge: str, token: str = TOKEN) -> str:
    """The url_verification JSON body Slack sends when the Request URL is set."""
    return _dumps({"token": token, "challenge": challenge, "type": "url_verification"})
