"""Query-string helpers shared by listing routes."""

from __future__ import annotations

from aiohttp import web

from provisioner.errors import InvalidInput


def limit_of(request: web.Request, *, default: int) -> int:
    """The `limit` query parameter as a number (range checks belong to the core)."""
    text = request.query.get("limit", str(default))
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise InvalidInput("limit must be a whole number")
    return int(text)
