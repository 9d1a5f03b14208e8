"""Local checks of a policy file: what the control server would refuse, found before a push.

Headscale has no validate endpoint, and Tailscale's costs a round trip, so every push runs
these first: the text parses, every tag is well formed and defined in tagOwners, every group is
defined and none contains itself, names are users, groups, tags, hosts, IPs or autogroups the
dialect knows, the SSH rules obey the server's validation rules, and the policy's own tests pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from acl.dialects import Dialect, dialect, tag_problem
from acl.hujson import HuJSONError, loads
from acl.policy_tests import grant_as_acls, network, parse_ports, run_tests, split_destination

_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|ms|s|m|h))+|always")
_SECTIONS: dict[str, type] = {
    "groups": dict,
    "tagOwners": dict,
    "hosts": dict,
    "acls": list,
    "ssh": list,
    "tests": list,
    "grants": list,
    "nodeAttrs": list,
}


def check_policy(text: str, dialect_name: str = "tailscale") -> list[str]:
    """Every problem found in `text`, one sentence each; [] when the policy is fine."""
    try:
        policy = loads(text)
    except HuJSONError as error:
        return [f"the policy is not HuJSON: {error}"]
    if not isinstance(policy, dict):
        return ["the policy must be a JSON object"]
    problems = [
        f"{name} must be a JSON {kind.__name__.replace('dict', 'object')}"
        for name, kind in _SECTIONS.items()
        if policy.get(name) is not None and not isinstance(policy[name], kind)
    ]
    if problems:
        return problems
    checker = _Checker(policy, dialect(dialect_name))
    checker.run()
    if not checker.problems:
        # The tests mean something only once every name in them resolves.
        checker.problems.extend(run_tests(policy))
    return checker.problems


class _Checker:
    """Walks the sections, collecting problems."""

    def __init__(self, policy: Mapping[str, Any], spoken: Dialect) -> None:
        self.policy, self.spoken = policy, spoken
        self.groups: Mapping[str, Any] = policy.get("groups") or {}
        self.tags: Mapping[str, Any] = policy.get("tagOwners") or {}
        self.hosts: Mapping[str, Any] = policy.get("hosts") or {}
        self.problems: list[str] = []

    def run(self) -> None:
        self.check_groups()
        for tag, owners in self.tags.items():
            if problem := tag_problem(tag):
                self.problems.append(f"tagOwners: {problem}")
            for owner in self.strings(f"tagOwners[{tag}]", owners):
                self.name(f"tagOwners[{tag}]", owner, allow_star=False)
        for number, rule in enumerate(self.policy.get("acls") or (), start=1):
            self.check_acl(f"acls[{number}]", rule)
        for number, rule in enumerate(self.policy.get("ssh") or (), start=1):
            self.check_ssh(f"ssh[{number}]", rule)
        for number, test in enumerate(self.policy.get("tests") or (), start=1):
            self.check_test(f"tests[{number}]", test)
        for number, grant in enumerate(self.policy.get("grants") or (), start=1):
            for rule in grant_as_acls(grant):
                self.check_acl(f"grants[{number}]", rule)
        for number, attrs in enumerate(self.policy.get("nodeAttrs") or (), start=1):
            where = f"nodeAttrs[{number}].target"
            for target in self.strings(
                where, attrs.get("target") if isinstance(attrs, dict) else None
            ):
                self.name(where, target)

    def strings(self, where: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{where} must be a list of strings")
            return []
        return list(value)

    def name(self, where: str, name: str, *, allow_star: bool = True) -> None:
        """A principal or destination host: defined, well formed, known to the dialect."""
        if name == "*":
            if not allow_star:
                self.problems.append(f"{where}: '*' is not allowed here")
        elif name.startswith("tag:"):
            if problem := tag_problem(name):
                self.problems.append(f"{where}: {problem}")
            elif name not in self.tags:
                self.problems.append(f"{where}: {name} is not defined in tagOwners")
        elif name.startswith("group:"):
            if name not in self.groups:
                self.problems.append(f"{where}: {name} is not defined in groups")
        elif name.startswith("autogroup:"):
            if name not in self.spoken.autogroups:
                self.problems.append(f"{where}: {self.spoken.name} has no {name}")
        elif not (self.spoken.is_user(name) or name in self.hosts or network(name)):
            self.problems.append(f"{where}: {name!r} is not a user, group, tag, host or IP")

    def check_groups(self) -> None:
        for group, members in self.groups.items():
            if not group.startswith("group:"):
                self.problems.append(f"groups: {group!r} must start with 'group:'")
            for member in self.strings(f"groups[{group}]", members):
                if member.startswith("group:"):
                    self.name(f"groups[{group}]", member)
                elif not self.spoken.is_user(member):
                    self.problems.append(f"groups[{group}]: {member!r} is not a user")
        for group in sorted(self.groups):
            if self.reaches(group, group, set()):
                self.problems.append(f"groups: {group} contains itself")

    def reaches(self, start: str, wanted: str, seen: set[str]) -> bool:
        for member in self.groups.get(start) or ():
            if member == wanted:
                return True
            if isinstance(member, str) and member in self.groups and member not in seen:
                seen.add(member)
                if self.reaches(member, wanted, seen):
                    return True
        return False

    def destinations(self, where: str, entries: list[str], *, single: bool) -> None:
        for entry in entries:
            try:
                target, ports = split_destination(entry)
                parse_ports(ports)
            except ValueError:
                self.problems.append(f"{where}: {entry!r} is not host:ports")
                continue
            if single and not ports.isdigit():
                self.problems.append(f"{where}: {entry!r} must name one port")
            self.name(where, target, allow_star=not single)

    def check_acl(self, where: str, rule: Any) -> None:
        if not isinstance(rule, dict):
            self.problems.append(f"{where} must be an object")
            return
        if str(rule.get("action", "")).lower() != "accept":
            self.problems.append(f"{where}: the only action is 'accept'")
        sources = self.strings(f"{where}.src", rule.get("src", rule.get("users")))
        for source in sources:
            self.name(f"{where}.src", source)
        dst = self.strings(f"{where}.dst", rule.get("dst", rule.get("ports")))
        self.destinations(f"{where}.dst", dst, single=False)
        if not sources or not dst:
            self.problems.append(f"{where}: src and dst must not be empty")

    def check_ssh(self, where: str, rule: Any) -> None:
        if not isinstance(rule, dict):
            self.problems.append(f"{where} must be an object")
            return
        action = rule.get("action")
        if action not in ("accept", "check"):
            self.problems.append(f"{where}: action must be 'accept' or 'check'")
        period = rule.get("checkPeriod")
        if period is not None and (action != "check" or not _DURATION.fullmatch(str(period))):
            self.problems.append(f"{where}: checkPeriod is a duration, and only for 'check'")
        src = self.strings(f"{where}.src", rule.get("src"))
        dst = self.strings(f"{where}.dst", rule.get("dst"))
        users = self.strings(f"{where}.users", rule.get("users"))
        if not (src and dst and users):
            self.problems.append(f"{where}: src, dst and users must not be empty")
        for name in src:
            self.name(f"{where}.src", name)
        for name in dst:
            self.name(f"{where}.dst", name, allow_star=False)
        for user in users:
            if user.startswith("autogroup:") and user != "autogroup:nonroot":
                self.problems.append(
                    f"{where}.users: only autogroup:nonroot is allowed, not {user}"
                )
        self.problems.extend(f"{where}: {p}" for p in ssh_rule_problems(src, dst, self.spoken))

    def check_test(self, where: str, test: Any) -> None:
        src = test.get("src", test.get("user")) if isinstance(test, dict) else None
        if not isinstance(src, str):
            self.problems.append(f"{where}: src must be one user, group, tag or host")
            return
        self.name(f"{where}.src", src, allow_star=False)
        for key in ("accept", "deny"):
            entries = test.get(key, test.get("allow") if key == "accept" else None) or []
            self.destinations(
                f"{where}.{key}", self.strings(f"{where}.{key}", entries), single=True
            )


def ssh_rule_problems(src: list[str], dst: list[str], spoken: Dialect) -> list[str]:
    """The SSH validation rules of Tailscale (copied by Headscale ≥0.28) that src/dst break."""
    problems = []
    if "autogroup:self" in src:
        problems.append("autogroup:self may not be a source")
    machine_sources = [s for s in src if s.startswith("tag:") or s == "autogroup:tagged"]
    machine_sources += [s for s in src if network(s) or not (_principal(s) or spoken.is_user(s))]
    owned = [d for d in dst if d in ("autogroup:self", "autogroup:member") or spoken.is_user(d)]
    if machine_sources and owned:
        problems.append(
            f"tags, hosts and IPs ({', '.join(machine_sources)}) may not reach user-owned devices "
            f"({', '.join(owned)})"
        )
    for user in (d for d in dst if spoken.is_user(d)):
        if src != [user]:
            problems.append(f"a user destination ({user}) needs that same user as the only source")
    return problems


def _principal(name: str) -> bool:
    return name == "*" or name.startswith(("group:", "autogroup:", "tag:"))
