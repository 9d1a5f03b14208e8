"""The Tailnet port on Headscale's native /api/v1 (v0.28 to 0.29): pre-auth keys, nodes, policy."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from provisioner.adapters.tailnet_http import (
    Hints,
    RetryPolicy,
    TailnetHTTP,
    json_body,
    parse_time,
    scrub,
    server_message,
)
from provisioner.errors import (
    ConfigError,
    Conflict,
    InvalidInput,
    TailnetRefused,
    TailnetUnavailable,
)
from provisioner.ports.tailnet import AuthKey, PolicyDocument, TailnetDevice

log = logging.getLogger(__name__)

TAGGED_OWNER = "tagged-devices"  # the user Headscale shows for every tagged node
# grpc-gateway turns errors that are not gRPC statuses into 500 {"code": 2}; these are the
# ones SetPolicy raises for a policy it will not store, or for a server in file mode.
POLICY_REJECTED = ("setting policy", "verifying SSH rules", "parsing policy")
POLICY_READ_ONLY = "update is disabled"
NO_POLICY_YET = "record not found"
REFUSALS = (*POLICY_REJECTED, POLICY_READ_ONLY)


def policy_etag(text: str) -> str:
    """Our stand-in for an ETag: the quoted SHA-256 of the stored text, as Tailscale does it."""
    return '"' + hashlib.sha256(text.encode()).hexdigest() + '"'


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HeadscaleTailnet:
    """Headscale /api/v1 behind the Tailnet port.

    Its policy has no ETag: `get_policy` gives the hash of the text as the etag and `set_policy`
    re-reads and compares it before the PUT. That is best effort: a write landing between our
    read and our PUT is overwritten. Pre-auth keys carry no description (it is dropped), are
    always pre-authorised, and tagged nodes are exempt from key expiry (Headscale ≥0.28).
    """

    dialect = "headscale"
    validates_policy = True  # POST /api/v1/policy/check (Headscale ≥0.29)

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        magic_dns_domain: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("Headscale needs HEADSCALE_API_KEY (headscale apikeys create)")
        self._api_key = api_key
        hints = Hints(
            "the Headscale API",
            "HEADSCALE_API_KEY",
            permission="HEADSCALE_API_KEY and the server's policy.mode",
            not_found="the node or key id and HEADSCALE_API_URL",
        )
        root = base_url.rstrip("/").removesuffix("/api/v1")
        self._http = TailnetHTTP(
            root, self._header, hints, timeout=timeout, retry=retry, transport=transport
        )
        self.domain = (magic_dns_domain or "").strip(".") or None

    def __repr__(self) -> str:
        return f"HeadscaleTailnet(base_url={self._http.base_url!r})"

    async def _header(self) -> str:
        return f"Bearer {self._api_key}"

    def _json(self, response: httpx.Response) -> Any:
        return json_body(response, self._http.hints.what)

    async def create_auth_key(
        self, *, tags: Sequence[str], expiry_seconds: int, description: str
    ) -> AuthKey:
        """A single-use, non-ephemeral pre-auth key carrying `tags` (no user: a tagged key)."""
        expires = datetime.now(UTC) + timedelta(seconds=int(expiry_seconds))
        body = {
            "reusable": False,
            "ephemeral": False,
            "expiration": _rfc3339(expires),
            "aclTags": list(tags),
        }
        answer = self._json(await self._http.request("POST", "/api/v1/preauthkey", json=body))
        key = answer.get("preAuthKey") if isinstance(answer, dict) else None
        if not isinstance(key, dict) or not key.get("key") or key.get("id") in (None, ""):
            raise TailnetUnavailable("the Headscale API created a pre-auth key but sent no secret")
        return AuthKey(
            id=str(key["id"]),
            secret=str(key["key"]),
            created=parse_time(key.get("createdAt")) or datetime.now(UTC),
            expires=parse_time(key.get("expiration")) or expires,
            tags=tuple(key.get("aclTags") or tags),
        )

    async def revoke_auth_key(self, key_id: str) -> None:
        """Expire the key now (Headscale's revoke); an unknown id is already as good as revoked."""
        body = {"id": key_id}
        await self._http.request("POST", "/api/v1/preauthkey/expire", json=body, idempotent=True)

    async def devices(
        self, *, hostname: str | None = None, tag: str | None = None
    ) -> list[TailnetDevice]:
        """Nodes, filtered here (v1 has no hostname or tag filter)."""
        answer = self._json(await self._http.request("GET", "/api/v1/node"))
        raw = answer.get("nodes") if isinstance(answer, dict) else None
        if not isinstance(raw, list):
            raise TailnetUnavailable("the Headscale API answered the node list without `nodes`")
        found = [self.device(node) for node in raw if isinstance(node, dict)]
        return [
            d
            for d in found
            if (hostname is None or d.hostname == hostname) and (tag is None or tag in d.tags)
        ]

    def device(self, node: dict[str, Any]) -> TailnetDevice:
        """A Headscale node in our shape; the name is givenName plus the MagicDNS base domain."""
        label = str(node.get("givenName") or node.get("name") or "")
        owner = node.get("user")
        user = (owner.get("email") or owner.get("name")) if isinstance(owner, dict) else None
        return TailnetDevice(
            id=str(node.get("id") or ""),
            hostname=str(node.get("name") or ""),
            name=f"{label}.{self.domain}" if self.domain and label else label,
            addresses=tuple(
                sorted((str(a) for a in node.get("ipAddresses") or []), key=lambda a: ":" in a)
            ),
            tags=tuple(str(t) for t in node.get("tags") or []),
            created=parse_time(node.get("createdAt")),
            user=None if user == TAGGED_OWNER else user,
            key_expiry_disabled=parse_time(node.get("expiry")) is None,
        )

    async def set_device_tags(self, device_id: str, tags: Sequence[str]) -> None:
        """Replace the node's tags (each must be defined in the policy's tagOwners)."""
        await self._http.request(
            "POST", f"/api/v1/node/{device_id}/tags", json={"tags": list(tags)}, idempotent=True
        )

    async def disable_key_expiry(self, device_id: str) -> None:
        """Tagged nodes never expire on Headscale: a no-op for them, disableExpiry for the rest."""
        answer = self._json(await self._http.request("GET", f"/api/v1/node/{device_id}"))
        node = answer.get("node") if isinstance(answer, dict) else None
        if not isinstance(node, dict) or node.get("tags") or parse_time(node.get("expiry")) is None:
            return
        # v0.29 maps the request's fields to the query; v0.30's REST API reads the body.
        answer = self._json(
            await self._http.request(
                "POST",
                f"/api/v1/node/{device_id}/expire",
                params={"disableExpiry": "true"},
                json={"disableExpiry": True},
                idempotent=True,
            )
        )
        expiry = parse_time((answer.get("node") or {}).get("expiry"))
        if expiry is not None and expiry <= datetime.now(UTC):
            raise TailnetRefused(
                f"the Headscale API expired node {device_id} instead of disabling its expiry: "
                "it predates disableExpiry (Headscale 0.29); upgrade it and re-join the node"
            )

    async def delete_device(self, device_id: str) -> None:
        """Remove the node; a node that is already gone (404) counts as removed."""
        await self._http.request("DELETE", f"/api/v1/node/{device_id}")

    async def get_policy(self) -> PolicyDocument:
        """The stored policy text; its hash stands in for an ETag."""
        response = await self._http.request(
            "GET", "/api/v1/policy", expect=lambda r: _says(r, 500, (NO_POLICY_YET,))
        )
        if response.status_code == 500:  # database mode before anyone stored a policy
            return PolicyDocument(text="", etag=policy_etag(""))
        answer = self._json(response)
        text = str(answer.get("policy") or "") if isinstance(answer, dict) else ""
        return PolicyDocument(text=text, etag=policy_etag(text))

    async def validate_policy(self, text: str) -> list[str]:
        """What /api/v1/policy/check finds in `text` (parse errors, failing tests); [] if none."""
        response = await self._http.request(
            "POST", "/api/v1/policy/check", json={"policy": text}, expect=(400,), idempotent=True
        )
        if response.status_code == 400:
            return _lines(server_message_full(response))
        return []

    async def set_policy(self, text: str, *, if_match: str | None) -> PolicyDocument:
        """PUT the policy, after checking (best effort) that it still hashes to `if_match`."""
        if if_match is not None and (await self.get_policy()).etag != if_match:
            raise Conflict(
                "the Headscale policy changed since it was read: re-read it and review the diff",
                code="policy_changed",
            )
        response = await self._http.request(
            "PUT",
            "/api/v1/policy",
            json={"policy": text},
            expect=lambda r: r.status_code == 400 or _says(r, 500, REFUSALS),
        )
        if response.status_code == 500 and POLICY_READ_ONLY in server_message_full(response):
            raise TailnetRefused(
                "the Headscale API will not store a policy (500: "
                f"{server_message(response)}): set policy.mode to database on the server"
            )
        if response.status_code in (400, 500):
            raise InvalidInput(
                "the Headscale API rejected the policy: "
                + "; ".join(_lines(server_message_full(response))),
                code="invalid_policy",
            )
        answer = self._json(response)
        stored = str(answer.get("policy") or text) if isinstance(answer, dict) else text
        return PolicyDocument(text=stored, etag=policy_etag(stored))

    async def close(self) -> None:
        """Release connections."""
        await self._http.close()


def server_message_full(response: httpx.Response) -> str:
    """The whole `message` of a grpc-gateway error (test failures span lines), scrubbed."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return "\n".join(scrub(line) for line in body["message"].splitlines())
    return server_message(response)


def _says(response: httpx.Response, status: int, starts: Sequence[str]) -> bool:
    """Whether the answer has `status` and its message contains one of `starts`."""
    return response.status_code == status and any(s in server_message(response) for s in starts)


def _lines(message: str) -> list[str]:
    return [line.strip() for line in message.splitlines() if line.strip()] or [message]
