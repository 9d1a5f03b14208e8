"""Identifiers that sort by creation time, so ids double as pagination cursors."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """A new id: prefix, 12 hex digits of milliseconds, 10 random hex digits."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(5)}"
