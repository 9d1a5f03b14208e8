"""HeadscaleTailnet against the fake Headscale /api/v1: pre-auth keys, nodes, tags, policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from provisioner.adapters.headscale import HeadscaleTailnet, policy_etag
from provisioner.adapters.tailnet_http import RetryPolicy
from provisioner.errors import ConfigError, Conflict, InvalidInput, TailnetRefused
from tests.fakes.headscale_api import FakeHeadscale
from tests.fakes.tailnet_common import JoinRefused

FAST = RetryPolicy(attempts=3, default_delay=0.05, max_delay=0.3, backoff=0.01)
POLICY = """{
  // operator's comment, kept
  "groups": {"group:ops": ["ops@"]},
  "tagOwners": {
    "tag:provisioner": ["group:ops"],
    "tag:alice": ["tag:provisioner"],
    "tag:bob": ["tag:provisioner"],
    "tag:workspace": ["tag:provisioner"],
  },
  "acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:alice:*"]}],
  "tests": [{"src": "alice@", "accept": ["tag:alice:22"], "deny": ["tag:bob:22"]}],
}
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeHeadscale]:
    async with FakeHeadscale.running() as fake:
        fake.add_user("alice", email="alice@example.com")
        fake.add_user("ops")
        fake.set_policy(POLICY)
        yield fake


@pytest.fixture
async def headscale(fake: FakeHeadscale) -> AsyncIterator[HeadscaleTailnet]:
    tailnet = HeadscaleTailnet(
        base_url=fake.base_url,
        api_key=fake.add_api_key(),
        magic_dns_domain="ts.example.org",
        retry=FAST,
        timeout=2.0,
    )
    yield tailnet
    await tailnet.close()


async def joined(fake: FakeHeadscale, tailnet: HeadscaleTailnet, hostname: str, tag: str) -> str:
    key = await tailnet.create_auth_key(tags=[tag], expiry_seconds=600, description=hostname)
    return str(fake.register_device(key.secret, hostname).id)


def test_an_api_key_is_required() -> None:
    with pytest.raises(ConfigError, match="HEADSCALE_API_KEY"):
        HeadscaleTailnet(base_url="http://127.0.0.1:1", api_key="")


async def test_pre_auth_key_is_single_use_tagged_expiring_and_userless(
    fake: FakeHeadscale, headscale: HeadscaleTailnet
) -> None:
    key = await headscale.create_auth_key(tags=["tag:alice"], expiry_seconds=900, description="x")
    stored = fake.keys[int(key.id)]
    assert (stored.reusable, stored.ephemeral, stored.user_id) == (False, False, None)
    assert stored.tags == ["tag:alice"] and key.tags == ("tag:alice",)
    assert stored.expiration is not None
    assert 895 <= (stored.expiration - datetime.now(UTC)).total_seconds() <= 900
    assert key.secret.startswith("hskey-auth-") and key.secret not in repr(key)


async def test_a_revoked_key_is_expired_and_cannot_join(
    fake: FakeHeadscale, headscale: HeadscaleTailnet
) -> None:
    key = await headscale.create_auth_key(tags=["tag:alice"], expiry_seconds=600, description="")
    await headscale.revoke_auth_key(key.id)
    await headscale.revoke_auth_key("9999")  # unknown: nothing to revoke, no error
    with pytest.raises(JoinRefused, match="authkey expired"):
        fake.register_device(key.secret, "ws-alice-1")
    assert fake.calls("POST", "/api/v1/preauthkey/expire")[0].body == {"id": key.id}


async def test_nodes_by_hostname_and_tag_with_the_magicdns_name(
    fake: FakeHeadscale, headscale: HeadscaleTailnet
) -> None:
    alice = await joined(fake, headscale, "ws-alice-1", "tag:alice")
    await joined(fake, headscale, "ws-bob-1", "tag:bob")
    await joined(fake, headscale, "ws-alice-1", "tag:alice")
    found = await headscale.devices(hostname="ws-alice-1")
    assert [d.name for d in found] == ["ws-alice-1.ts.example.org", "ws-alice-1-1.ts.example.org"]
    first = found[0]
    assert first.id == alice and first.tags == ("tag:alice",) and first.user is None
    assert first.addresses == ("100.64.0.1", "fd7a:115c:a1e0::1")
    assert first.created is not None and first.key_expiry_disabled
    assert [d.hostname for d in await headscale.devices(tag="tag:bob")] == ["ws-bob-1"]


async def test_without_a_domain_the_name_is_the_given_name(fake: FakeHeadscale) -> None:
    tailnet = HeadscaleTailnet(base_url=fake.base_url, api_key=fake.add_api_key())
    try:
        await joined(fake, tailnet, "WS Alice", "tag:alice")
        [device] = await tailnet.devices()
        assert (device.hostname, device.name) == ("WS Alice", "ws-alice")
    finally:
        await tailnet.close()


async def test_tags_must_exist_in_the_policy_and_cannot_all_go(
    fake: FakeHeadscale, headscale: HeadscaleTailnet
) -> None:
    node_id = await joined(fake, headscale, "ws-alice-1", "tag:alice")
    await headscale.set_device_tags(node_id, ["tag:alice", "tag:workspace"])
    assert fake.nodes[int(node_id)].tags == ["tag:alice", "tag:workspace"]
    with pytest.raises(TailnetRefused, match=r"\(400\).*\[tag:madeup\] are invalid or not"):
        await headscale.set_device_tags(node_id, ["tag:alice", "tag:madeup"])
    with pytest.raises(TailnetRefused, match="cannot remove all tags"):
        await headscale.set_device_tags(node_id, [])
    with pytest.raises(TailnetRefused, match=r"404: node not found"):
        await headscale.set_device_tags("4242", ["tag:alice"])


async def test_key_expiry_is_left_alone_on_tagged_nodes_and_disabled_on_others(
    fake: FakeHeadscale, headscale: HeadscaleTailnet
) -> None:
    fake.node_expiry = 3600
    tagged = await joined(fake, headscale, "ws-alice-1", "tag:alice")
    await headscale.disable_key_expiry(tagged)
    assert fake.calls("POST", f"/api/v1/node/{tagged}/expire") == []
    owner = next(u for u in fake.users.values() if u.name == "alice")
    key = fake.keys[max(fake.keys)]
    key.user_id, key.tags, key.used = owner.id, [], False
    untagged = str(fake.register_device(key.secret, "laptop").id)
    assert fake.nodes[int(untagged)].expiry is not None
    await headscale.disable_key_expiry(untagged)
    assert fake.nodes[int(untagged)].expiry is None
    [call] = fake.calls("POST", f"/api/v1/node/{untagged}/expire")
    assert call.query == {"disableExpiry": ["true"]}


async def test_delete_is_idempotent(fake: FakeHeadscale, headscale: HeadscaleTailnet) -> None:
    node_id = await joined(fake, headscale, "ws-alice-1", "tag:alice")
    await headscale.delete_device(node_id)
    await headscale.delete_device(node_id)
    assert fake.nodes == {}
    assert [c.status for c in fake.calls("DELETE")] == [200, 404]


async def test_policy_round_trip_with_the_hash_as_etag(
    fake: FakeHeadscale, headscale: HeadscaleTailnet
) -> None:
    document = await headscale.get_policy()
    assert document.text == POLICY and document.etag == policy_etag(POLICY)
    assert await headscale.validate_policy(POLICY) == []
    edited = POLICY.replace("kept", "kept, edited")
    written = await headscale.set_policy(edited, if_match=document.etag)
    assert written.text == edited == fake.policy_text and written.etag == policy_etag(edited)
    with pytest.raises(Conflict) as stale:
        await headscale.set_policy(POLICY, if_match=document.etag)
    assert stale.value.code == "policy_changed" and fake.policy_text == edited


async def test_no_policy_stored_yet_reads_as_empty(fake: FakeHeadscale) -> None:
    fake.policy_text = None
    tailnet = HeadscaleTailnet(base_url=fake.base_url, api_key=fake.add_api_key(), retry=FAST)
    try:
        document = await tailnet.get_policy()
        assert document.text == "" and document.etag == policy_etag("")
        await tailnet.set_policy(POLICY, if_match=document.etag)
        assert fake.policy_text == POLICY
    finally:
        await tailnet.close()


async def test_failing_tests_are_problems_and_refuse_the_write(
    fake: FakeHeadscale, headscale: HeadscaleTailnet
) -> None:
    broken = POLICY.replace('"deny": ["tag:bob:22"]', '"deny": ["tag:alice:22"]')
    assert await headscale.validate_policy(broken) == [
        "test(s) failed:",
        "alice@ -> tag:alice:22: expected DENIED, got ALLOWED",
    ]
    with pytest.raises(InvalidInput) as rejected:
        await headscale.set_policy(broken, if_match=None)
    assert rejected.value.code == "invalid_policy"
    assert "alice@ -> tag:alice:22: expected DENIED, got ALLOWED" in rejected.value.message
    assert fake.policy_text == POLICY
    assert len(fake.calls("PUT", "/api/v1/policy")) == 1  # a refusal is not retried


async def test_autogroup_admin_is_not_headscale_dialect(headscale: HeadscaleTailnet) -> None:
    seed = '{"tagOwners": {"tag:tim-cook": ["autogroup:admin"]}}'
    [problem] = await headscale.validate_policy(seed)
    assert "invalid autogroup" in problem


async def test_a_server_in_file_mode_says_how_to_allow_writes(
    fake: FakeHeadscale, headscale: HeadscaleTailnet
) -> None:
    fake.policy_mode = "file"
    with pytest.raises(TailnetRefused, match=r"policy\.mode to database"):
        await headscale.set_policy(POLICY, if_match=None)


async def test_a_wrong_api_key_is_refused_by_name(fake: FakeHeadscale) -> None:
    tailnet = HeadscaleTailnet(
        base_url=fake.base_url + "/api/v1", api_key="hskey-api-wrong-000", retry=FAST
    )
    try:
        with pytest.raises(TailnetRefused) as refused:
            await tailnet.devices()
        assert "refused the credentials (401)" in refused.value.message
        assert "HEADSCALE_API_KEY" in refused.value.message
        assert "hskey-api-wrong" not in refused.value.message
        assert fake.requests[-1].status == 401
    finally:
        await tailnet.close()
