"""A tailnet that fails at each step of a workspace's life: clear errors, nothing leaked or lost;
and the same life on Headscale's own API."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from provisioner.app import cli as main
from provisioner.settings import Settings, TailnetSettings
from tests.fakes.headscale_api import FakeHeadscale
from tests.fakes.tailscale_api import FakeTailscale
from tests.test_tailnet_workspaces import (
    BASE_TAG,
    OWNER,
    OWNER_TAG,
    create,
    play_guest,
    tailnet_settings,
    wait_done,
)

pytestmark = pytest.mark.timeout(120)
DEVICES = "/api/v2/tailnet/-/devices"


@pytest.fixture
def settings(settings: Settings, tailnet: FakeTailscale) -> Settings:
    ts = tailnet_settings(tailnet, join_timeout=timedelta(seconds=4))
    return replace(settings, tailnet=ts)


@pytest.mark.parametrize(
    ("status", "times", "retry_after", "outcome", "words"),
    [
        (429, 2, "1", "succeeded", ""),  # honoured, then the join goes on
        (502, 2, None, "succeeded", ""),  # retried by the client, then by the step
        # Refusals are not retried; once only, so the undo's own lookup cleans up.
        (401, 1, None, "failed", "401"),
        (403, 1, None, "failed", "403"),
        # The list's 404 quirk (shared-in devices): the client asks again with fields=default.
        (404, 1, None, "succeeded", ""),
    ],
)
async def test_a_failing_device_lookup_at_the_join(
    system: Any,
    client: Any,
    tailnet: FakeTailscale,
    admin_headers: dict[str, str],
    status: int,
    times: int,
    retry_after: str | None,
    outcome: str,
    words: str,
) -> None:
    created = await create(client, admin_headers, "flaky")
    await play_guest(system, tailnet, "flaky")
    tailnet.fail(status, times=times, path=DEVICES, method="GET", retry_after=retry_after)
    op = await wait_done(client, admin_headers, created["operation"]["id"])
    assert op["state"] == outcome, op
    if outcome == "failed":
        assert words in op["error"]
        # The undo looked again, found the device, deleted it; the key is revoked.
        assert tailnet.devices == {}
        assert all(k.revoked is not None for k in tailnet.keys.values())


async def test_a_tailnet_that_times_out_fails_the_mint_with_the_reason(
    client: Any, tailnet: FakeTailscale, admin_headers: dict[str, str], system: Any
) -> None:
    tailnet.delay(15.0, path="/api/v2/tailnet/-/keys")
    created = await create(client, admin_headers, "slow")
    # Never re-sent by the client after a timeout (a key might have been minted), retried by
    # the step three times: four timeouts of 10 s.
    op = await wait_done(client, admin_headers, created["operation"]["id"], seconds=75)
    assert op["state"] == "failed", op
    assert "time" in op["error"].lower()
    hypervisor = await system.fleet.hypervisor("local")
    assert not [v for v in await hypervisor.volumes() if v.startswith("ws-slow")]


async def test_a_delete_while_the_tailnet_refuses_fails_readably_and_a_retry_finishes(
    system: Any, client: Any, tailnet: FakeTailscale, admin_headers: dict[str, str]
) -> None:
    created = await create(client, admin_headers, "gone")
    await play_guest(system, tailnet, "gone")
    assert (await wait_done(client, admin_headers, created["operation"]["id"]))["state"] == (
        "succeeded"
    )
    ws_id = created["workspace"]["id"]
    tailnet.fail(403, times=None, path="/api/v2/device/", method="DELETE")
    first = await (await client.delete(f"/v1/workspaces/{ws_id}", headers=admin_headers)).json()
    failed = await wait_done(client, admin_headers, first["id"])
    assert failed["state"] == "failed" and "403" in failed["error"]
    assert len(tailnet.devices) == 1  # nothing forgotten: the device id is still recorded
    tailnet.clear_faults()
    again = await (await client.delete(f"/v1/workspaces/{ws_id}", headers=admin_headers)).json()
    assert (await wait_done(client, admin_headers, again["id"]))["state"] == "succeeded"
    assert tailnet.devices == {}


HEADSCALE_POLICY = {
    "tagOwners": {
        "tag:provisioner": [],
        OWNER_TAG: ["tag:provisioner"],
        BASE_TAG: ["tag:provisioner"],
    },
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}


async def test_a_workspace_lives_on_headscale_too(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    async with FakeHeadscale.running(policy_mode="database") as fake:
        fake.set_policy(json.dumps(HEADSCALE_POLICY))
        hs = TailnetSettings(
            kind="headscale",
            api_url=fake.base_url,
            api_key=fake.add_api_key(),
            base_domain="hs.example",
            tags=(BASE_TAG,),
            join_timeout=timedelta(seconds=4),
        )
        async with main.built(replace(settings, tailnet=hs)) as system:
            await main.ensure_admin(system)
            system.runner.start()
            try:
                async with TestClient(TestServer(system.api())) as client:
                    created = await create(client, admin_headers, "hsdemo")
                    secret = await play_guest(system, fake, "hsdemo")  # type: ignore[arg-type]
                    op = await wait_done(client, admin_headers, created["operation"]["id"])
                    assert op["state"] == "succeeded", op
                    ws_id = created["workspace"]["id"]
                    ws = await (
                        await client.get(f"/v1/workspaces/{ws_id}", headers=admin_headers)
                    ).json()
                    assert ws["tailscale"]["hostname"] == "hsdemo.hs.example"
                    assert ws["owner"] == OWNER
                    (node,) = fake.nodes.values()
                    assert sorted(node.tags) == sorted([OWNER_TAG, BASE_TAG])
                    assert all(k.used or k.expiration <= fake.now() for k in fake.keys.values())
                    deleted = await (
                        await client.delete(f"/v1/workspaces/{ws_id}", headers=admin_headers)
                    ).json()
                    assert (await wait_done(client, admin_headers, deleted["id"]))[
                        "state"
                    ] == "succeeded"
                    assert fake.nodes == {}
                    assert secret not in json.dumps(ws)
            finally:
                await system.runner.stop(drain_seconds=5)
