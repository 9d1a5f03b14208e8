"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL, a built system, a client."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from provisioner.app import cli as main
from provisioner.app.cli import System
from provisioner.settings import Settings
from tests.fakes.tailscale_api import FakeTailscale

POSTGRES_ENV = "PROVISIONER_TEST_POSTGRES_URL"
ADMIN_SECRET = "prov_test-admin-" + "x" * 24
# Who may carry which tag on the fake tailnet: our own tag owns the workspaces' tags.
TAILNET_POLICY = {
    "tagOwners": {
        "tag:provisioner": [],
        "tag:alice-smith": ["tag:provisioner"],
        "tag:bob": ["tag:provisioner"],
        "tag:provisioner-workspace": ["tag:provisioner"],
    },
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}


def _postgres_base() -> str | None:
    """The PostgreSQL URL tests may create databases on; CI must provide one."""
    url = os.environ.get(POSTGRES_ENV)
    if url is None and os.environ.get("CI"):
        pytest.fail(f"{POSTGRES_ENV} is not set: CI must run the suite on PostgreSQL too")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which database engine the test runs on."""
    if request.param == "postgresql" and _postgres_base() is None:
        pytest.skip(f"{POSTGRES_ENV} not set")
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database of the chosen engine, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'provisioner.db'}"
        return
    base = sa.make_url(_postgres_base() or "")
    name = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(
        host=base.host, port=base.port, user=base.username, database=base.database
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Embedded defaults on a fresh database, with a fixed admin token and a short lease."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=ADMIN_SECRET,
        lease_seconds=3.0,
        rate_limit=0.0,  # tests poll fast; test_api_hardening checks the limiter itself
    )


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[System]:
    """The whole system built from settings, workers running."""
    async with main.built(settings) as built:
        await main.ensure_admin(built)
        built.runner.start()
        try:
            yield built
        finally:
            await built.runner.stop(drain_seconds=5)


@pytest.fixture
async def client(system: System) -> AsyncIterator[TestClient[object, object]]:
    """An HTTP client of the real aiohttp app, with the admin token set."""
    app = system.api()
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    """Authorization headers of the admin token."""
    return {"Authorization": f"Bearer {ADMIN_SECRET}"}


@pytest.fixture
def fresh_settings(settings: Settings) -> Iterator[Settings]:
    """Settings without a configured admin token (first-start behaviour)."""
    yield replace(settings, admin_token=None)


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[Path]:
    """A UNIX socket that accepts connections and never answers (a hung libvirtd)."""
    path = tmp_path / "hang.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    try:
        yield path
    finally:
        server.close()


@pytest.fixture
async def tailnet() -> AsyncIterator[FakeTailscale]:
    """The fake Tailscale API on loopback, its policy defining the tags the tailnet tests use."""
    async with FakeTailscale.running() as fake:
        fake.set_policy(json.dumps(TAILNET_POLICY))
        yield fake
