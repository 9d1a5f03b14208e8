"""`POST /slack/events`: signatures checked before Bolt sees anything, bodies parsed safely."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Handler
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

# Bolt answers 500 (and logs a traceback) for timestamps or signatures it cannot parse.
TIMESTAMP_RE = re.compile(r"^\d{1,11}$")
SIGNATURE_RE = re.compile(r"^v0=[0-9a-f]{64}$")
MAX_SLACK_BODY = 1 << 20


def _unsigned() -> web.Response:
    """Bolt's own answer to a request that is not from Slack."""
    return web.json_response({"error": "invalid request"}, status=401)


def parse_slack_body(raw: str, content_type: str | None) -> dict[str, Any]:
    """Slack's body as a dict: JSON, a form with a `payload` field, or a plain form.

    Bolt looks for the word "payload" anywhere in the body, so `/workspace create payload-api`
    would parse as {}; here only a real `payload` field counts.
    """
    if not raw:
        return {}
    if content_type == "application/json" or raw.startswith("{"):
        parsed = json.loads(raw)
        return parsed if isinstance(parsed, dict) else {}
    form = dict(parse_qsl(raw, keep_blank_values=True))
    if "payload" in form:
        payload = json.loads(form["payload"])
        return payload if isinstance(payload, dict) else {}
    return form


def slack_handler(bolt: AsyncApp, signing_secret: str) -> Handler:
    """The aiohttp handler that checks Slack's signature and feeds Bolt."""
    verifier = SignatureVerifier(signing_secret)

    async def slack_events(request: web.Request) -> web.StreamResponse:
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not TIMESTAMP_RE.match(timestamp) or not SIGNATURE_RE.match(signature):
            return _unsigned()
        raw_bytes = await _read_limited(request)
        if raw_bytes is None:
            return web.json_response({"error": "request too large"}, status=413)
        # Checked before parsing, so a forged body is refused (401) whatever it holds.
        if not verifier.is_valid(raw_bytes, timestamp, signature):
            return _unsigned()
        try:
            raw = raw_bytes.decode()
            bolt_request = AsyncBoltRequest(
                body=raw, query=request.query_string, headers=dict(request.headers)
            )
            parsed = parse_slack_body(raw, bolt_request.content_type)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return web.json_response({"error": "invalid request"}, status=400)
        if parsed != bolt_request.body:
            bolt_request.body = parsed
            bolt_request.context = build_async_context(AsyncBoltContext({}), parsed)
        return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))

    return slack_events


async def _read_limited(request: web.Request) -> bytes | None:
    """The raw body, or None if it is larger than any Slack request."""
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_SLACK_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
