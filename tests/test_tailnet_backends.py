"""What both tailnet backends do alike: spent keys, and a misbehaving control plane.

A key joins one device and is spent. Faults give the same errors on both: retries are bounded
and honour Retry-After (seconds or an HTTP-date, capped), a call that may have reached the
server is repeated only when that is harmless, and no credential or key secret ever shows in
an error or a log line.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from provisioner.adapters.headscale import HeadscaleTailnet
from provisioner.adapters.tailnet_http import RetryPolicy, retry_after_seconds
from provisioner.adapters.tailscale import TailscaleTailnet
from provisioner.errors import ProvisionerError, TailnetRefused, TailnetUnavailable
from provisioner.ports.tailnet import Tailnet
from tests.fakes.headscale_api import FakeHeadscale
from tests.fakes.tailnet_common import FakeTailnetServer, JoinRefused, http_date
from tests.fakes.tailscale_api import FakeTailscale

RETRY = RetryPolicy(attempts=3, default_delay=0.05, max_delay=2.5, backoff=0.01)
TAGS = '{"tagOwners": {"tag:provisioner": [], "tag:alice": ["tag:provisioner"]}}'


@dataclass
class Rig:
    """One fake, our client on it, and every secret in play."""

    fake: FakeTailnetServer
    tailnet: Tailnet
    secrets: list[str]
    devices_path: str
    keys_path: str


@pytest.fixture(params=["tailscale", "headscale"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    if request.param == "tailscale":
        async with FakeTailscale.running() as fake:
            fake.set_policy(TAGS)
            client_id, secret = fake.add_oauth_client(["all"], tags=["tag:provisioner"])
            tailnet = TailscaleTailnet(
                base_url=fake.base_url, oauth_client_id=client_id, oauth_client_secret=secret,
                retry=RETRY, timeout=0.3,
            )  # fmt: skip
            yield Rig(
                fake, tailnet, [secret], "/api/v2/tailnet/-/devices", "/api/v2/tailnet/-/keys"
            )
            await tailnet.close()
            return
    async with FakeHeadscale.running() as fake:
        fake.set_policy(TAGS)
        api_key = fake.add_api_key()
        tailnet = HeadscaleTailnet(
            base_url=fake.base_url, api_key=api_key, retry=RETRY, timeout=0.3
        )
        yield Rig(fake, tailnet, [api_key], "/api/v1/node", "/api/v1/preauthkey")
        await tailnet.close()


async def timed(rig: Rig) -> float:
    started = time.monotonic()
    assert await rig.tailnet.devices() == []
    return time.monotonic() - started


async def test_a_key_joins_one_device_and_is_spent(rig: Rig) -> None:
    key = await rig.tailnet.create_auth_key(tags=["tag:alice"], expiry_seconds=600, description="x")
    assert rig.fake.register_device(key.secret, "ws-alice-1").tags == ["tag:alice"]
    with pytest.raises(JoinRefused, match="already"):
        rig.fake.register_device(key.secret, "ws-alice-2")
    assert [d.hostname for d in await rig.tailnet.devices()] == ["ws-alice-1"]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 8.0 <= (retry_after_seconds(http_date(10)) or 0) <= 10.0
    assert retry_after_seconds(http_date(-60)) == 0.0


async def test_429_waits_the_retry_after_seconds(rig: Rig) -> None:
    rig.fake.fail(429, retry_after="1", path=rig.devices_path)
    assert 0.95 <= await timed(rig) < 2.0
    assert [c.status for c in rig.fake.calls("GET", rig.devices_path)] == [429, 200]


async def test_429_waits_until_the_retry_after_date(rig: Rig) -> None:
    rig.fake.fail(429, retry_after=http_date(2), path=rig.devices_path)
    assert 0.95 <= await timed(rig) < 2.5


async def test_a_long_retry_after_is_capped_and_attempts_are_bounded(rig: Rig) -> None:
    rig.fake.fail(429, times=None, retry_after="3600", path=rig.devices_path)
    capped = RetryPolicy(attempts=3, max_delay=0.1)
    rig.tailnet._http.retry = capped  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(TailnetUnavailable, match=r"rate-limiting .* \(429\) after 3 attempts"):
        await rig.tailnet.devices()
    assert time.monotonic() - started < 1.0
    assert len(rig.fake.calls("GET", rig.devices_path)) == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried_then_succeed(rig: Rig, status: int) -> None:
    rig.fake.fail(status, times=2, path=rig.devices_path)
    await timed(rig)
    assert [c.status for c in rig.fake.calls("GET", rig.devices_path)] == [status, status, 200]


async def test_server_errors_that_persist_are_unavailable(rig: Rig) -> None:
    rig.fake.fail(502, times=None)
    with pytest.raises(TailnetUnavailable, match=r"502.*after 3 attempt"):
        await rig.tailnet.devices()


async def test_a_slow_read_times_out_after_bounded_retries(rig: Rig) -> None:
    rig.fake.delay(0.5, path=rig.devices_path)
    with pytest.raises(TailnetUnavailable, match="did not answer"):
        await rig.tailnet.devices()
    assert len(rig.fake.calls("GET", rig.devices_path)) == 3


async def test_a_key_create_that_timed_out_is_not_repeated(rig: Rig) -> None:
    rig.fake.delay(0.5, path=rig.keys_path)
    with pytest.raises(TailnetUnavailable, match="did not answer"):
        await rig.tailnet.create_auth_key(tags=["tag:alice"], expiry_seconds=60, description="x")
    assert len(rig.fake.calls("POST", rig.keys_path)) == 1


@pytest.mark.parametrize("status", [400, 403, 409])
async def test_refusals_are_not_retried_and_carry_the_servers_words(rig: Rig, status: int) -> None:
    rig.fake.fail(status, times=None, path=rig.devices_path, message="nope, not you")
    with pytest.raises(TailnetRefused, match=rf"\({status}[:)].*nope, not you"):
        await rig.tailnet.devices()
    assert len(rig.fake.calls("GET", rig.devices_path)) == 1


async def test_no_server_at_all_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tailnet = TailscaleTailnet(
        base_url=f"http://127.0.0.1:{port}", api_key="tskey-api-nobody", retry=RETRY
    )
    try:
        with pytest.raises(TailnetUnavailable, match="could not be reached"):
            await tailnet.devices()
    finally:
        await tailnet.close()


async def test_no_secret_in_any_error_or_log_line(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await rig.tailnet.create_auth_key(tags=["tag:alice"], expiry_seconds=60, description="x")
    rig.fake.register_device(key.secret, "ws-alice-1")
    [device] = await rig.tailnet.devices(hostname="ws-alice-1")
    messages: list[str] = [repr(key), repr(rig.tailnet)]
    rig.fake.fail(429, retry_after="0")
    rig.fake.fail(500, times=1)
    for attempt in (
        rig.tailnet.set_device_tags(device.id, ["tag:nope"]),
        rig.tailnet.set_device_tags("424242", ["tag:alice"]),
        rig.tailnet.set_policy('{"acls": [', if_match=None),
        rig.tailnet.create_auth_key(tags=["tag:Nope"], expiry_seconds=60, description="x"),
    ):
        with pytest.raises(ProvisionerError) as failed:
            await attempt
        messages.append(failed.value.message)
    rig.fake.fail(401, times=None)
    with pytest.raises(TailnetRefused) as refused:
        await rig.tailnet.devices()
    messages.append(refused.value.message)
    tokens = list(getattr(rig.fake, "tokens", {}))
    text = "\n".join(messages) + caplog.text
    for secret in [*rig.secrets, key.secret, *tokens]:
        assert secret not in text
    assert "retrying" in caplog.text  # the log did see the faults
