"""Tokens (shown once, stored hashed, roles) and Idempotency-Key replays on create."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from provisioner.adapters.store.tables import api_tokens
from provisioner.app import cli as main
from provisioner.app.cli import System
from provisioner.settings import Settings

Client = TestClient[object, object]
BODY = {"plan": "small", "image": "debian-12", "name": "ci-1"}


async def test_first_start_prints_an_admin_token_once(
    fresh_settings: Settings, capsys: object
) -> None:
    async with main.built(fresh_settings) as system:
        await main.ensure_admin(system)
        await main.ensure_admin(system)
        async with system.store.transaction() as tx:
            hashes = [row.secret_hash for row in await tx.conn.execute(sa.select(api_tokens))]
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.count("Admin token") == 1
    secret = (fresh_settings.data_dir / main.CLI_TOKEN_FILE).read_text().strip()
    assert secret in out and secret not in hashes and len(hashes) == 1
    assert oct((fresh_settings.data_dir / main.CLI_TOKEN_FILE).stat().st_mode & 0o777) == "0o600"


async def test_created_token_works_and_its_secret_is_not_stored(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    resp = await client.post(
        "/v1/tokens",
        json={"role": "developer", "owner": "ci-bot", "expires": "30d"},
        headers=admin_headers,
    )
    assert resp.status == 201
    body = await resp.json()
    secret = body["secret"]
    assert body["token"]["role"] == "developer" and body["token"]["expires_at"]
    dev = {"Authorization": f"Bearer {secret}"}
    created = await client.post("/v1/workspaces", json=BODY, headers=dev)
    assert created.status == 202
    assert (await created.json())["workspace"]["owner"] == "ci-bot"
    forbidden = await client.post("/v1/tokens", json={"role": "admin", "owner": "me"}, headers=dev)
    assert forbidden.status == 403
    async with system.store.transaction() as tx:
        dump = str([tuple(r) for r in await tx.conn.execute(sa.select(api_tokens))])
    assert secret not in dump


async def test_developers_see_only_their_own_workspaces(
    client: Client, admin_headers: dict[str, str]
) -> None:
    async def token(owner: str) -> dict[str, str]:
        resp = await client.post(
            "/v1/tokens", json={"role": "developer", "owner": owner}, headers=admin_headers
        )
        return {"Authorization": f"Bearer {(await resp.json())['secret']}"}

    ann, bob = await token("ann"), await token("bob")
    ws = (await (await client.post("/v1/workspaces", json=BODY, headers=ann)).json())["workspace"]
    assert (await client.get(f"/v1/workspaces/{ws['id']}", headers=bob)).status == 404
    assert (await client.delete(f"/v1/workspaces/{ws['id']}", headers=bob)).status == 404
    listing = await (await client.get("/v1/workspaces", headers=bob)).json()
    assert listing["workspaces"] == []
    other = await client.post("/v1/workspaces", json={**BODY, "owner": "ann"}, headers=bob)
    assert other.status == 403


async def test_idempotency_key_replays_and_rejects_other_bodies(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    headers = {**admin_headers, "Idempotency-Key": "job-42"}
    first = await client.post("/v1/workspaces", json=BODY, headers=headers)
    again = await client.post("/v1/workspaces", json=BODY, headers=headers)
    assert first.status == again.status == 202
    a, b = await first.json(), await again.json()
    assert a["workspace"]["id"] == b["workspace"]["id"]
    assert a["operation"]["id"] == b["operation"]["id"]
    other = await client.post("/v1/workspaces", json={**BODY, "plan": "medium"}, headers=headers)
    assert other.status == 422
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"
    async with system.store.transaction() as tx:
        counts = await tx.count_workspaces_by_state()
    assert sum(counts.values()) == 1


async def test_pagination_walks_every_workspace_once(
    client: Client, admin_headers: dict[str, str]
) -> None:
    for i in range(7):
        body = {**BODY, "name": f"page-{i}"}
        assert (await client.post("/v1/workspaces", json=body, headers=admin_headers)).status == 202
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get("/v1/workspaces" + query, headers=admin_headers)).json()
        seen += [w["name"] for w in page["workspaces"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"page-{i}" for i in range(7)]


async def test_concurrent_twins_with_one_key_create_one_workspace(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    headers = {**admin_headers, "Idempotency-Key": "twin"}
    answers = await asyncio.gather(
        *(client.post("/v1/workspaces", json=BODY, headers=headers) for _ in range(5))
    )
    assert {r.status for r in answers} == {202}
    ids = {(await r.json())["workspace"]["id"] for r in answers}
    assert len(ids) == 1
    async with system.store.transaction() as tx:
        assert sum((await tx.count_workspaces_by_state()).values()) == 1
