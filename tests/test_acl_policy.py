"""The generated tailnet policy: merge into the operator's base, idempotence, dialects, checks."""

from __future__ import annotations

import random

import pytest

from acl.hujson import loads
from acl.merge import strip_generated
from acl.policy import PolicyConfig, generate, render
from acl.policy_checks import check_policy
from acl.policy_tests import Evaluator, run_tests
from provisioner.errors import ConfigError, InvalidInput
from tests.fakes.headscale_api import FakeHeadscale
from tests.fakes.tailscale_api import FakeTailscale

OWNERS = ["alice@example.com", "bob@example.com", "carol@example.com"]
CONFIG = PolicyConfig(
    provisioner_tag="tag:provisioner",
    node_tags=("tag:provisioner-node",),
    workspace_tags=("tag:provisioner-workspace",),
    api_tag="tag:provisioner-api",
    groups={"ops": ["ops@example.com"], "developers": ["alice@example.com", "bob@example.com"]},
)
BASE = """// The operator's policy: every byte outside the generated blocks is theirs.
{
\t// Who is who.
\t"groups": {
\t\t"group:ops": ["ops@example.com", "boss@example.com"], // hand-written: wins
\t\t"group:db-admins": ["dba@example.com"]
\t},
\t"hosts": {"db": "10.1.2.3"}, /* an unknown-to-us section, kept */
\t"nodeAttrs": [{"target": ["autogroup:member"], "attr": ["funnel"]}],
\t"tagOwners": {
\t\t"tag:db": ["group:db-admins"],
\t},
\t"acls": [
\t\t{"action": "accept", "src": ["group:db-admins"], "dst": ["db:5432"]}
\t]
}
"""


def rendered(base: str | None = BASE, dialect: str = "tailscale", **changes: object) -> str:
    config = PolicyConfig(**{**CONFIG.__dict__, **changes})  # type: ignore[arg-type]
    return render(config, OWNERS, dialect=dialect, base=base).text


def test_the_base_is_kept_byte_for_byte() -> None:
    text = rendered()
    assert strip_generated(text) == BASE
    policy = loads(text)
    assert policy["hosts"] == {"db": "10.1.2.3"}
    assert policy["nodeAttrs"] == [{"target": ["autogroup:member"], "attr": ["funnel"]}]
    assert policy["tagOwners"]["tag:db"] == ["group:db-admins"]
    assert policy["tagOwners"]["tag:alice"] == ["tag:provisioner", "group:ops"]
    assert {"action": "accept", "src": ["group:db-admins"], "dst": ["db:5432"]} in policy["acls"]
    assert {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:alice:*"]} in (
        policy["acls"]
    )
    # Sections the base lacks are added, inside a marked block of their own.
    assert [t["src"] for t in policy["tests"]][-3:] == OWNERS
    assert check_policy(text) == []


@pytest.mark.parametrize(
    "base",
    [
        None,
        BASE,
        '{"acls": [], "groups": {"group:x": ["x@example.com"]}}',  # one line: inline blocks
        '{\n  "acls": [ // rules\n  ],\n  "ssh": [\n    // none yet\n  ]\n}',
        "{}",
        BASE.replace("\n", "\r\n"),  # an editor's Windows line ends
        '\ufeff{"acls": [] /* a BOM before, a comment after */}\n// end\n',
    ],
)
def test_render_is_idempotent(base: str | None) -> None:
    once = rendered(base)
    assert rendered(once) == once
    assert rendered(rendered(once)) == once
    assert strip_generated(once) == (base if base is not None else strip_generated(rendered(None)))
    assert check_policy(once) == []


def test_the_operators_entry_for_a_key_wins_and_says_so() -> None:
    result = render(CONFIG, OWNERS, dialect="tailscale", base=BASE)
    assert loads(result.text)["groups"]["group:ops"] == ["ops@example.com", "boss@example.com"]
    assert any("group:ops is kept" in w for w in result.warnings)
    # The ops test uses a member of the group as the base defines it.
    ops_tests = [t for t in loads(result.text)["tests"] if t["src"] == "boss@example.com"]
    assert ops_tests and "deny" not in ops_tests[0]


def test_output_is_sorted_whatever_the_order_of_owners() -> None:
    shuffled = OWNERS * 2
    random.Random(7).shuffle(shuffled)
    assert render(CONFIG, shuffled, dialect="tailscale", base=BASE).text == rendered()


def test_tailscale_dialect_names_users_by_email_and_falls_back_to_admins() -> None:
    policy = loads(rendered(None, groups={}))
    assert {"action": "accept", "src": ["bob@example.com"], "dst": ["tag:bob:*"]} in policy["acls"]
    # No ops group: only admins and our own tag own the tags, and no one else gets access.
    assert policy["tagOwners"]["tag:bob"] == ["tag:provisioner", "autogroup:admin"]
    assert policy["tagOwners"]["tag:provisioner"] == ["autogroup:admin"]
    assert not any("autogroup:admin" in rule["src"] for rule in policy["acls"])


def test_headscale_dialect_names_users_by_name_and_never_admins() -> None:
    text = rendered(None, dialect="headscale")
    policy = loads(text)
    assert policy["groups"]["group:developers"] == ["alice@", "bob@"]
    assert {"action": "accept", "src": ["alice@"], "dst": ["tag:alice:*"]} in policy["acls"]
    assert {"src": "alice@", "accept": ["tag:alice:22"], "deny": ["tag:bob:22"]} in policy["tests"]
    assert check_policy(text, "headscale") == []
    without_ops = rendered(None, dialect="headscale", groups={})
    assert "autogroup:admin" not in without_ops
    assert loads(without_ops)["tagOwners"]["tag:provisioner"] == []
    assert check_policy(without_ops, "headscale") == []
    # The Tailscale rendering would not load on Headscale.
    assert any(
        "headscale has no autogroup:admin" in p
        for p in check_policy(rendered(None, groups={}), "headscale")
    )


def test_ssh_rules_accept_our_tag_and_check_each_owner() -> None:
    ssh = loads(rendered(None))["ssh"]
    assert ssh[0] == {
        "action": "accept",
        "src": ["tag:provisioner", "tag:provisioner-api"],
        "dst": ["tag:provisioner-workspace"],
        "users": ["autogroup:nonroot", "root"],
    }
    assert {
        "action": "check",
        "src": ["carol@example.com"],
        "dst": ["tag:carol"],
        "users": ["autogroup:nonroot", "carol"],
    } in ssh


def test_the_tests_prove_a_user_cannot_reach_another_users_workspace() -> None:
    text = rendered()
    policy = loads(text)
    assert {"src": "alice@example.com", "accept": ["tag:alice:22"], "deny": ["tag:bob:22"]} in (
        policy["tests"]
    )
    evaluator = Evaluator(policy)
    assert evaluator.allows("alice@example.com", "tag:alice:22")
    assert evaluator.allows("alice@example.com", "tag:alice:8080")
    assert not evaluator.allows("alice@example.com", "tag:bob:22")
    assert evaluator.allows("boss@example.com", "tag:provisioner-workspace:22")
    assert evaluator.allows("tag:provisioner", "tag:provisioner-node:2222")
    assert not evaluator.allows("tag:provisioner", "tag:provisioner-node:80")
    assert evaluator.allows("dba@example.com", "db:5432")
    assert run_tests(policy) == []
    # Break the acls: alice reaches bob's workspaces too, and her test says so.
    broken = text.replace('"dst": ["tag:alice:*"]', '"dst": ["tag:alice:*", "tag:bob:22"]')
    assert broken != text
    assert check_policy(broken) == [
        'test 3 (alice@example.com): address "tag:bob:22": want: Drop, got: Accept'
    ]
    # And alice losing her own access fails too.
    lost = text.replace('"dst": ["tag:alice:*"]', '"dst": ["tag:alice:80"]')
    assert "want: Accept, got: Drop" in check_policy(lost)[0]


def test_an_owner_whose_email_makes_no_tag_is_skipped_with_a_warning() -> None:
    owners = [*OWNERS, "9lives@example.com", "_x@example.com", "provisioner@example.com"]
    owners.append("db@example.com")  # tag:db is the operator's: their database servers
    result = render(CONFIG, owners, dialect="tailscale", base=BASE)
    assert result.text == rendered()
    joined = "\n".join(result.warnings)
    assert "skipped owner '9lives@example.com'" in joined
    assert "skipped owner '_x@example.com'" in joined
    assert "tag:provisioner is one of the provisioner's own tags" in joined
    assert "skipped owner 'db@example.com': the base policy defines tag:db without" in joined
    # A per-user tag the operator wrote with our tag among its owners stays the owner's.
    mine = BASE.replace('"tag:db": ["group:db-admins"]', '"tag:db": ["tag:provisioner"]')
    adopted = render(CONFIG, ["db@example.com"], dialect="tailscale", base=mine)
    assert {"action": "accept", "src": ["db@example.com"], "dst": ["tag:db:*"]} in loads(
        adopted.text
    )["acls"]


def test_owners_sharing_a_tag_and_non_email_owners_are_reported() -> None:
    result = render(CONFIG, ["alice@example.com", "alice@other.org", "ci-bot"], dialect="tailscale")
    assert any("share tag:alice" in w for w in result.warnings)
    assert any("'ci-bot' is not an e-mail" in w for w in result.warnings)
    policy = loads(result.text)
    assert "tag:ci-bot" in policy["tagOwners"]
    assert check_policy(result.text) == []  # neighbours are chosen among other tags


def test_thousands_of_owners_get_one_test_each() -> None:
    owners = [f"user{n:04d}@example.com" for n in range(2000)]
    generated = generate(CONFIG, owners, "tailscale")
    tests = generated.sections["tests"]
    assert len(tests) == 2000 + 2
    assert all(len(t.get("deny", [])) <= 1 and len(t["accept"]) <= 2 for t in tests)
    text = render(CONFIG, owners, dialect="tailscale").text
    assert check_policy(text) == []


def test_a_bad_base_or_config_is_refused_clearly() -> None:
    with pytest.raises(InvalidInput, match=r"not HuJSON: line 2, column 1"):
        rendered('{"acls": [\n')
    with pytest.raises(InvalidInput, match="acls must be a list"):
        rendered('{"acls": {}}')
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        rendered("[]")
    with pytest.raises(ConfigError, match="must start with 'tag:'"):
        rendered(None, node_tags=("provisioner-node",))
    with pytest.raises(InvalidInput, match="unknown policy dialect"):
        rendered(None, dialect="zerotier")


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (
            '{"acls": [{"action": "accept", "src": ["tag:nope"], "dst": ["*:*"]}]}',
            "tag:nope is not defined",
        ),
        ('{"tagOwners": {"tag:9x": []}}', "after 'tag:' a letter"),
        (
            '{"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:22"]}]}',
            "group:nope is not defined",
        ),
        ('{"groups": {"group:a": ["group:b"], "group:b": ["group:a"]}}', "group:a contains itself"),
        ('{"groups": {"group:a": ["not a user"]}}', "is not a user"),
        (
            '{"acls": [{"action": "drop", "src": ["*"], "dst": ["*:*"]}]}',
            "the only action is 'accept'",
        ),
        ('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}]}', "is not host:ports"),
        ('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:99999"]}]}', "is not host:ports"),
        (
            '{"acls": [{"action": "accept", "src": ["nohost"], "dst": ["*:*"]}]}',
            "is not a user, group, tag",
        ),
        (
            '{"ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["*"], "users": ["root"]}]}',
            "'*' is not allowed",
        ),
        (
            '{"ssh": [{"action": "accept", "src": ["autogroup:self"], "dst": ["autogroup:self"], "users": ["root"]}]}',
            "autogroup:self may not be a source",
        ),
        (
            '{"tagOwners": {"tag:ci": []}, "ssh": [{"action": "accept", "src": ["tag:ci"], "dst": ["autogroup:self"], "users": ["root"]}]}',
            "may not reach user-owned devices",
        ),
        (
            '{"ssh": [{"action": "accept", "src": ["a@example.com"], "dst": ["b@example.com"], "users": ["root"]}]}',
            "needs that same user",
        ),
        (
            '{"ssh": [{"action": "accept", "src": ["a@example.com"], "dst": ["a@example.com"], "users": []}]}',
            "must not be empty",
        ),
        (
            '{"ssh": [{"action": "accept", "checkPeriod": "12h", "src": ["a@example.com"], "dst": ["a@example.com"], "users": ["a"]}]}',
            "only for 'check'",
        ),
        (
            '{"ssh": [{"action": "check", "src": ["a@example.com"], "dst": ["a@example.com"], "users": ["autogroup:admin"]}]}',
            "only autogroup:nonroot",
        ),
        ('{"tests": [{"src": "a@example.com", "accept": ["tag:x:*"]}]}', "must name one port"),
        ('{"tests": [{"accept": ["1.2.3.4:22"]}]}', "src must be one user"),
        ('{"acls": {}}', "acls must be a JSON list"),
        ('{"grants": [{"src": ["tag:x"], "dst": ["*"], "ip": ["*"]}]}', "tag:x is not defined"),
        ('{"nodeAttrs": [{"target": ["group:x"], "attr": ["funnel"]}]}', "group:x is not defined"),
        ('{"acls": [', "not HuJSON"),
    ],
)
def test_checks_find_what_the_server_would_refuse(policy: str, problem: str) -> None:
    problems = check_policy(policy)
    assert any(problem in p for p in problems), problems


def test_the_evaluator_knows_autogroups_groups_hosts_and_ranges() -> None:
    policy = {
        "groups": {"group:devs": ["dev@example.com"], "group:all": ["group:devs"]},
        "hosts": {"lab": "10.9.0.0/16"},
        "acls": [
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
            {"action": "accept", "src": ["group:all"], "dst": ["lab:1000-2000", "tag:web:80,443"]},
            {"action": "accept", "src": ["10.0.0.0/8"], "dst": ["autogroup:tagged:22"]},
            {"action": "accept", "src": ["tag:ci"], "proto": "udp", "dst": ["*:53"]},
        ],
        "grants": [{"src": ["group:devs"], "dst": ["tag:api"], "ip": ["tcp:443", "8000-8100"]}],
    }
    ev = Evaluator(policy)
    assert ev.allows("dev@example.com", "dev@example.com:5")
    assert not ev.allows("dev@example.com", "other@example.com:5")
    assert ev.allows("dev@example.com", "10.9.1.1:1500")
    assert not ev.allows("dev@example.com", "10.9.1.1:2500")
    assert ev.allows("dev@example.com", "tag:web:443")
    assert not ev.allows("x@example.com", "tag:web:443")
    assert ev.allows("10.1.2.3", "tag:db:22")
    assert ev.allows("tag:ci", "tag:dns:53", "udp")
    assert not ev.allows("tag:ci", "tag:dns:53")  # tcp by default
    assert ev.allows("dev@example.com", "tag:api:443")
    assert ev.allows("dev@example.com", "tag:api:8080", "udp")
    assert not ev.allows("dev@example.com", "tag:api:443", "udp")
    assert not ev.allows("dev@example.com", "tag:api:22")


@pytest.mark.parametrize("dialect", ["tailscale", "headscale"])
@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        PolicyConfig(groups={}),
        PolicyConfig(workspace_tags=(), api_tag="tag:api", groups={"ops": ["alice@example.com"]}),
    ],
)
def test_the_fake_servers_own_reading_agrees(dialect: str, config: PolicyConfig) -> None:
    # The fakes parse and run tests with code of their own: a second opinion on ours.
    server = FakeTailscale() if dialect == "tailscale" else FakeHeadscale()
    if isinstance(server, FakeHeadscale):
        for name in ("alice", "bob", "carol", "ops", "boss", "dba"):
            server.add_user(name, email=f"{name}@example.com")
    text = render(config, OWNERS, dialect=dialect, base=BASE).text
    assert check_policy(text, dialect) == []
    assert server.parse(text).run_tests() == []
    broken = text.replace('"dst": ["tag:alice:*"]', '"dst": ["tag:alice:*", "tag:bob:22"]')
    assert len(check_policy(broken, dialect)) == len(server.parse(broken).run_tests()) == 1
