"""A lean aiohttp client for the few API calls the benchmarks make."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp

from bench.serve import Serve


class BenchError(Exception):
    """The benchmark cannot go on (server gone, unexpected answer, timeout)."""


class Api:
    """The token API of one server, over a pooled session."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._session, self._base = session, base

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One call; its JSON body, or BenchError on any non-2xx answer."""
        async with self._session.request(method, self._base + path, **kwargs) as response:
            body: dict[str, Any] = await response.json(content_type=None)
            if response.status >= 300:
                raise BenchError(f"{method} {path} answered {response.status}: {body}")
            return body

    async def create(self, name: str) -> str:
        """POST a small debian-12 workspace; its id once the server accepted it."""
        body = {"plan": "small", "image": "debian-12", "name": name}
        answer = await self._json("POST", "/v1/workspaces", json=body)
        workspace_id: str = answer["workspace"]["id"]
        return workspace_id

    async def workspace(self, workspace_id: str) -> dict[str, Any]:
        """GET one workspace."""
        return await self._json("GET", f"/v1/workspaces/{workspace_id}")

    async def ids_in_state(self, state: str, after: str | None) -> set[str]:
        """Ids of every workspace in `state` created after the id `after` (all pages)."""
        ids: set[str] = set()
        cursor = after
        while True:
            params = {"state": state, "limit": "200"}
            if cursor is not None:
                params["cursor"] = cursor
            page = await self._json("GET", "/v1/workspaces", params=params)
            ids.update(ws["id"] for ws in page["workspaces"])
            cursor = page["next_cursor"]
            if cursor is None:
                return ids


@asynccontextmanager
async def connected(server: Serve, connections: int) -> AsyncIterator[Api]:
    """An Api on a session with room for `connections` requests at once."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    headers = {"Authorization": f"Bearer {server.token}"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:
        yield Api(session, server.url)


async def wait_ready(server: Serve, timeout: float = 60.0) -> None:
    """Wait until /healthz answers; BenchError if the server dies or stays silent."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BenchError(f"serve exited with {server.process.returncode} at start")
            try:
                async with session.get(server.url + "/healthz") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
    raise BenchError(f"serve did not answer /healthz within {timeout:g} s")


def server_latency(workspace: dict[str, Any]) -> float:
    """Seconds from accept (created_at) to the last change, the move to running (updated_at)."""
    created = datetime.fromisoformat(workspace["created_at"])
    updated = datetime.fromisoformat(workspace["updated_at"])
    return (updated - created).total_seconds()
