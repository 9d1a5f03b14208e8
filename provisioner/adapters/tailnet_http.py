"""The one request function of the tailnet adapters: auth, timeouts, bounded retries, our errors."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from provisioner.errors import ConfigError, TailnetRefused, TailnetUnavailable

log = logging.getLogger(__name__)

RETRYABLE = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# Anything that looks like a credential is cut out of text a server sends back to us.
SECRET_PATTERN = re.compile(r"\b(?:tskey|hskey|prov)[-_][A-Za-z0-9_-]+")
MESSAGE_LIMIT = 300

AuthHeader = Callable[[], Awaitable[str]]
Expect = Collection[int] | Callable[[httpx.Response], bool]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait again on 429 and 5xx answers."""

    attempts: int = 4  # requests in all, the first included
    default_delay: float = 2.0  # a 429 without a usable Retry-After
    max_delay: float = 30.0  # a longer Retry-After is cut to this
    backoff: float = 0.5  # 5xx without Retry-After: backoff * 2**retry

    def delay(self, response: httpx.Response, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0-based) after `response`."""
        after = retry_after_seconds(response.headers.get("Retry-After"))
        if after is None:
            after = self.default_delay if response.status_code == 429 else self.backoff * 2**retry
        return max(0.0, min(after, self.max_delay))


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header as seconds from now: integer seconds or an HTTP-date; None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def scrub(text: str) -> str:
    """Text from a server, shortened and without anything shaped like a credential."""
    text = SECRET_PATTERN.sub("[redacted]", text.strip())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def server_message(response: httpx.Response) -> str:
    """The human part of an error answer: `message`, an OAuth `error_description`, or the text."""
    try:
        body = response.json()
    except ValueError:
        return scrub(response.text)
    if isinstance(body, dict):
        for key in ("message", "error_description", "error", "detail", "title"):
            if isinstance(body.get(key), str) and body[key]:
                return scrub(body[key])
    return scrub(response.text)


@dataclass(frozen=True)
class Hints:
    """What each refusal tells the operator to check (names of settings, never their values)."""

    what: str  # "the Tailscale API"
    credentials: str  # "TAILSCALE_API_KEY"
    permission: str = "the credential's scopes and role"
    not_found: str = "the id and TAILSCALE_TAILNET"


class TailnetHTTP:
    """JSON over HTTP to one tailnet control API, every failure mapped to provisioner.errors."""

    def __init__(
        self,
        base_url: str,
        auth: AuthHeader | None,
        hints: Hints,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        on_unauthorized: Callable[[], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{hints.what}: base URL {base_url!r} must start with http(s)://")
        self.base_url = base_url.rstrip("/")
        self.hints = hints
        self.retry = retry or RetryPolicy()
        self._auth = auth
        self._on_unauthorized = on_unauthorized
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": "provisioner"},
            follow_redirects=False,
        )

    async def close(self) -> None:
        """Release the connection pool."""
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        content: str | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Expect = (),
        idempotent: bool | None = None,
        authenticate: bool = True,
    ) -> httpx.Response:
        """Send one call; 2xx, `expect`ed statuses and a 404 on DELETE come back, the rest raise."""
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        payload = {"params": params, "json": json, "data": data, "content": content}
        retry, reauthenticated = 0, False
        while True:
            sent = dict(headers or {})
            if authenticate and self._auth is not None:
                sent["Authorization"] = await self._auth()
            last = retry + 1 >= self.retry.attempts
            response = await self._send(method, path, safe, last, headers=sent, **payload)
            if response is None:  # a safe call timed out or lost its connection: go again
                await asyncio.sleep(min(self.retry.backoff * 2**retry, self.retry.max_delay))
            elif _expected(response, expect) or (method, response.status_code) == ("DELETE", 404):
                return response
            elif response.status_code == 401 and authenticate and not reauthenticated:
                if self._on_unauthorized is None:
                    raise self.error(method, path, response)
                self._on_unauthorized()  # an OAuth token the server forgot: mint a new one, once
                reauthenticated = True
                continue
            elif last or not await self._paused(method, path, response, retry):
                raise self.error(method, path, response, attempts=retry + 1)
            retry += 1

    async def _paused(self, method: str, path: str, response: httpx.Response, retry: int) -> bool:
        """Wait before retrying a 429 or 5xx the server may get over; False for anything else."""
        if response.status_code not in RETRYABLE:
            return False
        pause = self.retry.delay(response, retry)
        log.warning(
            "%s answered %s to %s %s; retrying in %.1fs",
            self.hints.what, response.status_code, method, path, pause,
        )  # fmt: skip
        await asyncio.sleep(pause)
        return True

    async def _send(
        self, method: str, path: str, safe: bool, last: bool, **kwargs: Any
    ) -> httpx.Response | None:
        """One attempt; None when a transport failure may be retried, else an error is raised."""
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            # A call that may have reached the server is retried only when repeating it is harmless.
            sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            if last or (sent and not safe):
                raise TailnetUnavailable(
                    f"{self.hints.what} did not answer {method} {path} within "
                    f"{self._client.timeout.read}s ({type(exc).__name__})"
                ) from None
        except httpx.TransportError as exc:
            if last or (not isinstance(exc, httpx.ConnectError) and not safe):
                raise TailnetUnavailable(
                    f"{self.hints.what} could not be reached at {self.base_url} for {method} "
                    f"{path}: {type(exc).__name__}: {scrub(str(exc))}"
                ) from None
        log.warning("%s: %s %s failed in transit; retrying", self.hints.what, method, path)
        return None

    def error(
        self, method: str, path: str, response: httpx.Response, *, attempts: int = 1
    ) -> TailnetRefused | TailnetUnavailable:
        """Our error for an answer the caller did not expect."""
        code, what, said = response.status_code, self.hints.what, server_message(response)
        call = f"{method} {path}"
        if code == 401:
            return TailnetRefused(
                f"{what} refused the credentials (401) for {call}: check {self.hints.credentials}"
            )
        if code == 403:
            return TailnetRefused(
                f"{what} refused {call} (403: {said}): check {self.hints.permission}"
            )
        if code == 404:
            return TailnetRefused(
                f"{what} found nothing at {call} (404: {said}): check {self.hints.not_found}"
            )
        if code == 429:
            return TailnetUnavailable(
                f"{what} kept rate-limiting {call} (429) after {attempts} attempts; try later"
            )
        if code >= 500 and code != 501:
            return TailnetUnavailable(
                f"{what} failed {call} ({code}: {said}) after {attempts} attempt(s)"
            )
        return TailnetRefused(f"{what} refused {call} ({code}): {said}")


def _expected(response: httpx.Response, expect: Expect) -> bool:
    """Whether the caller handles this answer itself."""
    if response.is_success:
        return True
    if callable(expect):
        return expect(response)
    return response.status_code in expect


def json_body(response: httpx.Response, what: str) -> Any:
    """The JSON of a successful answer; a server sending something else is unavailable, not us."""
    try:
        return response.json()
    except ValueError:
        raise TailnetUnavailable(
            f"{what} answered {response.request.method} {response.request.url.path} "
            f"({response.status_code}) with something that is not JSON"
        ) from None


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp from either API (Z or offset, any fraction); None when absent."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = value.replace("Z", "+00:00")
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if match:  # Go writes nanoseconds; Python takes six digits at most
        head, fraction, zone = match.groups()
        text = head + (fraction or "")[:7] + zone
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
