"""The fakes themselves, over raw HTTP: status codes, bodies, ETag/If-Match, tag ownership, joins.

These pin the wire behaviour of the reference (§1 to §8) so that a client passing against the
fakes talks the way the real servers expect; they use no code of ours.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.headscale_api import FakeHeadscale
from tests.fakes.tailnet_common import JoinRefused, http_date
from tests.fakes.tailnet_policy import Policy, PolicyError, parse_hujson
from tests.fakes.tailscale_api import FakeTailscale

POLICY = """{
  "groups": {"group:devs": ["dev@example.com"]},
  "tagOwners": {
    "tag:provisioner": [],
    "tag:alice": ["tag:provisioner"],
    "tag:devbox": ["group:devs"],
    "tag:a": [], "tag:b": [],
  },
  "acls": [{"action": "accept", "src": ["group:devs"], "dst": ["tag:devbox:22,80", "autogroup:self:*"]}],
}"""


@pytest.fixture
async def ts() -> AsyncIterator[FakeTailscale]:
    async with FakeTailscale.running() as fake:
        fake.set_policy(POLICY)
        yield fake


@pytest.fixture
async def http(ts: FakeTailscale) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ts.base_url) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def token(http: httpx.AsyncClient, client_id: str, secret: str, **form: str) -> Any:
    answer = await http.post(
        "/api/v2/oauth/token", data={"client_id": client_id, "client_secret": secret, **form}
    )
    return answer


# Authentication and OAuth (§1.1).


async def test_api_key_as_bearer_or_basic_and_401_otherwise(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    key = ts.add_api_key("admin@example.com")
    path = "/api/v2/tailnet/-/devices"
    assert (await http.get(path, headers=bearer(key))).json() == {"devices": []}
    assert (await http.get(path, auth=(key, ""))).status_code == 200
    for headers in ({}, bearer("tskey-api-nope"), {"Authorization": "Token " + key}):
        answer = await http.get(path, headers=headers)
        assert (answer.status_code, answer.json()) == (401, {"message": "API token invalid"})


async def test_oauth_token_endpoint_follows_rfc_6749(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    client_id, secret = ts.add_oauth_client(["devices:core", "auth_keys"], ["tag:provisioner"])
    answer = await token(http, client_id, secret)  # no grant_type, as Tailscale's curl example
    body = answer.json()
    assert answer.status_code == 200 and body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600 and body["scope"] == "auth_keys devices:core"
    assert body["tags"] == "tag:provisioner"
    basic = await http.post(
        "/api/v2/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert basic.status_code == 200
    narrowed = await token(http, client_id, secret, scope="devices:core:read,auth_keys")
    assert narrowed.json()["scope"] == "devices:core:read auth_keys"
    owned = await token(http, client_id, secret, tags="tag:alice")
    assert owned.json()["tags"] == "tag:alice"
    for form, status, error in (
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "policy_file"}, 400, "invalid_scope"),
        ({"tags": "tag:devbox"}, 400, "invalid_target"),
    ):
        refused = await token(http, client_id, secret, **form)
        assert (refused.status_code, refused.json()["error"]) == (status, error)
    wrong = await token(http, client_id, "tskey-client-wrong")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    assert "error_description" in wrong.json()


async def test_scopes_gate_routes_and_tokens_expire(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    client_id, secret = ts.add_oauth_client(["devices:core"], ["tag:provisioner"])
    access = (await token(http, client_id, secret)).json()["access_token"]
    assert (await http.get("/api/v2/tailnet/-/devices", headers=bearer(access))).status_code == 200
    denied = await http.get("/api/v2/tailnet/-/acl", headers=bearer(access))
    assert denied.status_code == 403 and "permissions" in denied.json()["message"]
    ts.advance(3601)
    assert (await http.get("/api/v2/tailnet/-/devices", headers=bearer(access))).status_code == 401


async def test_tailnet_must_be_dash_or_the_id(ts: FakeTailscale, http: httpx.AsyncClient) -> None:
    key = ts.add_api_key("admin@example.com")
    for tailnet, status in (("-", 200), (ts.tailnet_id, 200), ("example.org", 404)):
        answer = await http.get(f"/api/v2/tailnet/{tailnet}/devices", headers=bearer(key))
        assert answer.status_code == status
    assert answer.json() == {"message": "user tailnet does not match"}


# Devices (§2).


async def test_device_list_projection_and_filters(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    key = ts.add_api_key("admin@example.com")
    ts.add_device("one", tags=["tag:a", "tag:b"])
    ts.add_device("two", tags=["tag:a"])
    path = "/api/v2/tailnet/-/devices"
    default = (await http.get(path, headers=bearer(key))).json()["devices"]
    assert "enabledRoutes" not in default[0] and "nodeId" in default[0]
    full = (await http.get(path, params={"fields": "all"}, headers=bearer(key))).json()
    assert "enabledRoutes" in full["devices"][0]
    both = await http.get(path, params=[("tags", "tag:a"), ("tags", "tag:b")], headers=bearer(key))
    assert [d["hostname"] for d in both.json()["devices"]] == ["one"]
    named = await http.get(path, params={"hostname": "two"}, headers=bearer(key))
    assert [d["hostname"] for d in named.json()["devices"]] == ["two"]
    assert (await http.get(path, params={"color": "red"}, headers=bearer(key))).status_code == 400


async def test_device_get_delete_and_shared_in(ts: FakeTailscale, http: httpx.AsyncClient) -> None:
    key = ts.add_api_key("admin@example.com")
    device = ts.add_device("one", tags=["tag:a"])
    shared = ts.add_device("theirs", is_external=True)
    for ident in (device.node_id, device.id):
        got = await http.get(f"/api/v2/device/{ident}", headers=bearer(key))
        assert got.json()["nodeId"] == device.node_id
    gone = await http.delete(f"/api/v2/device/{device.id}", headers=bearer(key))
    assert (gone.status_code, gone.content) == (200, b"")
    again = await http.delete(f"/api/v2/device/{device.id}", headers=bearer(key))
    assert (again.status_code, again.json()) == (404, {"message": "not found"})
    outside = await http.delete(f"/api/v2/device/{shared.node_id}", headers=bearer(key))
    assert outside.status_code == 501 and "outside of your tailnet" in outside.json()["message"]
    all_fields = await http.get(
        "/api/v2/tailnet/-/devices", params={"fields": "all"}, headers=bearer(key)
    )
    assert all_fields.status_code == 404  # tailscale/tailscale#21721


async def test_tag_ownership_decides_who_may_tag(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    device = ts.add_device("box")
    path = f"/api/v2/device/{device.node_id}/tags"
    dev = ts.add_api_key("dev@example.com", role="member")
    other = ts.add_api_key("other@example.com", role="member")
    admin = ts.add_api_key("admin@example.com", role="admin")
    assert (await http.post(path, json={"tags": ["tag:devbox"]}, headers=bearer(dev))).json() == {}
    refused = await http.post(path, json={"tags": ["tag:devbox"]}, headers=bearer(other))
    assert refused.status_code == 400
    assert refused.json() == {"message": "requested tags [tag:devbox] are invalid or not permitted"}
    assert (
        await http.post(path, json={"tags": ["tag:a"]}, headers=bearer(admin))
    ).status_code == 200
    madeup = await http.post(path, json={"tags": ["tag:madeup", "tag:1bad"]}, headers=bearer(admin))
    assert madeup.status_code == 400
    assert (
        madeup.json()["message"]
        == "requested tags [tag:madeup tag:1bad] are invalid or not permitted"
    )
    assert (await http.post(path, json={"tags": []}, headers=bearer(admin))).status_code == 400
    client_id, secret = ts.add_oauth_client(["devices:core"], ["tag:provisioner"])
    access = (await token(http, client_id, secret)).json()["access_token"]
    owned = await http.post(path, json={"tags": ["tag:alice"]}, headers=bearer(access))
    assert owned.status_code == 200 and ts.devices[device.node_id].tags == ["tag:alice"]
    foreign = await http.post(path, json={"tags": ["tag:devbox"]}, headers=bearer(access))
    assert foreign.status_code == 400


# Keys (§3).


async def test_oauth_keys_need_tags_matching_or_owned_by_the_client(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    client_id, secret = ts.add_oauth_client(["auth_keys"], ["tag:a", "tag:b"])
    access = (await token(http, client_id, secret)).json()["access_token"]

    async def create(tags: list[str]) -> httpx.Response:
        body = {"capabilities": {"devices": {"create": {"tags": tags}}}, "expirySeconds": 60}
        return await http.post("/api/v2/tailnet/-/keys", json=body, headers=bearer(access))

    assert (await create([])).status_code == 400
    assert (await create(["tag:b", "tag:a"])).status_code == 200
    subset = await create(["tag:a"])  # the observed quirk (terraform-provider-tailscale#437)
    assert subset.json() == {"message": "requested tags [tag:a] are invalid or not permitted"}


async def test_key_secret_once_and_invalid_after_use_revoke_or_expiry(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    api_key = ts.add_api_key("admin@example.com")
    body = {"capabilities": {"devices": {"create": {"tags": ["tag:a"]}}}, "expirySeconds": 600}
    created = [
        (await http.post("/api/v2/tailnet/-/keys", json=body, headers=bearer(api_key))).json()
        for _ in range(3)
    ]
    assert all(k["key"].startswith("tskey-auth-") and k["userId"] for k in created)
    used, revoked, expiring = created
    ts.register_device(used["key"], "host")
    await http.delete(f"/api/v2/tailnet/-/keys/{revoked['id']}", headers=bearer(api_key))
    listed = (await http.get("/api/v2/tailnet/-/keys", headers=bearer(api_key))).json()["keys"]
    assert {k["id"] for k in listed} == {k["id"] for k in created}
    assert all("key" not in k for k in listed)
    shown = {k["id"]: k for k in listed}
    assert shown[used["id"]]["invalid"] and "revoked" in shown[revoked["id"]]
    assert "invalid" not in shown[expiring["id"]]
    ts.advance(601)
    late = await http.get(f"/api/v2/tailnet/-/keys/{expiring['id']}", headers=bearer(api_key))
    assert late.json()["invalid"] is True
    with pytest.raises(JoinRefused, match="expired"):
        ts.register_device(expiring["key"], "late")
    missing = await http.delete("/api/v2/tailnet/-/keys/kNOPE", headers=bearer(api_key))
    assert missing.status_code == 404


async def test_joins_spend_keys_allocate_addresses_and_dedupe_names(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    api_key = ts.add_api_key("admin@example.com")
    body = {"capabilities": {"devices": {"create": {"reusable": True, "tags": ["tag:a"]}}}}
    secret = (await http.post("/api/v2/tailnet/-/keys", json=body, headers=bearer(api_key))).json()
    first = await http.post("/fake/register", json={"authKey": secret["key"], "hostname": "Box"})
    second = ts.register_device(secret["key"], "box", visible_after_polls=1)
    device = first.json()["device"]
    assert device["name"] == "box.tail1234.ts.net" and second.name == "box-1.tail1234.ts.net"
    assert device["addresses"][0].startswith("100.") and device["addresses"][1].startswith(
        "fd7a:115c:a1e0:"
    )
    assert device["tags"] == ["tag:a"]
    listed = await http.get("/api/v2/tailnet/-/devices", headers=bearer(api_key))
    assert len(listed.json()["devices"]) == 1  # the second appears one poll later
    listed = await http.get("/api/v2/tailnet/-/devices", headers=bearer(api_key))
    assert len(listed.json()["devices"]) == 2
    bad = await http.post("/fake/register", json={"authKey": "tskey-auth-nope", "hostname": "x"})
    assert bad.status_code == 401


# Policy (§4).


async def test_policy_get_negotiates_and_etags(ts: FakeTailscale, http: httpx.AsyncClient) -> None:
    key = ts.add_api_key("admin@example.com")
    path = "/api/v2/tailnet/-/acl"
    raw = await http.get(path, headers=bearer(key))
    assert raw.headers["Content-Type"].startswith("application/hujson") and raw.text == POLICY
    assert raw.headers["ETag"] == '"' + hashlib.sha256(POLICY.encode()).hexdigest() + '"'
    parsed = await http.get(path, headers={**bearer(key), "Accept": "application/json"})
    assert parsed.json()["tagOwners"]["tag:a"] == []
    details = (await http.get(path, params={"details": "1"}, headers=bearer(key))).json()
    assert base64.b64decode(details["acl"]).decode() == POLICY and details["errors"] is None


async def test_policy_post_if_match_variants(http: httpx.AsyncClient) -> None:
    async with FakeTailscale.running() as fresh:
        key = fresh.add_api_key("admin@example.com")
        url = f"{fresh.base_url}/api/v2/tailnet/-/acl"
        headers = {**bearer(key), "Content-Type": "application/hujson"}
        first = await http.post(
            url, content=POLICY, headers={**headers, "If-Match": '"ts-default"'}
        )
        assert first.status_code == 200 and first.headers["ETag"] == fresh.etag
        again = await http.post(
            url, content=POLICY, headers={**headers, "If-Match": '"ts-default"'}
        )
        assert again.status_code == 412
        assert again.json() == {"message": "precondition failed, invalid old hash"}
        stale = await http.post(url, content=POLICY, headers={**headers, "If-Match": '"abc"'})
        assert stale.status_code == 412
        ok = await http.post(url, content=POLICY, headers={**headers, "If-Match": fresh.etag})
        assert ok.status_code == 200
        assert (
            await http.post(url, content=POLICY, headers={**headers, "If-Match": "*"})
        ).is_success
        member = fresh.add_api_key("someone@example.com", role="member")
        assert (await http.post(url, content=POLICY, headers=bearer(member))).status_code == 403


async def test_policy_tests_fail_the_post_and_validate_reports_them(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    key = ts.add_api_key("admin@example.com")
    failing = POLICY[:-1] + '"tests": [{"src": "dev@example.com", "accept": ["tag:devbox:443"]}]}'
    post = await http.post("/api/v2/tailnet/-/acl", content=failing, headers=bearer(key))
    assert post.status_code == 400 and post.json() == {
        "message": "test(s) failed",
        "data": [
            {
                "user": "dev@example.com",
                "errors": ['address "tag:devbox:443": want: Accept, got: Drop'],
            }
        ],
    }
    assert ts.policy_text == POLICY
    validate = "/api/v2/tailnet/-/acl/validate"
    checked = await http.post(validate, content=failing, headers=bearer(key))
    assert checked.status_code == 200 and checked.json()["message"] == "test(s) failed"
    tests = '[{"src": "dev@example.com", "accept": ["tag:devbox:80"], "deny": ["tag:a:80"]}]'
    assert (await http.post(validate, content=tests, headers=bearer(key))).json() == {}


def test_policy_grammar_covers_the_seed() -> None:
    policy = Policy.parse(
        POLICY + "\n// trailing comment",
        resolve_user=lambda t: t if "@" in t and ":" not in t else None,
        members={"dev@example.com", "x@example.com"},
    )
    assert policy.allows("dev@example.com", "tag:devbox", 80)
    assert not policy.allows("dev@example.com", "tag:devbox", 443)
    assert policy.allows("dev@example.com", "dev@example.com", 5000)  # autogroup:self
    assert not policy.allows("dev@example.com", "x@example.com", 5000)
    assert not policy.allows("x@example.com", "tag:devbox", 22)
    assert policy.users_owning("tag:devbox") == {"dev@example.com"}
    assert parse_hujson('{"a": "// not a comment", /* c */ "b": [1,],}') == {
        "a": "// not a comment",
        "b": [1],
    }
    with pytest.raises(PolicyError, match="tag:nope"):
        Policy.parse('{"acls": [{"action": "accept", "src": ["tag:nope"], "dst": ["*:*"]}]}',
                     resolve_user=lambda t: None)  # fmt: skip


# Faults and the request log (§7).


async def test_faults_by_path_count_retry_after_and_delay(
    ts: FakeTailscale, http: httpx.AsyncClient
) -> None:
    key = ts.add_api_key("admin@example.com")
    path = "/api/v2/tailnet/-/devices"
    ts.fail(429, times=1, retry_after=http_date(5), path=path)
    ts.fail(504, times=1, path=path)
    limited = await http.get(path, headers=bearer(key))
    assert limited.status_code == 429 and limited.headers["Retry-After"].endswith("GMT")
    assert (await http.get(path, headers=bearer(key))).status_code == 504
    assert (await http.get(path, headers=bearer(key))).status_code == 200
    ts.delay(0.2, times=1)
    slow = await http.get(path, headers=bearer(key))
    assert slow.elapsed.total_seconds() >= 0.2
    assert [(r.status, r.principal) for r in ts.calls("GET", path)][-1] == (
        200,
        "admin@example.com",
    )


# Headscale (§8.1).


@pytest.fixture
async def hs() -> AsyncIterator[FakeHeadscale]:
    async with FakeHeadscale.running() as fake:
        fake.add_user("alice", email="alice@example.com")
        fake.set_policy('{"tagOwners": {"tag:a": ["alice@"]}}')
        yield fake


async def test_headscale_wire_shapes(hs: FakeHeadscale) -> None:
    key = hs.add_api_key()
    async with httpx.AsyncClient(base_url=hs.base_url, headers=bearer(key)) as http:
        anonymous = await http.get("/api/v1/node", headers={"Authorization": ""})
        assert (anonymous.status_code, anonymous.text) == (401, "Unauthorized")
        missing = await http.get("/api/v1/node/7")
        assert missing.json() == {"code": 5, "message": "node not found", "details": []}
        neither = await http.post("/api/v1/preauthkey", json={})
        assert neither.status_code == 500 and neither.json()["code"] == 2
        made = await http.post("/api/v1/preauthkey", json={"aclTags": ["tag:a"], "reusable": True})
        secret = made.json()["preAuthKey"]["key"]
        listed = (await http.get("/api/v1/preauthkey")).json()["preAuthKeys"]
        assert listed[0]["key"].endswith("-***") and listed[0]["id"] == "1"
        hs.register_device(secret, "one")
        hs.register_device(secret, "one")  # reusable
        nodes = (await http.get("/api/v1/node")).json()["nodes"]
        assert [n["givenName"] for n in nodes] == ["one", "one-1"]
        assert nodes[0]["user"]["name"] == "tagged-devices" and nodes[0]["expiry"] is None
        unknown = await http.post("/api/v1/node/1/tags", json={"tags": ["tag:b"]})
        assert unknown.json()["message"] == "requested tags [tag:b] are invalid or not permitted"
        upper = await http.post("/api/v1/node/1/tags", json={"tags": ["tag:B"]})
        assert upper.status_code == 500  # validateTag's plain error through grpc-gateway
        await http.post("/api/v1/preauthkey/expire", json={"id": "1"})
        with pytest.raises(JoinRefused, match="expired"):
            hs.register_device(secret, "three")


async def test_headscale_policy_put_check_and_modes(hs: FakeHeadscale) -> None:
    key = hs.add_api_key()
    async with httpx.AsyncClient(base_url=hs.base_url, headers=bearer(key)) as http:
        bad = '{"acls": [{"action": "accept", "src": ["group:x"], "dst": ["*:*"]}]}'
        put = await http.put("/api/v1/policy", json={"policy": bad})
        assert put.status_code == 500 and put.json()["message"].startswith("setting policy: ")
        check = await http.post("/api/v1/policy/check", json={"policy": bad})
        assert check.status_code == 400 and check.json()["code"] == 3
        good = '{"tagOwners": {"tag:a": ["alice@example.com"]}}'
        assert (await http.put("/api/v1/policy", json={"policy": good})).json()["policy"] == good
        assert (await http.get("/api/v1/policy")).json()["policy"] == good
        hs.policy_mode = "file"
        refused = await http.put("/api/v1/policy", json={"policy": good})
        assert "update is disabled" in refused.json()["message"]
