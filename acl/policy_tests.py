"""Evaluating a policy's own `tests` against its `acls`, as the control server does before a save.

Identities: users (and the groups they are in, nested ones too), groups, tags, hosts and IPs;
destinations match by name, `*`, autogroup:member/self/tagged, groups and IP ranges; ports by
single port, list or range; rules are indexed by source so thousands of tests stay fast.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Ranges = tuple[tuple[int, int], ...]
_PROTOCOLS = {"tcp": "6", "udp": "17", "icmp": "1", "ipv6-icmp": "58", "sctp": "132"}
_IP_LIKE = re.compile(r"[0-9A-Fa-f:.]+(/\d+)?")
_MEMBER = frozenset({"autogroup:member", "autogroup:members"})


def parse_ports(spec: str) -> Ranges:
    """`*`, `22`, `80,443` or `1000-2000` as inclusive ranges; ValueError when it is none."""
    if spec == "*":
        return ((0, 65535),)
    ranges = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if not 0 <= first <= last <= 65535:
            raise ValueError(f"bad port range {part!r}")
        ranges.append((first, last))
    return tuple(ranges)


def split_destination(entry: str) -> tuple[str, str]:
    """`target:ports` → (target, ports); ValueError without ports."""
    target, colon, ports = entry.rpartition(":")
    if not colon or not target or not ports:
        raise ValueError(f"{entry!r} is not target:ports")
    return target, ports


def network(text: str) -> Network | None:
    """An IP or CIDR as a network, else None."""
    if not _IP_LIKE.fullmatch(text):
        return None  # most names are tags or users: skip ipaddress's slower refusal
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def grant_as_acls(grant: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A `grants` entry's network part as acl rules (`ip`: `*`, `443`, `tcp:443`, `udp:*`)."""
    if not isinstance(grant, Mapping):
        return []
    rules = []
    for spec in grant.get("ip") or ():
        proto, _, ports = str(spec).rpartition(":")
        rule = {"action": "accept", "src": grant.get("src") or []}
        rule["dst"] = [f"{target}:{ports}" for target in grant.get("dst") or ()]
        rules.append(rule | ({"proto": proto} if proto else {}))
    return rules


def group_members(groups: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Each group's users, nested groups expanded (a cycle just stops the expansion)."""
    out: dict[str, frozenset[str]] = {}

    def expand(name: str, seen: frozenset[str]) -> frozenset[str]:
        users: set[str] = set()
        for member in groups.get(name) or ():
            if not isinstance(member, str):
                continue
            if member.startswith("group:"):
                if member not in seen:
                    users |= out.get(member) or expand(member, seen | {member})
            else:
                users.add(member.lower())
        return frozenset(users)

    for name in groups:
        out[name] = expand(name, frozenset({name}))
    return out


@dataclass
class _Rule:
    proto: str | None
    exact: dict[str, list[Ranges]] = field(default_factory=dict)  # destination name → ports
    special: list[tuple[str, Ranges]] = field(default_factory=list)  # *, autogroups, groups, IPs


class Evaluator:
    """Answers 'may `src` reach `host:port`?' for one policy's acls."""

    def __init__(self, policy: Mapping[str, Any]) -> None:
        groups = policy.get("groups") or {}
        self.members = group_members(groups)
        self.parents: dict[str, set[str]] = {}  # user or group → the groups that hold it
        for name, users in self.members.items():
            for user in users:
                self.parents.setdefault(user, set()).add(name)
            for member in groups.get(name) or ():
                if isinstance(member, str) and member.startswith("group:"):
                    self.parents.setdefault(member, set()).add(name)
        self.hosts = {
            k: n for k, v in (policy.get("hosts") or {}).items() if (n := network(str(v)))
        }
        self.by_source: dict[str, list[_Rule]] = {}
        self.by_network: list[tuple[Network, _Rule]] = []
        for raw in policy.get("acls") or ():
            self._index(raw)
        for grant in policy.get("grants") or ():
            for raw in grant_as_acls(grant):
                self._index(raw)

    def _index(self, raw: Mapping[str, Any]) -> None:
        if str(raw.get("action", "accept")).lower() != "accept":
            return
        proto = raw.get("proto")
        rule = _Rule(_PROTOCOLS.get(str(proto).lower(), str(proto)) if proto else None)
        for entry in raw.get("dst", raw.get("ports")) or ():
            try:
                target, ports = split_destination(entry)
                ranges = parse_ports(ports)
            except ValueError:
                continue  # reported by the checks
            if target == "*" or target.startswith(("autogroup:", "group:")) or self._net(target):
                rule.special.append((target, ranges))
            else:
                rule.exact.setdefault(target.lower(), []).append(ranges)
        for source in raw.get("src", raw.get("users")) or ():
            net = None if source == "*" else self._net(source)
            if net is not None:
                self.by_network.append((net, rule))
            else:
                self.by_source.setdefault(source.lower(), []).append(rule)

    def _net(self, name: str) -> Network | None:
        return self.hosts.get(name) or network(name)

    def identities(self, src: str) -> set[str]:
        """Every source name a rule may use to mean `src`."""
        src = src.lower()
        names = {src, "*", "autogroup:danger-all"}
        if src.startswith("tag:"):
            return names | {"autogroup:tagged"}
        if "@" in src or src.startswith("group:"):
            names |= _MEMBER
            todo = [src]
            while todo:
                for parent in self.parents.get(todo.pop(), ()):
                    if parent not in names:
                        names.add(parent)
                        todo.append(parent)
        return names

    def _rules(self, src: str) -> Iterable[_Rule]:
        for name in self.identities(src):
            yield from self.by_source.get(name, ())
        net = self._net(src)
        if net is not None:
            yield from (rule for where, rule in self.by_network if net.subnet_of(where))  # type: ignore[arg-type]

    def allows(self, src: str, destination: str, proto: str | None = None) -> bool:
        """Whether some rule lets `src` reach `destination` (`host:port`, one port)."""
        target, port_text = split_destination(destination)
        port = int(port_text)
        wanted = _PROTOCOLS.get((proto or "tcp").lower(), proto)
        for rule in self._rules(src):
            if rule.proto is not None and rule.proto != wanted:
                continue
            if any(_has(r, port) for r in rule.exact.get(target.lower(), ())):
                return True
            if any(_has(r, port) and self._covers(t, target, src) for t, r in rule.special):
                return True
        return False

    def _covers(self, pattern: str, target: str, src: str) -> bool:
        """Whether a special destination (`*`, an autogroup, a group, an IP range) holds target."""
        target = target.lower()
        if pattern == "*":
            return True
        if pattern in _MEMBER or pattern == "autogroup:self":
            return "@" in target and (pattern != "autogroup:self" or target == src.lower())
        if pattern == "autogroup:tagged":
            return target.startswith("tag:")
        if pattern.startswith("group:"):
            return target in self.members.get(pattern, ())
        where, net = self._net(pattern), self._net(target)
        return where is not None and net is not None and net.subnet_of(where)  # type: ignore[arg-type]


def _has(ranges: Ranges, port: int) -> bool:
    return any(low <= port <= high for low, high in ranges)


def run_tests(policy: Mapping[str, Any]) -> list[str]:
    """The failures of the policy's `tests`, one line each, as `POST /acl` would report them."""
    evaluator = Evaluator(policy)
    failures = []
    for number, test in enumerate(policy.get("tests") or (), start=1):
        src = test.get("src", test.get("user"))
        proto = test.get("proto")
        expected = [(d, True) for d in test.get("accept", test.get("allow")) or ()]
        for destination, want in expected + [(d, False) for d in test.get("deny") or ()]:
            got = evaluator.allows(src, destination, proto)
            if got != want:
                failures.append(
                    f'test {number} ({src}): address "{destination}": want: '
                    f"{'Accept' if want else 'Drop'}, got: {'Accept' if got else 'Drop'}"
                )
    return failures
