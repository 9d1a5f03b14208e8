"""The tailnet policy generated from what the provisioner knows: owners, groups and its tags.

Each owner's tag is owned by the provisioner's tag (so its OAuth client may mint keys for it);
each owner reaches their own workspaces; ops reach every workspace and node; the provisioner
reaches nodes and workspaces over SSH; the generated `tests` prove one owner cannot reach
another's workspaces. Output is sorted, so two renders of the same facts are the same text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from acl.dialects import Dialect, dialect, is_email, tag_problem
from acl.hujson import HuJSONError, loads
from acl.merge import merge, strip_generated
from provisioner.errors import ConfigError, InvalidInput
from provisioner.requests import login_name, owner_tag

DEFAULT_BASE = (
    "// The tailnet policy of provisioner. Set PROVISIONER_ACL_BASE to a HuJSON file of your own\n"
    "// to merge the generated rules into it.\n{\n}\n"
)
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TEST_PORT = 22


@dataclass(frozen=True)
class PolicyConfig:
    """What the policy is generated from, besides the owners (from settings)."""

    provisioner_tag: str = "tag:provisioner"
    node_tags: tuple[str, ...] = ("tag:provisioner-node",)
    workspace_tags: tuple[str, ...] = ()  # PROVISIONER_TAILSCALE_TAGS: every workspace has them
    api_tag: str | None = None  # the tag of the host `serve` runs on, if it is on the tailnet
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)  # PROVISIONER_GROUPS
    ops_group: str = "ops"
    owner_ssh_action: str = "check"  # "check" re-authenticates in a browser; "accept" does not
    ssh_ports: tuple[int, ...] = (22, 2222)  # Tailscale SSH, and the nodes' own sshd


@dataclass(frozen=True)
class Owner:
    """One workspace owner as the policy names them."""

    email: str
    user: str | None  # None: not an e-mail, so no tailnet user to grant anything to
    tag: str
    login: str


@dataclass(frozen=True)
class Generated:
    """The generated sections (in policy order) and what was skipped or doubtful."""

    sections: dict[str, Any]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class RenderedPolicy:
    """A complete policy document and the warnings of its render."""

    text: str
    warnings: tuple[str, ...]


def render(
    config: PolicyConfig, owners: Iterable[str], *, dialect: str, base: str | None = None
) -> RenderedPolicy:
    """The policy: the generated sections merged into `base` (a minimal one when None)."""
    base = strip_generated(DEFAULT_BASE if base is None else base)
    generated = generate(config, owners, dialect, base_policy=_parsed(base))
    text, kept = merge(base, generated.sections)
    return RenderedPolicy(text, generated.warnings + tuple(kept))


def _parsed(base: str) -> Mapping[str, Any]:
    """The base as values; {} when it is not a HuJSON object (merge then says what is wrong)."""
    try:
        policy = loads(base)
    except HuJSONError:
        return {}
    return policy if isinstance(policy, dict) else {}


def _section(policy: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = policy.get(name)
    return value if isinstance(value, dict) else {}


def generate(
    config: PolicyConfig,
    owners: Iterable[str],
    dialect_name: str,
    *,
    base_policy: Mapping[str, Any] | None = None,
) -> Generated:
    """groups, tagOwners, acls, ssh and tests for these owners, in `dialect_name`.

    `base_policy`: what the operator wrote; their groups win, their tags are never an owner's.
    """
    base_policy = base_policy or {}
    spoken = dialect(dialect_name)
    _check_config(config)
    warnings: list[str] = []
    groups = _groups(config, spoken, warnings)
    # A tag the operator defines without us among its owners is theirs, not an owner's.
    theirs = {
        tag
        for tag, owners in _section(base_policy, "tagOwners").items()
        if not isinstance(owners, list) or config.provisioner_tag not in owners
    }
    people = _owners(config, owners, spoken, warnings, theirs)
    ops_group = f"group:{config.ops_group}"
    effective = {**groups, **_section(base_policy, "groups")}
    ops_users = {m.lower() for m in effective.get(ops_group) or () if isinstance(m, str)}
    ops = (ops_group,) if ops_users else ()
    if not ops:
        warnings.append(
            f"no members in {ops_group} (PROVISIONER_GROUPS): ops get no access, and the tags are "
            f"owned by {', '.join((config.provisioner_tag, *spoken.admins))} only"
        )
    facts = _Facts(config, people, ops, ops_users)
    sections = {
        "groups": groups,
        "tagOwners": facts.tag_owners(ops or spoken.admins),
        "acls": facts.acls(),
        "ssh": facts.ssh(),
        "tests": facts.tests(),
    }
    return Generated(sections, tuple(warnings))


def _check_config(config: PolicyConfig) -> None:
    tags = [config.provisioner_tag, *config.node_tags, *config.workspace_tags]
    problems = [p for p in map(tag_problem, [*tags, config.api_tag or "tag:x"]) if p]
    if problems:
        raise ConfigError(f"tailnet tags: {'; '.join(problems)}")
    if config.owner_ssh_action not in ("check", "accept"):
        raise ConfigError("the owners' SSH action must be 'check' or 'accept'")


def _groups(config: PolicyConfig, spoken: Dialect, warnings: list[str]) -> dict[str, list[str]]:
    """`group:NAME` → members as the dialect names users; bad names and members skipped."""
    out: dict[str, list[str]] = {}
    for raw, members in sorted(config.groups.items()):
        name = raw.removeprefix("group:")
        if not _GROUP_NAME.fullmatch(name):
            warnings.append(f"skipped group {raw!r}: a group name is letters, digits, . _ -")
            continue
        bad = sorted(m for m in members if not is_email(m.strip()))
        if bad:
            warnings.append(f"group:{name}: skipped members that are not e-mails: {bad}")
        out[f"group:{name}"] = sorted({spoken.user(m) for m in members if is_email(m.strip())})
    return out


def _owners(
    config: PolicyConfig,
    owners: Iterable[str],
    spoken: Dialect,
    warnings: list[str],
    operators_tags: set[str],
) -> list[Owner]:
    """The owners with a valid tag of their own, sorted; the others skipped with a warning."""
    ours = {config.provisioner_tag, *config.node_tags, *config.workspace_tags, config.api_tag}
    people: list[Owner] = []
    by_tag: dict[str, list[str]] = {}
    for email in sorted({o.strip() for o in owners if o.strip()}):
        try:
            tag = owner_tag(email)
        except InvalidInput as error:
            warnings.append(f"skipped owner {email!r}: {error.message}")
            continue
        if tag in ours:
            warnings.append(f"skipped owner {email!r}: {tag} is one of the provisioner's own tags")
            continue
        if tag in operators_tags:
            # Granting the owner that tag would open the operator's own machines to them.
            warnings.append(
                f"skipped owner {email!r}: the base policy defines {tag} without "
                f"{config.provisioner_tag} among its owners (add it there to make the tag theirs)"
            )
            continue
        user = spoken.user(email) if is_email(email) else None
        if user is None:
            warnings.append(f"owner {email!r} is not an e-mail: {tag} exists, no user reaches it")
        by_tag.setdefault(tag, []).append(email)
        people.append(Owner(email, user, tag, login_name(email)))
    for tag, emails in by_tag.items():
        if len(emails) > 1:
            warnings.append(f"owners {', '.join(emails)} share {tag}: each reaches the others'")
    return people


def _rule(src: Sequence[str], dst: Iterable[str]) -> dict[str, Any]:
    return {"action": "accept", "src": list(src), "dst": list(dst)}


class _Facts:
    """The generated sections, from the owners, the ops group and the configured tags."""

    def __init__(
        self, config: PolicyConfig, people: list[Owner], ops: tuple[str, ...], ops_users: set[str]
    ) -> None:
        self.config, self.ops, self.ops_users = config, ops, ops_users
        self.people = people
        self.users = sorted((p for p in people if p.user), key=lambda p: (p.user or "", p.tag))
        self.owner_tags = sorted({p.tag for p in people})
        # Every workspace carries the base tags; without them, each owner's tag is the way in.
        self.targets = list(config.workspace_tags) or self.owner_tags
        self.machines = [config.provisioner_tag] + ([config.api_tag] if config.api_tag else [])

    def tag_owners(self, ops: tuple[str, ...]) -> dict[str, list[str]]:
        config = self.config
        managed = [config.provisioner_tag, *ops]
        out = {
            tag: managed for tag in (*config.node_tags, *config.workspace_tags, *self.owner_tags)
        }
        out[config.provisioner_tag] = list(ops)
        if config.api_tag:
            out[config.api_tag] = list(ops)
        return dict(sorted(out.items()))

    def acls(self) -> list[dict[str, Any]]:
        nodes, ports = self.config.node_tags, ",".join(map(str, self.config.ssh_ports))
        rules = []
        if self.ops and self.targets:
            rules.append(_rule(self.ops, (f"{t}:*" for t in self.targets)))
        if self.ops and nodes:
            rules.append(_rule(self.ops, (f"{t}:*" for t in nodes)))
        if nodes or self.targets:
            rules.append(_rule(self.machines, (f"{t}:{ports}" for t in (*nodes, *self.targets))))
        rules.extend(_rule([p.user or ""], [f"{p.tag}:*"]) for p in self.users)
        return rules

    def ssh(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = []
        if self.targets:
            # `check` would stop automation that logs in without a browser: accept for ourselves.
            rules.append(
                {"action": "accept", "src": self.machines, "dst": self.targets}
                | {"users": ["autogroup:nonroot", "root"]}
            )
        action = self.config.owner_ssh_action
        rules.extend(
            {"action": action, "src": [p.user], "dst": [p.tag]}
            | {"users": ["autogroup:nonroot", p.login]}
            for p in self.users
        )
        return rules

    def tests(self) -> list[dict[str, Any]]:
        tests: list[dict[str, Any]] = []
        nodes, tags = self.config.node_tags, self.owner_tags
        if self.targets and nodes:
            accept = [f"{nodes[0]}:{self.config.ssh_ports[-1]}", f"{self.targets[0]}:{TEST_PORT}"]
            tests.append({"src": self.config.provisioner_tag, "accept": accept})
        if self.ops and self.ops_users and self.targets:
            accept = [f"{self.targets[0]}:{TEST_PORT}"] + [f"{n}:{TEST_PORT}" for n in nodes[:1]]
            tests.append({"src": min(self.ops_users), "accept": accept})
        index = {tag: i for i, tag in enumerate(tags)}
        for person in self.users:
            test: dict[str, Any] = {"src": person.user, "accept": [f"{person.tag}:{TEST_PORT}"]}
            # One neighbour each keeps thousands of owners' tests linear; ops reach everyone.
            if len(tags) > 1 and person.user not in self.ops_users:
                neighbour = tags[(index[person.tag] + 1) % len(tags)]
                test["deny"] = [f"{neighbour}:{TEST_PORT}"]
            tests.append(test)
        return tests
