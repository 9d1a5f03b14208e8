"""Blocking work off the event loop that a cancel cannot cut short (cleanup must see it end)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


async def to_thread_to_the_end(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`asyncio.to_thread`, except that a cancel waits for the thread to finish, then re-raises.

    A thread cannot be stopped: without this, cleanup that follows a cancel (removing a
    directory) would race the thread still writing into it.
    """
    future = asyncio.ensure_future(asyncio.to_thread(function, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise
