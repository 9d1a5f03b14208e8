"""RBAC matrix: every route answers every kind of caller exactly as the contract says.

The expected answers come from GRANTS below, written from CONTRACT §3 and the role descriptions,
never from acl.rbac: a wrong ROLE_PERMISSIONS table must fail here, not be copied here.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from provisioner.app.cli import System
from tests.test_api_keys_playbooks import PUBLIC as PUBLIC_KEY
from tests.test_api_workspaces import wait_operation

Client = TestClient[object, object]

CATALOG, READ, WRITE, ALL_OWNERS = "catalog", "read", "write", "all_owners"
NODES, ADD_NODES, APPROVALS = "nodes", "add_nodes", "approvals"
AUDIT, TOKENS = "audit", "tokens"
# Uploading playbooks (they run as root in workspaces), reading the tailnet policy, and deciding
# on existing hosts' onboarding (CONTRACT §6: "approval of a host key and cancel by operators").
PLAYBOOKS, POLICY, ONBOARD_OPS = "playbooks", "policy", "onboard_ops"
OPS_ONLY = frozenset({PLAYBOOKS, POLICY, ONBOARD_OPS})
# admin: everything; operator: all workspaces, nodes, approvals, audit; developer: own workspaces
# and the catalog; viewer: read-only, every owner's workspaces and the nodes.
GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {CATALOG, READ, WRITE, ALL_OWNERS, NODES, ADD_NODES, APPROVALS, AUDIT, TOKENS}
    )
    | OPS_ONLY,
    "operator": frozenset({CATALOG, READ, WRITE, ALL_OWNERS, NODES, ADD_NODES, APPROVALS, AUDIT})
    | OPS_ONLY,
    "developer": frozenset({CATALOG, READ, WRITE}),
    "viewer": frozenset({CATALOG, READ, ALL_OWNERS, NODES}),
}
CALLERS = (*GRANTS, "no token", "unknown token", "revoked token")
OK, UNAUTHENTICATED, FORBIDDEN, HIDDEN = "ok", "401", "403", "404"
REFUSED = {401: UNAUTHENTICATED, 403: FORBIDDEN, 404: HIDDEN}

DEV, OTHER = "dana", "other.owner"  # the developer, and an owner she must never see
OTHER_NAMES = ("other-box", "other-big", "other-huge")
SMALL = {"plan": "small", "image": "debian-12"}
ONBOARD = {"login_user": "root", "login_password": "pw-rbac-1", "desired_user": "dana"}
ONBOARD |= {"generate_key": True}
TEST_URI = "test:///default"
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Case:
    """One request; `path` holds {placeholders} for World.ids."""

    method: str
    path: str
    route: str  # the route as the app registers it ("METHOD canonical path")
    needs: str | None  # capability required; None means no authentication at all
    ok: frozenset[int]  # what an allowed caller may get (409: authorised, wrong state)
    foreign: str | None = None  # answer to a caller limited to their own workspaces
    body: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """How the case appears in a failure."""
        return f"{self.method} {self.path}"


def case(
    method: str,
    path: str,
    needs: str | None,
    ok: set[int],
    *,
    route: str | None = None,
    foreign: str | None = None,
    body: dict[str, Any] | None = None,
) -> Case:
    """A Case; the route is the path unless the path fills in an id or a query."""
    return Case(method, path, f"{method} {route or path}", needs, frozenset(ok), foreign, body)


WS, OP = "/v1/workspaces/{id}", "/v1/operations/{id}"
ONB, PB = "/v1/onboard/requests", "/v1/playbooks"
POWER = "/v1/workspaces/{id}/{action}"
# Ordered so that each state change comes after every request that needs the earlier state.
CASES: tuple[Case, ...] = (
    case("GET", "/healthz", None, {200}),
    case("GET", "/readyz", None, {200}),
    case("GET", "/metrics", None, {200}),
    case("GET", "/v1/openapi.json", None, {200}),
    case("GET", "/v1/plans", CATALOG, {200}),
    case("GET", "/v1/images", CATALOG, {200}),
    case("GET", "/v1/workspaces", READ, {200}),
    case("GET", f"/v1/workspaces?owner={OTHER}", READ, {200}, route="/v1/workspaces"),
    case("GET", "/v1/workspaces/{mine}", READ, {200}, route=WS),
    case("GET", "/v1/workspaces/{theirs}", READ, {200}, route=WS, foreign=HIDDEN),
    case("GET", "/v1/operations/{op_mine}", READ, {200}, route=OP),
    case("GET", "/v1/operations/{op_theirs}", READ, {200}, route=OP, foreign=HIDDEN),
    case("GET", "/v1/operations/{op_mine}/log", READ, {200}, route=OP + "/log"),
    case("GET", "/v1/operations/{op_theirs}/log", READ, {200}, route=OP + "/log", foreign=HIDDEN),
    case(
        "GET",
        "/v1/operations/{op_theirs}/log?follow=1",
        READ,
        {200},
        route=OP + "/log",
        foreign=HIDDEN,
    ),
    case("GET", "/v1/nodes", NODES, {200}),
    case("GET", "/v1/audit", AUDIT, {200}),
    case("GET", "/v1/approvals", APPROVALS, {200}),
    case("GET", "/v1/tokens", TOKENS, {200}),
    case("POST", "/v1/workspaces", WRITE, {202}, body=SMALL),
    case(
        "POST",
        "/v1/workspaces#for-another-owner",
        WRITE,
        {202},
        route="/v1/workspaces",
        foreign=FORBIDDEN,
        body={**SMALL, "owner": OTHER},
    ),
    case(
        "POST",
        "/v1/workspaces/{mine}/extend",
        WRITE,
        {200},
        route=WS + "/extend",
        body={"hours": 1},
    ),
    case(
        "POST",
        "/v1/workspaces/{theirs}/extend",
        WRITE,
        {200},
        route=WS + "/extend",
        foreign=HIDDEN,
        body={"hours": 1},
    ),
    case("POST", "/v1/workspaces/{mine}/start", WRITE, {409}, route=POWER),
    case("POST", "/v1/workspaces/{theirs}/start", WRITE, {409}, route=POWER, foreign=HIDDEN),
    case("POST", "/v1/workspaces/{mine}/stop", WRITE, {202}, route=POWER),
    case("POST", "/v1/workspaces/{theirs}/stop", WRITE, {202}, route=POWER, foreign=HIDDEN),
    case("POST", "/v1/workspaces/{mine}/reboot", WRITE, {202, 409}, route=POWER),
    case("POST", "/v1/workspaces/{theirs}/reboot", WRITE, {202, 409}, route=POWER, foreign=HIDDEN),
    case("POST", "/v1/workspaces/{mine}/rebuild", WRITE, {202, 409}, route=POWER),
    case("POST", "/v1/workspaces/{theirs}/rebuild", WRITE, {202, 409}, route=POWER, foreign=HIDDEN),
    case("POST", "/v1/operations/{gated_mine}/cancel", WRITE, {202}, route=OP + "/cancel"),
    case(
        "POST",
        "/v1/operations/{gated_theirs}/cancel",
        WRITE,
        {202},
        route=OP + "/cancel",
        foreign=HIDDEN,
    ),
    case(
        "POST",
        "/v1/approvals/{approval}/approve",
        APPROVALS,
        {200},
        route="/v1/approvals/{id}/{decision}",
    ),
    case(
        "POST",
        "/v1/approvals/{approval}/deny",
        APPROVALS,
        {409},
        route="/v1/approvals/{id}/{decision}",
    ),
    case("POST", "/v1/nodes", ADD_NODES, {201}, body={"name": "spare", "libvirt_uri": TEST_URI}),
    # The test-driver node has no SSH host key: an allowed caller gets a readable 422.
    case(
        "POST",
        "/v1/nodes/local/approve",
        ADD_NODES,
        {422},
        route="/v1/nodes/{name}/approve",
        body={"fingerprint": "SHA256:" + "A" * 43},
    ),
    case("GET", "/v1/keys", READ, {200}),
    case("GET", f"/v1/keys?owner={OTHER}", READ, {200}, route="/v1/keys", foreign=FORBIDDEN),
    case("POST", "/v1/keys", WRITE, {200, 201}, body={"public_key": PUBLIC_KEY}),
    case("DELETE", "/v1/keys/{key_mine}", WRITE, {200, 404}, route="/v1/keys/{id}"),
    case("GET", PB, CATALOG, {200}),
    case("GET", PB + "/nonexistent", CATALOG, {404}, route=PB + "/{name}"),
    # Authorised before the body is read: an allowed caller sending JSON gets 415.
    case("POST", PB, PLAYBOOKS, {415}, body={"file": "x"}),
    case("DELETE", PB + "/nonexistent", PLAYBOOKS, {404}, route=PB + "/{name}"),
    case(
        "POST",
        "/v1/workspaces/{mine}/playbooks",
        WRITE,
        {404, 409, 422},
        route=WS + "/playbooks",
        body={"playbook": "nonexistent"},
    ),
    case("GET", "/v1/acl", POLICY, {200, 503}),
    case("GET", ONB, READ, {200}),
    case("GET", ONB + "/{onboard_mine}", READ, {200}, route=ONB + "/{id}"),
    case("GET", ONB + "/{onboard_theirs}", READ, {200}, route=ONB + "/{id}", foreign=HIDDEN),
    case("GET", ONB + "/{onboard_mine}/log", READ, {200}, route=ONB + "/{id}/log"),
    case(
        "GET", ONB + "/{onboard_theirs}/log", READ, {200}, route=ONB + "/{id}/log", foreign=HIDDEN
    ),
    case("POST", ONB, WRITE, {202}, body={**ONBOARD, "host": "192.0.2.30"}),
    case(
        "POST",
        ONB + "/{onboard_mine}/approve",
        ONBOARD_OPS,
        {409},
        route=ONB + "/{id}/approve",
        body={"fingerprint": "SHA256:" + "A" * 43},
    ),
    case(
        "POST", ONB + "/{onboard_mine}/cancel", ONBOARD_OPS, {200, 409}, route=ONB + "/{id}/cancel"
    ),
    case("POST", "/v1/tokens", TOKENS, {201}, body={"role": "admin", "owner": "mallory"}),
    case("DELETE", "/v1/tokens/{victim}", TOKENS, {200}, route="/v1/tokens/{id}"),
    case("DELETE", "/v1/workspaces/{mine}", WRITE, {202, 409}, route=WS),
    case("DELETE", "/v1/workspaces/{theirs}", WRITE, {202, 409}, route=WS, foreign=HIDDEN),
)


def expected(case: Case, caller: str) -> str:
    """The contract's answer to `caller` for `case`."""
    if case.needs is None:
        return OK
    grants = GRANTS.get(caller)
    if grants is None:
        return UNAUTHENTICATED
    if case.needs not in grants:
        return FORBIDDEN
    if case.foreign is not None and ALL_OWNERS not in grants:
        return case.foreign
    return OK


def outcome(case: Case, status: int) -> str:
    """What the app's answer means, in the same terms as `expected`."""
    if status in case.ok:
        return OK
    return REFUSED.get(status, f"unexpected {status}")


@dataclass(frozen=True)
class World:
    """Headers per caller, and the ids the cases point at."""

    headers: dict[str, dict[str, str]]
    ids: dict[str, str]


@pytest.fixture
async def world(client: Client, admin_headers: dict[str, str]) -> World:
    """A token per role, a revoked one, and workspaces of the developer and of someone else."""

    async def token(role: str, owner: str) -> tuple[str, dict[str, str]]:
        resp = await client.post(
            "/v1/tokens", json={"role": role, "owner": owner}, headers=admin_headers
        )
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        return body["token"]["id"], {"Authorization": f"Bearer {body['secret']}"}

    async def workspace(owner: str, name: str, plan: str) -> dict[str, Any]:
        body = {"plan": plan, "image": "debian-12", "name": name, "owner": owner}
        resp = await client.post("/v1/workspaces", json=body, headers=admin_headers)
        assert resp.status == 202, await resp.text()
        created: dict[str, Any] = await resp.json()
        return created

    async def onboard(host: str, as_: dict[str, str]) -> str:
        resp = await client.post(ONB, json={**ONBOARD, "host": host}, headers=as_)
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["id"])

    owners = {"admin": "ada", "operator": "olga", "developer": DEV, "viewer": "vic"}
    made = await asyncio.gather(
        *(token(role, owner) for role, owner in owners.items()),
        token("admin", "rex"),
        token("viewer", "victim"),
        token("developer", OTHER),
    )
    other = made.pop()[1]
    headers = {role: h for role, (_id, h) in zip(owners, made, strict=False)}
    (revoked_id, revoked), (victim_id, _victim) = made[-2:]
    assert (await client.delete(f"/v1/tokens/{revoked_id}", headers=admin_headers)).status == 200
    headers["revoked token"] = revoked
    headers["no token"] = {}
    headers["unknown token"] = {"Authorization": "Bearer prov_" + "n" * 43}

    mine = await workspace(DEV, "dana-box", "small")
    theirs = await workspace(OTHER, "other-box", "small")
    gated_mine = await workspace(DEV, "dana-big", "large")
    gated_theirs = await workspace(OTHER, "other-big", "large")
    decide = await workspace(OTHER, "other-huge", "large")
    listing = await (await client.get("/v1/approvals", headers=admin_headers)).json()
    [approval] = [a for a in listing["approvals"] if a["operation_id"] == decide["operation"]["id"]]
    done = await asyncio.gather(
        *(wait_operation(client, admin_headers, w["operation"]["id"]) for w in (mine, theirs))
    )
    assert [op["state"] for op in done] == ["succeeded", "succeeded"]
    ids = {
        "mine": mine["workspace"]["id"],
        "theirs": theirs["workspace"]["id"],
        "op_mine": mine["operation"]["id"],
        "op_theirs": theirs["operation"]["id"],
        "gated_mine": gated_mine["operation"]["id"],
        "gated_theirs": gated_theirs["operation"]["id"],
        "approval": approval["id"],
        "victim": victim_id,
        "onboard_mine": await onboard("192.0.2.10", headers["developer"]),
        "onboard_theirs": await onboard("192.0.2.20", other),
    }
    resp = await client.post(
        "/v1/keys", json={"public_key": PUBLIC_KEY}, headers=headers["developer"]
    )
    assert resp.status == 201, await resp.text()
    ids["key_mine"] = (await resp.json())["id"]
    return World(headers, ids)


async def snapshot(system: System) -> dict[str, Any]:
    """Everything a request could change, and nothing the background workers change."""
    async with system.store.transaction() as tx:
        workspaces = await tx.list_workspaces(owner=None, state=None, after=None, limit=1000)
        tokens = await tx.list_tokens(after=None, limit=1000)
        approvals = await tx.list_approvals(state=None, after=None, limit=1000)
        operations = await tx.count_operations_by_state()
        audit = await tx.list_audit(target=None, actor=None, after=None, limit=100_000)
    nodes = await system.core.nodes.list()
    return {
        "workspaces": {w.id: w.expires_at for w in workspaces},
        "tokens": {t.id: t.revoked_at for t in tokens},
        "approvals": {a.id: a.state for a in approvals},
        "operations": sum(operations.values()) - operations.get("awaiting_approval", 0),
        "awaiting": operations.get("awaiting_approval", 0),
        "nodes": sorted(node.name for node, _used in nodes),
        "audit": [(e.actor, e.action, e.target) for e in audit if e.actor != "system"],
    }


def error_shape_problem(content_type: str, text: str) -> str | None:
    """Why a refusal's body is not {"error": {"code": snake_case, "message": sentence}}."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if content_type != "application/json" or not isinstance(body, dict):
        return f"not a JSON object ({content_type}: {text[:80]!r})"
    error = body.get("error")
    if set(body) != {"error"} or not isinstance(error, dict) or set(error) != {"code", "message"}:
        return f"wrong shape {body}"
    if not isinstance(error["code"], str) or not SNAKE.match(error["code"]):
        return f"code not snake_case {error['code']!r}"
    if not isinstance(error["message"], str) or not error["message"].strip():
        return "empty message"
    return None


def leaks(text: str, status: int, ids: dict[str, str]) -> list[str]:
    """What of the other owner's a developer's answer reveals (a 404 may echo the asked id)."""
    secrets = [OTHER, *OTHER_NAMES]
    if status < 400:
        secrets += [ids["theirs"], ids["op_theirs"], ids["gated_theirs"]]
    return [s for s in secrets if s in text]


@pytest.mark.parametrize("caller", CALLERS)
async def test_every_route_answers_the_caller_as_the_contract_says(
    caller: str, client: Client, world: World, system: System
) -> None:
    problems: list[str] = []
    before = await snapshot(system)
    for c in CASES:
        path = c.path.split("#")[0].format(**world.ids)
        resp = await client.request(c.method, path, json=c.body, headers=world.headers[caller])
        text = await resp.text()
        want, got = expected(c, caller), outcome(c, resp.status)
        if got != want:
            problems.append(f"{c.label}: want {want}, got {got} ({resp.status} {text[:120]})")
        after = await snapshot(system)
        if resp.status in REFUSED:
            if (why := error_shape_problem(resp.content_type, text)) is not None:
                problems.append(f"{c.label} -> {resp.status}: {why}")
            if after != before:
                problems.append(f"{c.label} was refused ({resp.status}) yet changed state")
        if caller == "developer" and (found := leaks(text, resp.status, world.ids)):
            problems.append(f"{c.label} -> {resp.status} shows the other owner's {found}")
        before = after
    if problems:
        pytest.fail(f"as {caller}:\n  " + "\n  ".join(problems), pytrace=False)


async def test_listings_show_a_developer_only_her_own_workspaces(
    client: Client, world: World
) -> None:
    async def owners(caller: str, query: str = "") -> set[str]:
        resp = await client.get(f"/v1/workspaces{query}", headers=world.headers[caller])
        assert resp.status == 200
        return {w["owner"] for w in (await resp.json())["workspaces"]}

    assert await owners("developer") == {DEV}
    assert await owners("developer", f"?owner={OTHER}") == set()
    for caller in ("admin", "operator", "viewer"):
        assert await owners(caller) == {DEV, OTHER}
        assert await owners(caller, f"?owner={OTHER}") == {OTHER}


async def test_the_matrix_covers_every_route_the_app_serves(client: Client) -> None:
    served = {
        f"{route.method} {route.resource.canonical}"
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served == {c.route for c in CASES}
