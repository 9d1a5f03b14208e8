"""What the fake Tailscale and Headscale servers share: serving, faults, the request log, joins.

A fake is an aiohttp app on 127.0.0.1 and a random port::

    async with FakeTailscale.running() as fake:      # or FakeHeadscale
        fake.base_url                                 # http://127.0.0.1:PORT
        fake.fail(429, times=2, retry_after="1")      # next two API calls: 429 + Retry-After
        fake.fail(503, path="/api/v2/device/")        # one 503 on paths starting so
        fake.delay(0.5, times=1)                      # the next call answers 0.5 s late
        device = fake.register_device(secret, "ws-alice-1")   # `tailscale up --authkey`
        fake.calls("POST", "/api/v2/tailnet/-/keys")  # what was asked, by whom

A process that is not the test joins over HTTP: `POST {base_url}/fake/register` with
`{"authKey": …, "hostname": …}` → 200 `{"device": …}`, or 401 `{"message"}` when refused.
`fake.advance(seconds)` moves the fake's clock (key and token expiry) forward.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.test_utils import TestServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class JoinRefused(Exception):
    """The control server refused a join: unknown, used, expired or revoked key."""


class Refusal(Exception):
    """An error answer raised from inside a handler: status, message and extra fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@dataclass
class Recorded:
    """One request the fake received and who made it (None until authenticated)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    principal: str | None = None
    status: int = 0


RECORD = web.RequestKey("record", Recorded)


@dataclass
class Fault:
    """An injected misbehaviour for matching requests: an error status and/or a delay."""

    status: int | None
    path: str | None
    method: str | None
    times: int | None  # None: every matching request
    retry_after: str | None = None
    delay: float = 0.0
    body: dict[str, Any] = field(default_factory=dict)

    def matches(self, request: web.Request) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method is not None and request.method != self.method:
            return False
        if self.path is None:
            return not request.path.startswith("/fake/")
        return request.path.startswith(self.path)


def stamp(moment: datetime | None) -> str | None:
    """RFC 3339 with Z, as the API writes times."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def http_date(seconds_from_now: float) -> str:
    """A Retry-After value in the HTTP-date form."""
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


def dns_label(hostname: str) -> str:
    """A hostname as a MagicDNS label: lower case, [^a-z0-9-] → -, no leading/trailing -."""
    return re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-") or "device"


def unique_label(base: str, taken: set[str]) -> str:
    """`base`, else `base-1`, `base-2`, … (how both servers de-duplicate names)."""
    if base not in taken:
        return base
    return next(f"{base}-{n}" for n in itertools.count(1) if f"{base}-{n}" not in taken)


class Addresses:
    """Tailnet addresses handed out in order: 100.64.0.0/10 and fd7a:115c:a1e0::/48."""

    def __init__(self, first: int = 1) -> None:
        self._next = itertools.count(first)

    def allocate(self) -> tuple[str, str]:
        n = next(self._next)
        v4 = ipaddress.IPv4Address("100.64.0.0") + n
        return str(v4), str(ipaddress.IPv6Address("fd7a:115c:a1e0::") + n)


class FakeTailnetServer:
    """Serving, fault injection, the request log and the HTTP join hook of both fakes."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.clock_offset = timedelta()
        self.base_url = ""
        self.app = web.Application(middlewares=[self._middleware])
        self.app.router.add_post("/fake/register", self._http_register)
        self._server: TestServer | None = None

    @classmethod
    def running(cls, **options: Any) -> Self:
        """A new fake; `async with` serves it on 127.0.0.1:<random> for the block."""
        return cls(**options)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start serving; `base_url` is set once the port is known."""
        self._server = TestServer(self.app, host="127.0.0.1")
        await self._server.start_server(shutdown_timeout=0.5)
        self.base_url = str(self._server.make_url("")).rstrip("/")

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            await self._server.close()
            self._server = None

    def now(self) -> datetime:
        """The fake's clock: real UTC time plus what `advance` added."""
        return datetime.now(UTC) + self.clock_offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward (expires keys and access tokens without waiting)."""
        self.clock_offset += timedelta(seconds=seconds)

    # Fault knobs.

    def fail(
        self,
        status: int,
        *,
        times: int | None = 1,
        path: str | None = None,
        method: str | None = None,
        retry_after: str | int | None = None,
        message: str | None = None,
    ) -> Fault:
        """Answer the next `times` matching API calls (None: all) with `status`."""
        body = {"message": message or _default_message(status)}
        after = None if retry_after is None else str(retry_after)
        fault = Fault(status, path, method, times, retry_after=after, body=body)
        self.faults.append(fault)
        return fault

    def delay(self, seconds: float, *, times: int | None = None, path: str | None = None) -> Fault:
        """Answer matching API calls `seconds` late (a slow or hung control plane)."""
        fault = Fault(None, path, None, times, delay=seconds)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Behave again."""
        self.faults.clear()

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally only one method and/or one exact path."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    # Hooks the two fakes fill in.

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        """An error answer in the server's own body format."""
        return web.json_response({"message": message, **extra}, status=status)

    def register_device(self, secret: str, hostname: str, **options: Any) -> Any:
        """Play `tailscale up --authkey=<secret> --hostname=<hostname>`."""
        raise NotImplementedError

    def device_json(self, device: Any) -> dict[str, Any]:
        """The device as the register hook answers it."""
        raise NotImplementedError

    # Machinery.

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        record = Recorded(request.method, request.path, _query(request), await _body(request))
        self.requests.append(record)
        request[RECORD] = record
        response = await self._faulted(request) or await handler(request)
        record.status = response.status
        return response

    async def _faulted(self, request: web.Request) -> web.StreamResponse | None:
        for fault in self.faults:
            if not fault.matches(request):
                continue
            if fault.times is not None:
                fault.times -= 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                response = self.error(fault.status, str(fault.body.get("message", "")))
                if fault.retry_after is not None:
                    response.headers["Retry-After"] = fault.retry_after
                return response
        return None

    async def _http_register(self, request: web.Request) -> web.Response:
        body = request[RECORD].body
        if not isinstance(body, dict) or not body.get("authKey") or not body.get("hostname"):
            return self.error(400, "want {authKey, hostname}")
        try:
            device = self.register_device(str(body["authKey"]), str(body["hostname"]))
        except JoinRefused as exc:
            return self.error(401, str(exc))
        return web.json_response({"device": self.device_json(device)})


def _default_message(status: int) -> str:
    return {
        429: "too many requests",
        500: "internal server error",
        502: "bad gateway",
        503: "service unavailable",
        504: "request took too long to process, please try again later",
    }.get(status, "injected failure")


def _query(request: web.Request) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, value in request.query.items():
        query.setdefault(key, []).append(value)
    return query


async def _body(request: web.Request) -> Any:
    """The request body: parsed JSON or form when it is one, else text, else None."""
    if not request.can_read_body:
        return None
    text = await request.text()
    if request.content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        return json.loads(text)
    except ValueError:
        return text
