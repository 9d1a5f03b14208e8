"""Publishing the policy through the real clients against the fake Tailscale and Headscale APIs."""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from acl.hujson import loads
from acl.merge import strip_generated
from acl.policy import PolicyConfig
from acl.publisher import PolicyChanged, PolicyInvalid, PolicyPublisher, StoreOwners
from acl.rbac import actor
from provisioner.adapters.headscale import HeadscaleTailnet
from provisioner.adapters.store.engine import SqlStore
from provisioner.adapters.tailnet_http import RetryPolicy
from provisioner.adapters.tailscale import TailscaleTailnet
from provisioner.app.acl_cli import add_acl_parser, run_acl
from provisioner.audit import AuditTrail
from provisioner.models import AuditEvent, Role
from provisioner.ports import Tailnet
from provisioner.requests import CreateRequest
from tests.fakes.headscale_api import FakeHeadscale
from tests.fakes.tailscale_api import FakeTailscale

if TYPE_CHECKING:
    from provisioner.app.composition import System

VALIDATE = "/api/v2/tailnet/-/acl/validate"
ACL = "/api/v2/tailnet/-/acl"
FAST = RetryPolicy(attempts=2, default_delay=0.05, max_delay=0.2, backoff=0.01)
OPERATOR = actor("ops@example.com", Role.ADMIN, "cli")
OWNERS = ("alice@example.com", "bob@example.com", "9lives@example.com")
CONFIG = PolicyConfig(
    workspace_tags=("tag:provisioner-workspace",),
    groups={"ops": ["ops@example.com"], "developers": ["alice@example.com", "bob@example.com"]},
)
BASE = """// Ours: kept as written.
{
  "hosts": {"db": "10.1.2.3"},
  "acls": [
    // the database, for ops
    {"action": "accept", "src": ["group:ops"], "dst": ["db:5432"]},
  ],
}
"""
LIVE = """// Someone's policy in the admin console.
{
  "tagOwners": {"tag:legacy": ["autogroup:admin"]},
  "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:legacy:443"]}],
}
"""


class Owners:
    """The owners the policy is for (the PolicyOwners port, from a list)."""

    def __init__(self, *owners: str) -> None:
        self.owners = list(owners)

    async def policy_owners(self) -> list[str]:
        return sorted(self.owners)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    yield opened
    await opened.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTailscale]:
    async with FakeTailscale.running() as fake:
        for email in ("ops@example.com", *OWNERS[:2]):
            fake.add_user(email)
        fake.set_policy(LIVE)
        yield fake


@pytest.fixture
async def tailnet(fake: FakeTailscale) -> AsyncIterator[TailscaleTailnet]:
    # An admin's API key: the policy file is written by an admin (or a policy_file OAuth client).
    client = TailscaleTailnet(base_url=fake.base_url, api_key=fake.add_api_key("admin@example.com"))
    yield client
    await client.close()


def publisher(
    store: SqlStore, tailnet: Tailnet | None, base: Path | None = None, owners: Owners | None = None
) -> PolicyPublisher:
    return PolicyPublisher(
        CONFIG,
        owners or Owners(*OWNERS),
        store,
        lambda: datetime.now(UTC),
        tailnet=tailnet,
        base_path=base,
    )


async def pushes(store: SqlStore) -> list[AuditEvent]:
    return list((await AuditTrail(store).list(action="acl.pushed")).items)


def base_file(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "policy.hujson"
    path.write_text(text)
    return path


async def test_push_writes_the_merged_base_with_if_match_and_audits(
    fake: FakeTailscale, tailnet: TailscaleTailnet, store: SqlStore, tmp_path: Path
) -> None:
    live_etag = fake.etag
    result = await publisher(store, tailnet, base_file(tmp_path)).push(OPERATOR)
    assert result.changed and result.etag == fake.etag != live_etag
    assert strip_generated(fake.policy_text) == BASE  # the base's bytes, as written
    assert '+    {"action": "accept", "src": ["alice@example.com"]' in result.diff
    assert "-// Someone's policy in the admin console." in result.diff
    assert any("skipped owner '9lives@example.com'" in w for w in result.warnings)
    # The server validated it first, then took it with the ETag we read.
    paths = [(r.method, r.path) for r in fake.calls("POST")]
    assert paths[-2:] == [
        ("POST", "/api/v2/tailnet/-/acl/validate"),
        ("POST", "/api/v2/tailnet/-/acl"),
    ]
    # And the fake's own evaluator agrees our tests hold.
    assert fake.policy().run_tests() == []
    again = await publisher(store, tailnet, base_file(tmp_path)).push(OPERATOR)
    assert not again.changed and again.diff == ""
    assert len(fake.calls("POST", ACL)) == 1
    audit = await pushes(store)
    assert [(e.actor, e.outcome, e.target) for e in audit] == [
        ("ops@example.com", "ok", "tailnet-policy"),
        ("ops@example.com", "unchanged", "tailnet-policy"),
    ]


async def test_without_a_base_file_the_live_policy_is_the_base(
    fake: FakeTailscale, tailnet: TailscaleTailnet, store: SqlStore
) -> None:
    await publisher(store, tailnet).push(OPERATOR)
    assert strip_generated(fake.policy_text) == LIVE
    (diff, _) = await publisher(store, tailnet).diff()
    assert diff == ""
    # A new owner changes only the generated blocks.
    grown = publisher(store, tailnet, owners=Owners(*OWNERS, "carol@example.com"))
    (diff, _) = await grown.diff()
    assert '+    "tag:carol": ["tag:provisioner", "group:ops"],' in diff
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-")][1:]
    assert removed and not set(removed) & set(LIVE.splitlines())  # bob's neighbour changed


def edit_while_we_validate(fake: FakeTailscale, text: str) -> asyncio.Task[None]:
    """Someone saves `text` in the admin console after our GET, while we validate."""
    fake.delay(0.3, times=1, path=VALIDATE)

    async def edit() -> None:
        while not fake.calls("POST", VALIDATE):
            await asyncio.sleep(0.01)
        fake.set_policy(text)

    return asyncio.create_task(edit())


async def test_a_policy_changed_meanwhile_is_not_clobbered_and_the_new_diff_is_shown(
    fake: FakeTailscale, tailnet: TailscaleTailnet, store: SqlStore, tmp_path: Path
) -> None:
    concurrent = LIVE.replace("tag:legacy:443", "tag:legacy:8443")
    edit = edit_while_we_validate(fake, concurrent)
    with pytest.raises(PolicyChanged) as caught:
        await publisher(store, tailnet, base_file(tmp_path)).push(OPERATOR)
    await edit
    assert fake.policy_text == concurrent  # nothing overwritten
    assert (
        '-  "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:legacy:8443"]}],'
        in (caught.value.diff)
    )
    assert caught.value.code == "policy_changed"
    assert [e.outcome for e in await pushes(store)] == ["conflict"]


async def test_the_cli_shows_the_new_diff_and_exits_non_zero_on_412(
    fake: FakeTailscale, tailnet: TailscaleTailnet, store: SqlStore, tmp_path: Path
) -> None:
    edit = edit_while_we_validate(fake, LIVE.replace("tag:legacy:443", "tag:legacy:8443"))
    out, err = io.StringIO(), io.StringIO()
    status = await run_acl(
        parse("push"), publisher(store, tailnet, base_file(tmp_path)), out=out, err=err
    )
    await edit
    assert status == 1
    assert "changed while we pushed" in err.getvalue()
    assert out.getvalue().startswith("--- live\n+++ rendered\n")
    assert (
        '-  "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:legacy:8443"]}],'
        in (out.getvalue())
    )
    assert "tag:legacy:8443" in fake.policy_text


async def test_a_policy_whose_tests_fail_is_refused_before_the_server_sees_it(
    fake: FakeTailscale, tailnet: TailscaleTailnet, store: SqlStore, tmp_path: Path
) -> None:
    # The operator's base lets every developer into bob's workspaces: alice's test must fail.
    leaky = BASE.replace(
        '"dst": ["db:5432"]}',
        '"dst": ["db:5432"]},\n    {"action": "accept", "src": ["group:developers"], "dst": ["tag:bob:*"]}',
    )
    with pytest.raises(PolicyInvalid) as caught:
        await publisher(store, tailnet, base_file(tmp_path, leaky)).push(OPERATOR)
    assert any("alice@example.com" in p and "tag:bob:22" in p for p in caught.value.problems)
    assert not fake.calls("POST", VALIDATE) and not fake.calls("POST", ACL)  # never asked
    assert strip_generated(fake.policy_text) == LIVE
    assert [e.outcome for e in await pushes(store)] == ["failed"]


async def test_headscale_gets_its_own_dialect(store: SqlStore, tmp_path: Path) -> None:
    async with FakeHeadscale.running() as fake:
        for name in ("ops", "alice", "bob"):
            fake.add_user(name, email=f"{name}@example.com")
        client = HeadscaleTailnet(base_url=fake.base_url, api_key=fake.add_api_key(), retry=FAST)
        try:
            result = await publisher(store, client, base_file(tmp_path)).push(OPERATOR)
            assert result.changed
            stored = loads(fake.policy_text)
            assert "autogroup:admin" not in fake.policy_text
            assert {"action": "accept", "src": ["alice@"], "dst": ["tag:alice:*"]} in stored["acls"]
            assert fake.parse(fake.policy_text).run_tests() == []
            assert not (await publisher(store, client, base_file(tmp_path)).push(OPERATOR)).changed
        finally:
            await client.close()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="provisioner")
    add_acl_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["acl", *argv])


async def test_without_a_tailnet_render_works_and_diff_push_say_what_to_set(
    store: SqlStore, tmp_path: Path
) -> None:
    offline = publisher(store, None, base_file(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    assert await run_acl(parse("render", "--check"), offline, out=out, err=err) == 0
    assert strip_generated(out.getvalue()) == BASE
    assert "warning: skipped owner '9lives@example.com'" in err.getvalue()
    for action in ("diff", "push"):
        out, err = io.StringIO(), io.StringIO()
        assert await run_acl(parse(action), offline, out=out, err=err) == 2
        assert "no tailnet is configured" in err.getvalue()
        assert "TAILSCALE_API_KEY" in err.getvalue() and "HEADSCALE_API_KEY" in err.getvalue()
    assert await pushes(store) != []  # the refused push is audited too


@pytest.mark.parametrize("action", ["render", "diff", "push"])
def test_each_acl_command_has_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(action, "--help")
    assert caught.value.code == 0
    assert f"provisioner acl {action}" in capsys.readouterr().out


async def test_store_owners_are_the_owners_of_live_workspaces(system: System) -> None:
    admin = actor("admin", Role.ADMIN, "api")
    for owner in ("bob@example.com", "alice@example.com", "bob@example.com"):
        await system.core.create_workspace(admin, CreateRequest("small", "debian-12", owner=owner))
    assert await StoreOwners(system.store).policy_owners() == [
        "alice@example.com",
        "bob@example.com",
    ]


async def test_a_new_owners_tag_is_pushed_before_their_first_key(
    fake: FakeTailscale, tailnet: TailscaleTailnet, store: SqlStore, tmp_path: Path
) -> None:
    owners = Owners(*OWNERS)
    ours = publisher(store, tailnet, base_file(tmp_path), owners)
    assert await ours.ensure_tags(["tag:alice"], OPERATOR)
    assert not await ours.ensure_tags(["tag:alice", "tag:provisioner-workspace"], OPERATOR)
    owners.owners.append("carol@example.com")  # carol's first workspace is being created
    writes = len(fake.calls("POST", ACL))
    assert await ours.ensure_tags(["tag:carol"], OPERATOR)
    assert len(fake.calls("POST", ACL)) == writes + 1
    assert fake.policy().tag_owners("tag:carol") == ["tag:provisioner", "group:ops"]
