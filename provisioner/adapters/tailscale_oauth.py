"""OAuth client credentials for the Tailscale API: short-lived access tokens, cached and renewed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from provisioner.adapters.tailnet_http import TailnetHTTP, json_body
from provisioner.errors import TailnetUnavailable

log = logging.getLogger(__name__)

REFRESH_MARGIN = 60.0  # seconds before expiry a cached token is replaced


class OAuthToken:
    """Access tokens minted from an OAuth client: cached, replaced 60 s before they expire."""

    def __init__(
        self,
        http: TailnetHTTP,
        client_id: str,
        client_secret: str,
        *,
        scopes: Sequence[str] = (),
        tags: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http, self._id, self._secret = http, client_id, client_secret
        self._scopes, self._tags, self._clock = tuple(scopes), tuple(tags), clock
        self._token: str | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"OAuthToken(client_id={self._id!r})"

    def forget(self) -> None:
        """Drop the cached token (the server said 401): the next call mints a new one."""
        self._token = None

    async def header(self) -> str:
        """`Bearer <token>`, minting a token when none is cached or it is about to expire."""
        async with self._lock:
            if self._token is None or self._clock() >= self._until:
                await self._mint()
            assert self._token is not None
            return f"Bearer {self._token}"

    async def _mint(self) -> None:
        """POST the client credentials (RFC 6749 §4.4) to {base}/api/v2/oauth/token."""
        form = {"grant_type": "client_credentials", "client_id": self._id}
        form["client_secret"] = self._secret
        if self._scopes:
            form["scope"] = " ".join(self._scopes)
        if self._tags:
            form["tags"] = " ".join(self._tags)
        started = self._clock()
        response = await self._http.request(
            "POST", "/api/v2/oauth/token", data=form, authenticate=False, idempotent=True
        )
        body = json_body(response, self._http.hints.what)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TailnetUnavailable("the Tailscale OAuth token endpoint answered without a token")
        lifetime = float(body.get("expires_in") or 3600)
        self._token, self._until = token, started + lifetime - REFRESH_MARGIN
        log.info("minted a Tailscale OAuth access token valid for %.0fs", lifetime)
