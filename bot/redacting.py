"""Every message the bot sends passes through the one redaction of provisioner.redaction."""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from provisioner.redaction import redact

# The credential slack_sdk itself moves from the call's arguments into the Authorization header.
CREDENTIAL_KEYS = frozenset({"token"})


def scrub(value: Any) -> Any:
    """`value` with every string in it (nested in dicts and lists) redacted, credentials kept."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: item if key in CREDENTIAL_KEYS else scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


class RedactingWebClient(AsyncWebClient):
    """The Slack Web API client, redacting what it sends: text, blocks, views, all of it."""

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        """Send the call with its payload redacted (the token travels in headers, untouched)."""
        return await super().api_call(
            api_method,
            http_verb=http_verb,
            files=files,
            data=scrub(data) if isinstance(data, dict) else data,
            params=scrub(params),
            json=scrub(json),
            headers=headers,
            auth=auth,
        )
