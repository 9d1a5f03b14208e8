"""A small, faithful local fake of the Slack Web API and of response_url hooks for tests.

Usage::

    async with FakeSlack.running() as fake:
        client = AsyncWebClient(token="xoxb-test", base_url=fake.api_url)
        fake.add_user("U222", email="alice@example.com")
        ...
        await fake.wait_for("chat.update")
        assert fake.messages[("C111", ts)].text == "Approved"

Or serve ``fake.app`` with pytest-aiohttp's ``aiohttp_server`` and set
``fake.base_url = str(server.make_url("")).rstrip("/")``.

Socket Mode: ``apps.connections.open`` (app-level ``xapp-`` token) hands out a loopback
``ws://…/link?ticket=…`` URL; the fake says ``hello`` there, answers pings, and lets a test
push envelopes and read the client's acks::

    envelope = FakeSlack.socket_envelope("slash_commands", sp.slash_command("help"))
    envelope_id = await fake.socket_send(envelope)
    ack = await fake.socket_ack(envelope_id, timeout=3.0)   # {"envelope_id": …, "payload"?: …}
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

Json = dict[str, Any]

TS_BASE = 1_700_000_000
MESSAGE_BLOCK_LIMIT = 50
VIEW_BLOCK_LIMIT = 100
PRIVATE_METADATA_LIMIT = 3000
JSON_FIELDS = frozenset({"blocks", "attachments", "view", "metadata"})
DEFAULT_SCOPES = "commands,chat:write,im:write,users:read,users:read.email"


@dataclass
class Call:
    """One request the fake received, with its merged params and the answer it got."""

    method: str
    params: dict[str, Any]
    headers: Mapping[str, str]
    at: float
    path: str = ""
    status: int = 0
    reply: Any = None

    @property
    def token(self) -> str | None:
        """The token the caller sent (Authorization: Bearer, else a token param)."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip():
            return auth[7:].strip()
        token = self.params.get("token")
        return str(token) if token else None

    @property
    def answered(self) -> bool:
        """Whether the fake has already replied to this call."""
        return self.status != 0


@dataclass
class Message:
    """A message as a user would see it now (latest text/blocks after updates)."""

    channel: str
    ts: str
    text: str = ""
    blocks: list[Json] | None = None
    attachments: list[Json] | None = None
    metadata: Json | None = None
    thread_ts: str | None = None
    reply_broadcast: bool = False
    author: str = "U0BOT"
    bot_id: str = "B0BOT"
    app_id: str = "A111"
    team: str = "T111"
    recipient: str | None = None
    history: list[Json] = field(default_factory=list)

    @property
    def edits(self) -> int:
        """How many times the message was changed after it was posted."""
        return len(self.history)

    @property
    def ephemeral(self) -> bool:
        """Whether only one user (``recipient``) sees this message."""
        return self.recipient is not None

    def to_payload(self) -> Json:
        """The message object in Slack's shape (API replies, block_actions ``message``)."""
        out: Json = {
            "user": self.author,
            "type": "message",
            "ts": self.ts,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": self.text,
            "team": self.team,
        }
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.attachments is not None:
            out["attachments"] = self.attachments
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        if self.history:
            out["edited"] = {"user": self.author, "ts": self.history[-1]["edited_ts"]}
        return out


@dataclass
class _Fault:
    """A canned failure answer still to be served `remaining` times."""

    status: int
    body: Json | str
    headers: dict[str, str]
    remaining: int


@dataclass
class _Hang:
    """A delay before answering, for `remaining` calls (None: until cleared)."""

    seconds: float
    remaining: int | None


@dataclass(frozen=True)
class _Identity:
    """Who a token belongs to, as auth.test reports it."""

    team_id: str
    team: str
    url: str
    user_id: str
    bot_id: str
    enterprise_id: str | None
    is_enterprise_install: bool


@dataclass(frozen=True)
class _Binding:
    """What a response_url belongs to: a channel, maybe a message, maybe a user."""

    channel: str | None
    message_ts: str | None
    user_id: str | None


class _BadBody(Exception):
    """A request body Slack would reject before looking at the method."""


def _error(code: str, *messages: str) -> Json:
    """Slack's error reply shape, with response_metadata.messages when given."""
    out: Json = {"ok": False, "error": code}
    if messages:
        out["response_metadata"] = {"messages": list(messages)}
    return out


def _flag(value: Any) -> bool:
    """A Slack boolean arg as sent by JSON (true) or form/query ("1", "true")."""
    return value is True or (isinstance(value, int | str) and str(value).lower() in {"1", "true"})


def _is_user_id(value: str) -> bool:
    """Whether an id looks like a user (U… or Grid W…)."""
    return len(value) > 1 and value[0] in "UW" and value.isalnum()


def _decode_json_fields(params: dict[str, Any]) -> None:
    """Turn form/query JSON strings for blocks/view/attachments/metadata into objects."""
    for key in JSON_FIELDS & params.keys():
        value = params[key]
        if isinstance(value, str) and value.lstrip()[:1] in {"[", "{"}:
            with suppress(ValueError):  # else left a string: invalid_*_format later
                params[key] = json.loads(value)


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Params merged from the query string, a form body and a JSON body."""
    params: dict[str, Any] = dict(request.query)
    ctype = request.content_type
    if ctype == "multipart/form-data":
        form = await request.post()
        for key, value in form.items():
            params[key] = value.file.read() if isinstance(value, web.FileField) else value
    else:
        raw = await request.read()
        if raw and ctype == "application/json":
            try:
                data = json.loads(raw)
            except ValueError:
                raise _BadBody("invalid_json") from None
            if not isinstance(data, dict):
                raise _BadBody("json_not_object")
            params.update(data)
        elif raw:
            params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    _decode_json_fields(params)
    return params


def _blocks_error(value: Any, limit: int, pointer: str, code: str) -> Json | None:
    """Slack's answer to invalid blocks, or None when they are acceptable."""
    if value is None:
        return None
    if not isinstance(value, list):
        return _error("invalid_blocks_format" if code == "invalid_blocks" else code)
    if len(value) > limit:
        text = f"no more than {limit} items allowed [json-pointer:{pointer}]"
        if code == "invalid_blocks":
            return {**_error(code, f"[ERROR] {text}"), "errors": [text]}
        return _error(code, f"[ERROR] {text}")
    for index, block in enumerate(value):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            text = f"missing required field: type [json-pointer:{pointer}/{index}]"
            return _error(code, f"[ERROR] {text}")
    return None


def _view_error(view: Any) -> Json | None:
    """Slack's answer to an invalid view object, or None when acceptable."""
    if not isinstance(view, dict):
        return _error("invalid_arguments", "[ERROR] missing required field: view")
    blocks = view.get("blocks", [])
    problem = _blocks_error(blocks, VIEW_BLOCK_LIMIT, "/view/blocks", "invalid_arguments")
    if problem is not None:
        return problem
    metadata = view.get("private_metadata", "")
    if isinstance(metadata, str) and len(metadata) > PRIVATE_METADATA_LIMIT:
        return _error(
            "invalid_arguments",
            "[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]",
        )
    return None


@dataclass
class SocketAck:
    """One JSON frame with an ``envelope_id`` the client sent back over the socket."""

    envelope_id: str
    body: Json
    at: float
    sent_at: float | None = None

    @property
    def latency(self) -> float | None:
        """Seconds from the fake sending the envelope to the ack arriving (None: unknown id)."""
        return None if self.sent_at is None else self.at - self.sent_at

    @property
    def payload(self) -> Json | None:
        """The response payload the ack carried, if any."""
        payload = self.body.get("payload")
        return payload if isinstance(payload, dict) else None


@dataclass
class SocketConnection:
    """One WebSocket connection a client opened on ``/link``."""

    ticket: str
    ws: web.WebSocketResponse = field(repr=False)
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None
    pings: int = 0
    sent: list[Json] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)

    @property
    def open(self) -> bool:
        """Whether the connection is still up."""
        return self.closed_at is None and not self.ws.closed


class FakeSlack:
    """An aiohttp app answering like slack.com/api/* and hooks.slack.com response_urls."""

    def __init__(
        self,
        *,
        team_id: str = "T111",
        team: str = "Acme",
        team_domain: str = "acme",
        enterprise_id: str | None = None,
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A111",
        scopes: str = DEFAULT_SCOPES,
    ) -> None:
        """A fresh fake whose default xoxb- identity is the given workspace's bot."""
        self.team_id, self.app_id, self.scopes = team_id, app_id, scopes
        self._default = _Identity(
            team_id=team_id,
            team=team,
            url=f"https://{team_domain}.slack.com/",
            user_id=bot_user_id,
            bot_id=bot_id,
            enterprise_id=enterprise_id,
            is_enterprise_install=False,
        )
        self.base_url = ""
        self.calls: list[Call] = []
        self._tokens: dict[str, _Identity] = {}
        self._users: dict[str, Json] = {}
        self._messages: dict[tuple[str, str], Message] = {}
        self._deleted: list[Message] = []
        self._ephemerals: list[Message] = []
        self._views: dict[str, Json] = {}
        self._home: dict[str, str] = {}
        self._external: dict[str, str] = {}
        self._opened: set[str] = set()
        self._bindings: dict[str, _Binding] = {}
        self._responses: dict[str, list[Json]] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._hangs: dict[str, _Hang] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, Callable[[Call, _Identity], Json]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "conversations.open": self._conversations_open,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
        }
        self.app = web.Application()
        self._setup_socket_mode()
        self.app.router.add_get("/api/{method}", self._api)
        self.app.router.add_post("/api/{method}", self._api)
        self.app.router.add_post("/response_url/{rid}", self._response_url)
        self.app.on_shutdown.append(self._on_shutdown)

    # ----- lifecycle -------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def running(cls, **options: Any) -> AsyncIterator[Self]:
        """A fake served on 127.0.0.1 on a free port for the duration of the block."""
        fake = cls(**options)
        await fake.start()
        try:
            yield fake
        finally:
            await fake.stop()

    async def start(self) -> None:
        """Serve the fake on 127.0.0.1 on a free port and set ``base_url``."""
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(self.app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop serving; hanging answers are released at once."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_shutdown(self, _app: web.Application) -> None:
        """Release hanging handlers so shutdown does not wait for them."""
        self._closing.set()

    @property
    def api_url(self) -> str:
        """The ``base_url`` for AsyncWebClient (ends with ``/api/``)."""
        if not self.base_url:
            raise RuntimeError("FakeSlack is not served: use FakeSlack.running() or set base_url")
        return f"{self.base_url}/api/"

    def response_url(
        self,
        n: int | str,
        *,
        channel: str | None = None,
        message_ts: str | None = None,
        user_id: str | None = None,
    ) -> str:
        """A loopback response_url; bind it to a channel/message so posts change ``messages``."""
        if not self.base_url:
            raise RuntimeError("FakeSlack is not served: use FakeSlack.running() or set base_url")
        self._bindings[str(n)] = _Binding(channel, message_ts, user_id)
        return f"{self.base_url}/response_url/{n}"

    # ----- configuration ----------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        *,
        email: str | None = None,
        team_id: str | None = None,
        enterprise_id: str | None = None,
        name: str | None = None,
        real_name: str | None = None,
        is_bot: bool = False,
        deleted: bool = False,
    ) -> Json:
        """Make users.info / users.lookupByEmail know a user; returns the user object."""
        team = team_id or self.team_id
        handle = name or (email.split("@", 1)[0] if email else user_id.lower())
        full = real_name or handle.title()
        profile: Json = {
            "real_name": full,
            "display_name": handle,
            "real_name_normalized": full,
            "display_name_normalized": handle,
            "team": team,
        }
        if email is not None:
            profile["email"] = email
        user: Json = {
            "id": user_id,
            "team_id": team,
            "name": handle,
            "deleted": deleted,
            "real_name": full,
            "tz": "Europe/Berlin",
            "tz_label": "Central European Time",
            "tz_offset": 3600,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": TS_BASE,
        }
        if enterprise_id is not None:
            user["enterprise_user"] = {
                "id": user_id,
                "enterprise_id": enterprise_id,
                "enterprise_name": "Enterprise",
                "is_admin": False,
                "is_owner": False,
                "is_primary_owner": False,
                "teams": [team],
            }
        self._users[user_id] = user
        return user

    def add_token(
        self,
        token: str,
        *,
        team_id: str,
        team: str = "Workspace",
        enterprise_id: str | None = None,
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        is_enterprise_install: bool = False,
    ) -> None:
        """Accept another token (any prefix) and say whose it is in auth.test."""
        self._tokens[token] = _Identity(
            team_id=team_id,
            team=team,
            url=f"https://{team.lower()}.slack.com/",
            user_id=bot_user_id,
            bot_id=bot_id,
            enterprise_id=enterprise_id,
            is_enterprise_install=is_enterprise_install,
        )

    def fail_next(
        self,
        method: str,
        status: int = 429,
        body: Json | str | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with this failure (str body: not JSON)."""
        if body is None:
            body = _error("ratelimited") if status == 429 else _error("fatal_error")
        if headers is None:
            headers = {"Retry-After": "1"} if status == 429 else {}
        fault = _Fault(status, body, dict(headers), times)
        self._faults.setdefault(method, []).append(fault)

    def hang(self, method: str, seconds: float, times: int | None = None) -> None:
        """Delay answers to `method` (all of them, or `times`); seconds <= 0 clears."""
        if seconds <= 0:
            self._hangs.pop(method, None)
        else:
            self._hangs[method] = _Hang(seconds, times)

    # ----- inspection -------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        """Every call of one method (or "response_url"), oldest first."""
        return [call for call in self.calls if call.method == method]

    async def wait_for(
        self, method: str, count: int = 1, timeout: float = 5.0, *, answered: bool = True
    ) -> list[Call]:
        """Poll until `count` calls of `method` were seen (and answered); TimeoutError if not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            calls = [c for c in self.calls_of(method) if c.answered or not answered]
            if len(calls) >= count:
                return calls
            if loop.time() >= deadline:
                seen = [c.method for c in self.calls]
                raise TimeoutError(
                    f"saw {len(calls)} of {count} {method} calls in {timeout}s; all calls: {seen}"
                )
            await asyncio.sleep(0.005)

    @property
    def messages(self) -> Mapping[tuple[str, str], Message]:
        """Live messages by (channel, ts), as users see them now (deleted ones gone)."""
        return MappingProxyType(self._messages)

    @property
    def deleted(self) -> list[Message]:
        """Messages removed by chat.delete or delete_original, oldest first."""
        return list(self._deleted)

    @property
    def ephemerals(self) -> list[Message]:
        """Ephemeral messages (chat.postEphemeral, response_url), oldest first."""
        return list(self._ephemerals)

    @property
    def views(self) -> Mapping[str, Json]:
        """Open modals and published Home views by view id, latest version."""
        return MappingProxyType(self._views)

    @staticmethod
    def dm_channel(user_id: str) -> str:
        """The DM channel id the fake uses for a user: ``D`` + user id."""
        return f"D{user_id}"

    def channel(self, channel: str) -> list[Message]:
        """Top-level messages of a channel (no thread replies unless broadcast), by ts."""
        return sorted(
            (
                m
                for m in self._messages.values()
                if m.channel == channel and (m.thread_ts in {None, m.ts} or m.reply_broadcast)
            ),
            key=lambda m: m.ts,
        )

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies in the thread under (channel, ts), oldest first."""
        return sorted(
            (
                m
                for m in self._messages.values()
                if m.channel == channel and m.thread_ts == ts and m.ts != ts
            ),
            key=lambda m: m.ts,
        )

    def dms(self, user_id: str) -> list[Message]:
        """Every message in the app's DM with a user (replies included), by ts."""
        dm = self.dm_channel(user_id)
        return sorted((m for m in self._messages.values() if m.channel == dm), key=lambda m: m.ts)

    def home(self, user_id: str) -> Json | None:
        """The Home tab view last published for a user."""
        view_id = self._home.get(user_id)
        return None if view_id is None else self._views[view_id]

    def responses(self, n: int | str) -> list[Json]:
        """JSON bodies posted to ``response_url(n)``, oldest first."""
        return list(self._responses.get(str(n), []))

    # ----- HTTP handlers ----------------------------------------------------------------

    def _record(self, method: str, params: dict[str, Any], request: web.Request) -> Call:
        """Append a call to the log."""
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        call = Call(method, params, headers, time.monotonic(), path=request.path)
        self.calls.append(call)
        return call

    async def _delay(self, method: str) -> None:
        """Wait out a configured hang (released early on shutdown)."""
        hang = self._hangs.get(method)
        if hang is None:
            return
        if hang.remaining is not None:
            hang.remaining -= 1
            if hang.remaining <= 0:
                del self._hangs[method]
        with suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), hang.seconds)

    def _fault(self, method: str) -> _Fault | None:
        """The injected failure to serve now, if any."""
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.pop(0)
        return fault

    def _identity(self, call: Call) -> _Identity | str:
        """Whose token the call carries, or the error code to answer."""
        token = call.token
        if token is None:
            return "not_authed"
        if token in self._tokens:
            return self._tokens[token]
        if token.startswith("xoxb-"):
            return self._default
        return "invalid_auth"

    def _answer(
        self, call: Call, status: int, body: Json | str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        """Finish a call: remember the answer and build the HTTP response."""
        call.status, call.reply = status, body
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html", headers=headers)
        return web.json_response(body, status=status, headers=headers)

    async def _api(self, request: web.Request) -> web.Response:
        """POST|GET /api/{method}: record, maybe hang or fail, then answer like Slack."""
        method = request.match_info["method"]
        try:
            params = await _read_params(request)
        except _BadBody as bad:
            call = self._record(method, {}, request)
            return self._answer(call, 200, _error(str(bad)))
        call = self._record(method, params, request)
        await self._delay(method)
        who = self._identity(call)
        if not isinstance(who, _Identity):
            return self._answer(call, 200, _error(who))
        scopes = {"x-oauth-scopes": self.scopes, "x-accepted-oauth-scopes": ""}
        fault = self._fault(method)
        if fault is not None:
            return self._answer(call, fault.status, fault.body, {**scopes, **fault.headers})
        handler = self._handlers.get(method)
        if handler is None:
            return self._answer(call, 200, {**_error("unknown_method"), "req_method": method})
        return self._answer(call, 200, handler(call, who), scopes)

    async def _response_url(self, request: web.Request) -> web.Response:
        """POST /response_url/{rid}: record and apply like hooks.slack.com would."""
        rid = request.match_info["rid"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        call = self._record("response_url", body if isinstance(body, dict) else {}, request)
        await self._delay("response_url")
        fault = self._fault("response_url")
        if fault is not None:
            return self._answer(call, fault.status, fault.body, fault.headers)
        if not isinstance(body, dict):
            return self._answer(call, 400, "invalid_payload")
        self._responses.setdefault(rid, []).append(body)
        has_content = any(body.get(k) for k in ("text", "blocks", "attachments"))
        if not has_content and not _flag(body.get("delete_original")):
            return self._answer(call, 400, "no_text")
        self._apply_response(self._bindings.get(rid, _Binding(None, None, None)), body)
        return self._answer(call, 200, "ok")

    def _apply_response(self, bound: _Binding, body: Json) -> None:
        """Change what users see for a response_url post, when the url is bound."""
        original = (
            self._messages.get((bound.channel, bound.message_ts))
            if bound.channel and bound.message_ts
            else None
        )
        if _flag(body.get("delete_original")):
            if original is not None:
                self._deleted.append(self._messages.pop((original.channel, original.ts)))
            return
        if _flag(body.get("replace_original")) and original is not None:
            self._edit(original, {k: body.get(k) for k in ("text", "blocks", "attachments")})
            return
        if bound.channel is None:
            return
        message = self._new_message(bound.channel, body, self._default)
        if body.get("response_type") == "in_channel":
            self._messages[(message.channel, message.ts)] = message
        else:
            message.recipient = bound.user_id or ""
            self._ephemerals.append(message)

    # ----- methods ----------------------------------------------------------------------

    def _next_ts(self) -> str:
        """The next message ts: "1700000000.000001", "1700000000.000002", …."""
        n = next(self._ts)
        return f"{TS_BASE + n // 1_000_000}.{n % 1_000_000:06d}"

    def _new_message(self, channel: str, params: Mapping[str, Any], who: _Identity) -> Message:
        """A message built from chat.* / response_url params with a fresh ts."""
        return Message(
            channel=channel,
            ts=self._next_ts(),
            text=str(params.get("text") or params.get("markdown_text") or ""),
            blocks=params.get("blocks"),
            attachments=params.get("attachments"),
            metadata=params.get("metadata") or None,
            thread_ts=params.get("thread_ts") or None,
            reply_broadcast=_flag(params.get("reply_broadcast")),
            author=who.user_id,
            bot_id=who.bot_id,
            app_id=self.app_id,
            team=who.team_id,
        )

    def _edit(self, message: Message, changes: Mapping[str, Any]) -> None:
        """Apply an update, keeping the previous version in ``history``."""
        message.history.append(
            {
                "text": message.text,
                "blocks": message.blocks,
                "attachments": message.attachments,
                "edited_ts": f"{int(time.time())}.000000",
            }
        )
        if "text" in changes:
            message.text = str(changes["text"] or "")
        if "blocks" in changes:
            message.blocks = changes["blocks"]
        if "attachments" in changes:
            message.attachments = changes["attachments"]
        if "metadata" in changes:
            message.metadata = changes["metadata"] or None

    def _message_problem(self, p: Mapping[str, Any]) -> Json | None:
        """Slack's answer to bad message content, or None."""
        problem = _blocks_error(p.get("blocks"), MESSAGE_BLOCK_LIMIT, "/blocks", "invalid_blocks")
        if problem is not None:
            return problem
        if p.get("attachments") is not None and not isinstance(p.get("attachments"), list):
            return _error("invalid_attachments")
        return None

    def _auth_test(self, _call: Call, who: _Identity) -> Json:
        """auth.test for a bot token."""
        out: Json = {
            "ok": True,
            "url": who.url,
            "team": who.team,
            "user": "bot",
            "team_id": who.team_id,
            "user_id": who.user_id,
            "bot_id": who.bot_id,
            "is_enterprise_install": who.is_enterprise_install,
        }
        if who.enterprise_id is not None:
            out["enterprise_id"] = who.enterprise_id
        return out

    def _chat_post_message(self, call: Call, who: _Identity) -> Json:
        """chat.postMessage: a user id as channel posts into the app's DM with them."""
        p = call.params
        channel = str(p.get("channel") or "")
        if not channel:
            return _error("channel_not_found")
        if _is_user_id(channel):
            channel = self.dm_channel(channel)
        problem = self._message_problem(p)
        if problem is not None:
            return problem
        if not any(p.get(k) for k in ("text", "markdown_text", "blocks", "attachments")):
            return _error("no_text")
        message = self._new_message(channel, p, who)
        self._messages[(channel, message.ts)] = message
        return {"ok": True, "channel": channel, "ts": message.ts, "message": message.to_payload()}

    def _chat_update(self, call: Call, _who: _Identity) -> Json:
        """chat.update: fields left out keep their value (Slack keeps blocks/attachments)."""
        p = call.params
        channel, ts = str(p.get("channel") or ""), str(p.get("ts") or "")
        if not channel or _is_user_id(channel):
            return _error("channel_not_found")
        message = self._messages.get((channel, ts))
        if message is None:
            return _error("message_not_found")
        problem = self._message_problem(p)
        if problem is not None:
            return problem
        fields = ("text", "blocks", "attachments", "metadata", "markdown_text")
        if not any(k in p for k in fields):
            return _error("no_text")
        changes: dict[str, Any] = {
            k: p[k] for k in ("text", "blocks", "attachments", "metadata") if k in p
        }
        if "markdown_text" in p:
            changes["text"] = p["markdown_text"]
        self._edit(message, changes)
        payload = message.to_payload()
        del payload["ts"]
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": message.text,
            "message": payload,
        }

    def _chat_post_ephemeral(self, call: Call, who: _Identity) -> Json:
        """chat.postEphemeral: recorded in ``ephemerals`` with the recipient."""
        p = call.params
        channel, user = str(p.get("channel") or ""), str(p.get("user") or "")
        if not channel:
            return _error("channel_not_found")
        if not _is_user_id(user):
            return _error("user_not_in_channel")
        if _is_user_id(channel):
            channel = self.dm_channel(channel)
        problem = self._message_problem(p)
        if problem is not None:
            return problem
        if not any(p.get(k) for k in ("text", "markdown_text", "blocks", "attachments")):
            return _error("no_text")
        message = self._new_message(channel, p, who)
        message.recipient = user
        self._ephemerals.append(message)
        return {"ok": True, "message_ts": message.ts}

    def _chat_delete(self, call: Call, _who: _Identity) -> Json:
        """chat.delete: the message leaves ``messages`` for ``deleted``."""
        p = call.params
        channel, ts = str(p.get("channel") or ""), str(p.get("ts") or "")
        if not channel or _is_user_id(channel):
            return _error("channel_not_found")
        message = self._messages.pop((channel, ts), None)
        if message is None:
            return _error("message_not_found")
        self._deleted.append(message)
        return {"ok": True, "channel": channel, "ts": ts}

    def _conversations_open(self, call: Call, _who: _Identity) -> Json:
        """conversations.open: one user gives ``D`` + user id, several an MPIM ``G…``."""
        p = call.params
        if p.get("channel"):
            channel_id, user = str(p["channel"]), None
        else:
            users = [u.strip() for u in str(p.get("users") or "").split(",") if u.strip()]
            if not users:
                return _error("users_list_not_supplied")
            if not all(_is_user_id(u) for u in users):
                return _error("user_not_found")
            if len(users) > 8:
                return _error("too_many_users")
            if len(users) == 1:
                channel_id, user = self.dm_channel(users[0]), users[0]
            else:
                digest = hashlib.sha1(",".join(sorted(users)).encode()).hexdigest()
                channel_id, user = "G" + digest[:10].upper(), None
        out: Json = {"ok": True}
        if channel_id in self._opened:
            out.update(no_op=True, already_open=True)
        self._opened.add(channel_id)
        channel: Json = {"id": channel_id}
        if _flag(p.get("return_im")):
            channel.update(
                created=TS_BASE,
                is_im=user is not None,
                is_org_shared=False,
                user=user,
                last_read="0000000000.000000",
                latest=None,
                unread_count=0,
                unread_count_display=0,
                is_open=True,
                priority=0,
            )
        out["channel"] = channel
        return out

    def _store_view(self, view: Json, who: _Identity, view_id: str | None = None) -> Json:
        """Save a view as Slack returns it (ids, hash, empty state) and return it."""
        n = next(self._ids)
        vid = view_id or f"V{n:08d}"
        previous = self._views.get(vid)
        stored: Json = {
            "id": vid,
            "team_id": who.team_id,
            "type": "modal",
            "close": None,
            "submit": None,
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
            **view,
        }
        stored.update(
            id=vid,
            state={"values": {}},
            hash=f"{TS_BASE + n}.{n:08x}",
            root_view_id=previous["root_view_id"] if previous else vid,
            previous_view_id=previous.get("previous_view_id") if previous else None,
            app_id=self.app_id,
            app_installed_team_id=who.team_id,
            bot_id=who.bot_id,
        )
        if previous and previous.get("external_id"):
            self._external.pop(previous["external_id"], None)
        if stored["external_id"]:
            self._external[stored["external_id"]] = vid
        self._views[vid] = stored
        return stored

    def _external_clash(self, view: Json, view_id: str | None) -> bool:
        """Whether the view reuses another view's external_id."""
        ext = str(view.get("external_id") or "")
        return bool(ext) and self._external.get(ext, view_id) != view_id

    def _views_open(self, call: Call, who: _Identity) -> Json:
        """views.open: needs a trigger_id (or interactivity_pointer) and a valid view."""
        p = call.params
        if not (p.get("trigger_id") or p.get("interactivity_pointer")):
            return _error("invalid_arguments", "[ERROR] missing required field: trigger_id")
        problem = _view_error(p.get("view"))
        if problem is not None:
            return problem
        if self._external_clash(p["view"], None):
            return _error("duplicate_external_id")
        return {"ok": True, "view": self._store_view(p["view"], who)}

    def _views_update(self, call: Call, who: _Identity) -> Json:
        """views.update by view_id or external_id, honouring ``hash``."""
        p = call.params
        view_id = p.get("view_id") or self._external.get(str(p.get("external_id") or ""))
        if not view_id or view_id not in self._views:
            return _error("not_found")
        problem = _view_error(p.get("view"))
        if problem is not None:
            return problem
        if p.get("hash") and p["hash"] != self._views[view_id]["hash"]:
            return _error("hash_conflict")
        if self._external_clash(p["view"], view_id):
            return _error("duplicate_external_id")
        return {"ok": True, "view": self._store_view(p["view"], who, view_id)}

    def _views_publish(self, call: Call, who: _Identity) -> Json:
        """views.publish: one stable Home view id per user, ``hash`` checked."""
        p = call.params
        user_id = str(p.get("user_id") or "")
        if not _is_user_id(user_id):
            return _error("invalid_arguments", "invalid `user_id`")
        problem = _view_error(p.get("view"))
        if problem is not None:
            return problem
        current = self.home(user_id)
        if p.get("hash") and (current is None or p["hash"] != current["hash"]):
            return _error("hash_conflict")
        view = {"type": "home", **p["view"]}
        stored = self._store_view(view, who, self._home.get(user_id))
        self._home[user_id] = stored["id"]
        return {"ok": True, "view": stored}

    def _users_info(self, call: Call, _who: _Identity) -> Json:
        """users.info for users added with ``add_user``."""
        user = self._users.get(str(call.params.get("user") or ""))
        if user is None:
            return _error("user_not_found")
        if _flag(call.params.get("include_locale")):
            user = {**user, "locale": "en-US"}
        return {"ok": True, "user": user}

    def _users_lookup_by_email(self, call: Call, _who: _Identity) -> Json:
        """users.lookupByEmail (case-insensitive); ``users_not_found`` when missing."""
        email = str(call.params.get("email") or "").lower()
        for user in self._users.values():
            if email and str(user["profile"].get("email", "")).lower() == email:
                return {"ok": True, "user": user}
        return _error("users_not_found")

    # ----- Socket Mode ------------------------------------------------------------------

    SOCKET_ENVELOPE_TYPES = frozenset({"slash_commands", "interactive", "events_api"})
    RESPONSE_PAYLOAD_INTERACTIONS = frozenset({"view_submission", "block_suggestion"})

    def _setup_socket_mode(self) -> None:
        """State and routes for apps.connections.open and the ``/link`` WebSocket."""
        self._tickets: dict[str, str] = {}
        self._socket_connections: list[SocketConnection] = []
        self._socket_sent: dict[str, float] = {}
        self._socket_acks: list[SocketAck] = []
        self.app.router.add_post("/api/apps.connections.open", self._apps_connections_open)
        self.app.router.add_get("/api/apps.connections.open", self._apps_connections_open)
        self.app.router.add_get("/link", self._socket_link)
        self.app.on_shutdown.append(self._close_sockets)

    @staticmethod
    def socket_payload(body: str | Json) -> Json:
        """An HTTP body from ``slack_payloads`` as the dict Socket Mode carries instead.

        Slash commands: the form fields (strings); interactivity: the ``payload`` JSON;
        events: the ``event_callback`` JSON. A dict is returned as is.
        """
        if isinstance(body, dict):
            return body
        if body.lstrip().startswith("{"):
            data = json.loads(body)
        else:
            form = dict(parse_qsl(body, keep_blank_values=True))
            data = json.loads(form["payload"]) if "payload" in form else form
        if not isinstance(data, dict):
            raise ValueError("a Slack payload is a JSON object")
        return data

    @classmethod
    def socket_envelope(
        cls,
        kind: str,
        payload: str | Json,
        *,
        envelope_id: str | None = None,
        accepts_response_payload: bool | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
    ) -> Json:
        """A Socket Mode envelope as Slack sends it (``payload`` may be an HTTP body string).

        Slash commands, view submissions and block suggestions accept a response payload;
        events_api envelopes carry ``retry_attempt``/``retry_reason`` (0 and "" by default).
        """
        if kind not in cls.SOCKET_ENVELOPE_TYPES:
            raise ValueError(f"unknown envelope type {kind!r}")
        data = cls.socket_payload(payload)
        if accepts_response_payload is None:
            accepts_response_payload = kind == "slash_commands" or (
                kind == "interactive" and data.get("type") in cls.RESPONSE_PAYLOAD_INTERACTIONS
            )
        envelope: Json = {
            "envelope_id": envelope_id or _new_envelope_id(),
            "payload": data,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api" or retry_attempt is not None or retry_reason is not None:
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        return envelope

    @property
    def socket_connections(self) -> list[SocketConnection]:
        """Every ``/link`` connection so far, oldest first (closed ones included)."""
        return list(self._socket_connections)

    @property
    def socket_acks(self) -> list[SocketAck]:
        """Every ack the clients sent, oldest first."""
        return list(self._socket_acks)

    def _open_socket(self) -> SocketConnection | None:
        """The newest connection still up."""
        live = [c for c in self._socket_connections if c.open]
        return live[-1] if live else None

    async def socket_connected(self, count: int = 1, timeout: float = 5.0) -> SocketConnection:
        """Wait until `count` connections were opened and one is up; the newest live one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            live = self._open_socket()
            if live is not None and len(self._socket_connections) >= count:
                return live
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"{len(self._socket_connections)} of {count} Socket Mode connections "
                    f"in {timeout}s, live: {live is not None}"
                )
            await asyncio.sleep(0.005)

    async def _socket_send_json(self, message: Json, conn: SocketConnection | None) -> None:
        """Send one JSON frame on `conn` (default: the newest live connection)."""
        target = conn or self._open_socket()
        if target is None:
            raise RuntimeError("no Socket Mode connection is open")
        target.sent.append(message)
        await target.ws.send_str(json.dumps(message, separators=(",", ":")))

    async def socket_send(
        self, envelope: Json, *, connection: SocketConnection | None = None
    ) -> str:
        """Push an envelope to the client; returns its envelope_id (acks are timed from now)."""
        envelope_id = str(envelope["envelope_id"])
        self._socket_sent[envelope_id] = time.monotonic()
        await self._socket_send_json(envelope, connection)
        return envelope_id

    async def socket_ack(self, envelope_id: str, timeout: float = 3.0) -> Json:
        """The first ack for `envelope_id`, waiting up to `timeout`; TimeoutError if none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for ack in self._socket_acks:
                if ack.envelope_id == envelope_id:
                    return ack.body
            if loop.time() >= deadline:
                seen = [a.envelope_id for a in self._socket_acks]
                raise TimeoutError(f"no ack for {envelope_id} in {timeout}s; acks: {seen}")
            await asyncio.sleep(0.002)

    def socket_ack_of(self, envelope_id: str) -> SocketAck | None:
        """The first recorded ack for `envelope_id` (with timing), if any."""
        return next((a for a in self._socket_acks if a.envelope_id == envelope_id), None)

    async def socket_disconnect(
        self, reason: str = "refresh_requested", *, connection: SocketConnection | None = None
    ) -> None:
        """Send Slack's ``disconnect`` message (the client should reconnect on a new URL)."""
        message: Json = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "applink-fake"},
        }
        await self._socket_send_json(message, connection)

    async def socket_drop(
        self, code: int = WSCloseCode.GOING_AWAY, *, connection: SocketConnection | None = None
    ) -> None:
        """Close a connection from the server side."""
        target = connection or self._open_socket()
        if target is not None:
            await target.ws.close(code=code)

    async def _apps_connections_open(self, request: web.Request) -> web.Response:
        """apps.connections.open: only app-level (xapp-) tokens; a one-time /link URL."""
        try:
            params = await _read_params(request)
        except _BadBody as bad:
            call = self._record("apps.connections.open", {}, request)
            return self._answer(call, 200, _error(str(bad)))
        call = self._record("apps.connections.open", params, request)
        await self._delay("apps.connections.open")
        token = call.token
        if token is None:
            return self._answer(call, 200, _error("not_authed"))
        if token in self._tokens or token.startswith(("xoxb-", "xoxp-")):
            return self._answer(call, 200, _error("not_allowed_token_type"))
        if not token.startswith("xapp-"):
            return self._answer(call, 200, _error("invalid_auth"))
        scopes = {"x-oauth-scopes": "connections:write", "x-accepted-oauth-scopes": ""}
        fault = self._fault("apps.connections.open")
        if fault is not None:
            return self._answer(call, fault.status, fault.body, {**scopes, **fault.headers})
        ticket = hashlib.sha1(f"{token}:{next(self._ids)}".encode()).hexdigest()[:32]
        self._tickets[ticket] = token
        ws_base = "ws" + self.base_url.removeprefix("http")
        url = f"{ws_base}/link?ticket={ticket}&app_id={self.app_id}"
        return self._answer(call, 200, {"ok": True, "url": url}, scopes)

    async def _socket_link(self, request: web.Request) -> web.StreamResponse:
        """GET /link?ticket=…: the Socket Mode WebSocket (hello, pongs, acks recorded)."""
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = SocketConnection(ticket, ws, time.monotonic())
        self._socket_connections.append(conn)
        try:
            await self._socket_send_json(
                {
                    "type": "hello",
                    "num_connections": sum(1 for c in self._socket_connections if c.open),
                    "debug_info": {
                        "host": "applink-fake",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                },
                conn,
            )
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._socket_received(conn, message.data)
                elif message.type == WSMsgType.PING:
                    conn.pings += 1
                    await ws.pong(message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            conn.closed_at = time.monotonic()
            conn.close_code = ws.close_code
        return ws

    def _socket_received(self, conn: SocketConnection, raw: str) -> None:
        """Record a frame from the client; frames with an envelope_id are acks."""
        try:
            data: Any = json.loads(raw)
        except ValueError:
            data = raw
        conn.received.append(data)
        if isinstance(data, dict) and isinstance(data.get("envelope_id"), str):
            envelope_id = data["envelope_id"]
            self._socket_acks.append(
                SocketAck(envelope_id, data, time.monotonic(), self._socket_sent.get(envelope_id))
            )

    async def _close_sockets(self, _app: web.Application) -> None:
        """Close live connections on shutdown (going away), as Slack does on deploys."""
        for conn in self._socket_connections:
            if not conn.ws.closed:
                await conn.ws.close(code=WSCloseCode.GOING_AWAY)


_envelope_ids = itertools.count(1)


def _new_envelope_id() -> str:
    """A fresh envelope id in Slack's shape (a UUID)."""
    n = next(_envelope_ids)
    return f"{n:08x}-7c3f-4e5a-9b1d-{n:012x}"
