"""The Tailnet port on the Tailscale API v2: API key or OAuth client, devices, auth keys, policy."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from provisioner.adapters.tailnet_http import (
    Hints,
    RetryPolicy,
    TailnetHTTP,
    json_body,
    parse_time,
    server_message,
)
from provisioner.adapters.tailscale_oauth import OAuthToken
from provisioner.errors import ConfigError, Conflict, InvalidInput, TailnetUnavailable
from provisioner.ports.tailnet import AuthKey, PolicyDocument, TailnetDevice

log = logging.getLogger(__name__)

HUJSON = "application/hujson"
DESCRIPTION_LIMIT = 50


def api_root(base_url: str) -> str:
    """The host part of TAILSCALE_API_URL; a trailing /api/v2 is accepted and dropped."""
    root = base_url.rstrip("/")
    return root.removesuffix("/api/v2")


def key_description(text: str) -> str:
    """A key description Tailscale accepts: ≤50 of letters, digits, hyphens, spaces, underscores."""
    return re.sub(r"[^A-Za-z0-9 _-]", "-", text)[:DESCRIPTION_LIMIT].strip()


def _hints(api_key: bool) -> Hints:
    """What refusals tell the operator to check, by the kind of credential in use."""
    credential = "TAILSCALE_API_KEY" if api_key else "TAILSCALE_OAUTH_CLIENT_ID/_SECRET"
    return Hints(
        "the Tailscale API",
        credential,
        permission=f"the scopes and tags of {credential} (devices:core, auth_keys, policy_file)",
        not_found="the id and TAILSCALE_TAILNET",
    )


class TailscaleTailnet:
    """Tailscale API v2 behind the Tailnet port (also Headscale ≥0.30's /api/v2 subset)."""

    dialect = "tailscale"
    validates_policy = True

    def __init__(
        self,
        *,
        base_url: str = "https://api.tailscale.com",
        api_key: str | None = None,
        oauth_client_id: str | None = None,
        oauth_client_secret: str | None = None,
        oauth_scopes: Sequence[str] = (),
        oauth_tags: Sequence[str] = (),
        tailnet: str = "-",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if bool(api_key) == bool(oauth_client_id and oauth_client_secret):
            raise ConfigError(
                "Tailscale needs TAILSCALE_API_KEY or TAILSCALE_OAUTH_CLIENT_ID with "
                "TAILSCALE_OAUTH_CLIENT_SECRET (exactly one of the two)"
            )
        self._api_key = api_key
        self._http = TailnetHTTP(
            api_root(base_url), self._header, _hints(bool(api_key)), timeout=timeout,
            retry=retry, on_unauthorized=None if api_key else self._forget_token,
            transport=transport,
        )  # fmt: skip
        self._token = None
        if oauth_client_id and oauth_client_secret and not api_key:
            self._token = OAuthToken(
                self._http, oauth_client_id, oauth_client_secret,
                scopes=oauth_scopes, tags=oauth_tags, clock=clock,
            )  # fmt: skip
        self.tailnet = quote(tailnet or "-", safe="")
        self._fields = "all"  # becomes "default" once the list refused fields=all

    def __repr__(self) -> str:
        return f"TailscaleTailnet(base_url={self._http.base_url!r}, tailnet={self.tailnet!r})"

    async def _header(self) -> str:
        if self._token is not None:
            return await self._token.header()
        return f"Bearer {self._api_key}"

    def _forget_token(self) -> None:
        if self._token is not None:
            self._token.forget()

    def _json(self, response: httpx.Response) -> Any:
        return json_body(response, self._http.hints.what)

    async def create_auth_key(
        self, *, tags: Sequence[str], expiry_seconds: int, description: str
    ) -> AuthKey:
        """A single-use, pre-authorised, non-ephemeral key whose devices join with `tags`."""
        create = {"reusable": False, "ephemeral": False, "preauthorized": True, "tags": list(tags)}
        body = {
            "keyType": "auth",
            "description": key_description(description),
            "capabilities": {"devices": {"create": create}},
            "expirySeconds": int(expiry_seconds),
        }
        response = await self._http.request(
            "POST", f"/api/v2/tailnet/{self.tailnet}/keys", json=body
        )
        key = self._json(response)
        if not isinstance(key, dict) or not key.get("key") or not key.get("id"):
            raise TailnetUnavailable("the Tailscale API created an auth key but sent no secret")
        granted = key.get("capabilities", {}).get("devices", {}).get("create", {}).get("tags")
        return AuthKey(
            id=str(key["id"]),
            secret=str(key["key"]),
            created=parse_time(key.get("created")) or datetime.now(UTC),
            expires=parse_time(key.get("expires")),
            tags=tuple(granted if isinstance(granted, list) else tags),
        )

    async def revoke_auth_key(self, key_id: str) -> None:
        """Revoke the key; a key that is already gone counts as revoked."""
        path = f"/api/v2/tailnet/{self.tailnet}/keys/{quote(key_id, safe='')}"
        await self._http.request("DELETE", path)

    async def devices(
        self, *, hostname: str | None = None, tag: str | None = None
    ) -> list[TailnetDevice]:
        """Devices, filtered by the server (where it can) and again here."""
        params: dict[str, str] = {}
        if hostname is not None:
            params["hostname"] = hostname
        if tag is not None:
            params["tags"] = tag
        path = f"/api/v2/tailnet/{self.tailnet}/devices"
        if self._fields == "all":
            # Since 2026-10 fields=all 404s the whole list on tailnets with shared-in devices.
            response = await self._http.request(
                "GET", path, params={"fields": "all", **params}, expect=(404,)
            )
            if response.status_code != 404:
                return _filtered(self._json(response), hostname, tag)
            log.info("the Tailscale API refused fields=all for the device list; using default")
            self._fields = "default"
        response = await self._http.request("GET", path, params={"fields": "default", **params})
        return _filtered(self._json(response), hostname, tag)

    async def set_device_tags(self, device_id: str, tags: Sequence[str]) -> None:
        """Replace the device's tags (the server checks they exist and that we may apply them)."""
        path = f"/api/v2/device/{quote(device_id, safe='')}/tags"
        await self._http.request("POST", path, json={"tags": list(tags)}, idempotent=True)

    async def disable_key_expiry(self, device_id: str) -> None:
        """Keep the device on the tailnet past its node key's default expiry."""
        path = f"/api/v2/device/{quote(device_id, safe='')}/key"
        await self._http.request("POST", path, json={"keyExpiryDisabled": True}, idempotent=True)

    async def delete_device(self, device_id: str) -> None:
        """Remove the device; a device that is already gone (404) counts as removed."""
        await self._http.request("DELETE", f"/api/v2/device/{quote(device_id, safe='')}")

    async def get_policy(self) -> PolicyDocument:
        """The policy file as stored (HuJSON, comments kept) and its ETag."""
        response = await self._http.request(
            "GET", f"/api/v2/tailnet/{self.tailnet}/acl", headers={"Accept": HUJSON}
        )
        return PolicyDocument(text=response.text, etag=response.headers.get("ETag"))

    async def validate_policy(self, text: str) -> list[str]:
        """What the server's validate endpoint finds in `text` (parse errors, failing tests)."""
        response = await self._http.request(
            "POST",
            f"/api/v2/tailnet/{self.tailnet}/acl/validate",
            content=text,
            headers={"Content-Type": HUJSON},
            expect=(400,),
            idempotent=True,
        )
        if not response.content.strip():
            return []
        body = _maybe_json(response)
        problems = policy_problems(body) if isinstance(body, dict) else []
        if response.status_code == 400:
            return problems or [server_message(response)]
        return problems

    async def set_policy(self, text: str, *, if_match: str | None) -> PolicyDocument:
        """Write the policy unless it changed since `if_match` (412 → Conflict policy_changed)."""
        headers = {"Content-Type": HUJSON, "Accept": HUJSON}
        if if_match:
            headers["If-Match"] = if_match
        path = f"/api/v2/tailnet/{self.tailnet}/acl"
        response = await self._http.request(
            "POST", path, content=text, headers=headers, expect=(400, 412), idempotent=True
        )
        if response.status_code == 412:
            raise Conflict(
                "the tailnet policy changed since it was read (412 precondition failed): "
                "re-read it and review the new diff",
                code="policy_changed",
            )
        if response.status_code == 400:
            body = _maybe_json(response)
            problems = policy_problems(body) if isinstance(body, dict) else []
            raise InvalidInput(
                "the Tailscale API rejected the policy: "
                + "; ".join(problems or [server_message(response)]),
                code="invalid_policy",
            )
        return PolicyDocument(text=response.text, etag=response.headers.get("ETag"))

    async def close(self) -> None:
        """Release connections."""
        await self._http.close()


def _maybe_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def policy_problems(body: dict[str, Any]) -> list[str]:
    """`{"message", "data": [{"user", "errors"}]}` as lines; warnings alone are no problem."""
    message = str(body.get("message") or "")
    data = body.get("data")
    data = data if isinstance(data, list) else []
    lines = [
        f"{entry.get('user') or 'policy'}: {error}"
        for entry in data
        if isinstance(entry, dict)
        for error in entry.get("errors") or []
    ]
    if lines:
        return [message, *lines] if message else lines
    if message and not message.startswith("warning"):
        return [message]
    return []


def _filtered(body: Any, hostname: str | None, tag: str | None) -> list[TailnetDevice]:
    """The `{"devices": [...]}` answer as our devices, filtered here too (old servers ignore it)."""
    raw = body.get("devices") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        raise TailnetUnavailable("the Tailscale API answered the device list without `devices`")
    found = [device(item) for item in raw if isinstance(item, dict)]
    return [
        d
        for d in found
        if (hostname is None or d.hostname == hostname) and (tag is None or tag in d.tags)
    ]


def device(item: dict[str, Any]) -> TailnetDevice:
    """One device object of the API in our shape."""
    addresses = [str(a) for a in item.get("addresses") or []]
    return TailnetDevice(
        id=str(item.get("nodeId") or item.get("id") or ""),
        hostname=str(item.get("hostname") or ""),
        name=str(item.get("name") or "").rstrip("."),
        addresses=tuple(sorted(addresses, key=lambda a: ":" in a)),
        tags=tuple(str(t) for t in item.get("tags") or []),
        created=parse_time(item.get("created")),
        user=str(item["user"]) if item.get("user") else None,
        key_expiry_disabled=bool(item.get("keyExpiryDisabled")),
    )
