"""`serve` with PROVISIONER_HTTP_PROCESSES=2: two processes answer on one port, one set of workers."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from serve_process import ServeGroup, wait_operation

ADMIN_SECRET = "prov_http-admin-" + "h" * 24
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def serves(tmp_path: Path) -> AsyncIterator[ServeGroup]:
    """Serve children of this test, killed at the end."""
    group = ServeGroup(tmp_path, ADMIN_SECRET)
    try:
        yield group
    finally:
        await group.aclose()


def children_of(pid: int) -> list[int]:
    """The process ids whose parent is `pid`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_two_processes_share_the_port_and_the_work(
    database_url: str, tmp_path: Path, serves: ServeGroup
) -> None:
    serve = await serves.start(
        {
            "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
            "PROVISIONER_DATABASE_URL": database_url,
            "PROVISIONER_ADMIN_TOKEN": ADMIN_SECRET,
            "PROVISIONER_RATE_LIMIT": "0",
            "PROVISIONER_HTTP_PROCESSES": "2",
        }
    )
    [child] = children_of(serve.pid)
    # Each new connection may land on either process; both answer with the same data.
    for _ in range(20):
        async with httpx.AsyncClient(base_url=serve.url) as fresh:
            assert (await fresh.get("/healthz")).status_code == 200
    # Creates accepted by the HTTP-only child are run at once by the parent's workers.
    waits = []
    for i in range(8):
        started = time.monotonic()
        async with httpx.AsyncClient(
            base_url=serve.url, headers={"Authorization": f"Bearer {ADMIN_SECRET}"}
        ) as fresh:
            body = (
                await fresh.post(
                    "/v1/workspaces", json={"plan": "small", "image": "debian-12", "name": f"hp{i}"}
                )
            ).json()
            op = await wait_operation(fresh, body["operation"]["id"])
        assert op["state"] == "succeeded", op
        waits.append(time.monotonic() - started)
    # Without the wake-up the child's creates would wait for the parent's 1 s poll.
    assert statistics.median(waits) < 0.5, waits
    assert Path(f"/proc/{child}").exists(), "the HTTP process died (could it bind the port?)"
    assert await serve.terminate() == 0
    await asyncio.sleep(0.2)
    assert not Path(f"/proc/{child}").exists(), "the HTTP process outlived serve"
