"""The fakes' reading of a tailnet policy: HuJSON, static checks, tag owners and `tests` runs.

Enough of the grammar to evaluate our generated policies and the GlueOps seed: users, groups,
tags, hosts, IPs/CIDRs, `*`, autogroup:member/tagged/self/admin, port lists and ranges. Both
fakes share it; a `resolve_user` callback says which policy tokens name a user (Tailscale:
`alice@example.com`; Headscale: `alice@` or the e-mail), `admins` who autogroup:admin holds.
Error wording is ours where Tailscale documents none (see each message).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

TAG = re.compile(r"^tag:[A-Za-z][A-Za-z0-9-]*$")
TAILSCALE_AUTOGROUPS = frozenset(
    {
        "autogroup:member", "autogroup:members", "autogroup:self", "autogroup:admin",
        "autogroup:owner", "autogroup:it-admin", "autogroup:network-admin",
        "autogroup:billing-admin", "autogroup:auditor", "autogroup:tagged", "autogroup:shared",
        "autogroup:internet", "autogroup:danger-all", "autogroup:nonroot",
    }
)  # fmt: skip
HEADSCALE_AUTOGROUPS = frozenset(
    {"autogroup:internet", "autogroup:member", "autogroup:nonroot", "autogroup:tagged",
     "autogroup:self", "autogroup:danger-all"}
)  # fmt: skip


class PolicyError(ValueError):
    """The policy does not parse or breaks a rule; the message is what the server says."""


def parse_hujson(text: str) -> Any:
    """HuJSON → JSON value: `//` and `/* */` comments and trailing commas removed."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise PolicyError("parsing policy: unterminated /* comment")
            i = end + 2
        else:
            out.append(c)
            i += 1
    cleaned = re.sub(r",(\s*[}\]])", r"\1", "".join(out))
    try:
        return json.loads(cleaned)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"parsing policy: {exc.msg} at line {exc.lineno}") from None


def valid_tag(tag: object) -> bool:
    """tailcfg.CheckTag: `tag:` then a letter, then letters, digits and hyphens."""
    return isinstance(tag, str) and bool(TAG.match(tag))


def _ports(spec: str) -> Callable[[int], bool] | None:
    """A port spec (`*`, `22`, `80,443`, `1000-2000`) as a predicate; None when malformed."""
    if spec == "*":
        return lambda port: True
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        ranges.append((int(low), int(high or low)))
    return lambda port: any(a <= port <= b for a, b in ranges)


def _network(token: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(token, strict=False)
    except ValueError:
        return None


def _items(mapping: dict[str, Any], *keys: str) -> list[Any]:
    """The list under the first of `keys` present (new name, then legacy); [] otherwise."""
    value: Any = next((mapping[k] for k in keys if k in mapping), [])
    return value if isinstance(value, list) else []


def _within(token: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(token) in network
    except ValueError:
        return False


@dataclass
class Policy:
    """One parsed policy and what the fakes ask of it."""

    doc: dict[str, Any]
    resolve_user: Callable[[str], str | None]
    autogroups: frozenset[str] = TAILSCALE_AUTOGROUPS
    admins: Collection[str] = ()
    members: Collection[str] = ()
    problems: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, **options: Any) -> Policy:
        """Parse and check `text`; PolicyError with the server's wording when it fails."""
        doc = parse_hujson(text) if text.strip() else {}
        if not isinstance(doc, dict):
            raise PolicyError("parsing policy: the policy must be a JSON object")
        policy = cls(doc, **options)
        policy.check()
        if policy.problems:
            raise PolicyError("; ".join(policy.problems))
        return policy

    def section(self, name: str, kind: type) -> Any:
        value = self.doc.get(name, kind())
        if not isinstance(value, kind):
            self.problems.append(f"{name}: must be a JSON {kind.__name__}")
            return kind()
        return value

    def check(self) -> None:
        """Fill `problems` with every rule the policy breaks."""
        for name in self.section("groups", dict):
            if not name.startswith("group:"):
                self.problems.append(f"groups: {name!r}: group names must start with group:")
        for tag, owners in self.section("tagOwners", dict).items():
            if not valid_tag(tag):
                self.problems.append(f"tagOwners: {tag!r}: invalid tag name")
            for owner in owners if isinstance(owners, list) else []:
                self._reference(f"tagOwners[{tag!r}]", owner)
        for index, rule in enumerate(self.section("acls", list)):
            self._check_rule(f"acls[{index}]", rule)
        for index, rule in enumerate(self.section("ssh", list)):
            where = f"ssh[{index}]"
            if not isinstance(rule, dict) or rule.get("action") not in ("accept", "check"):
                self.problems.append(f"{where}: action must be accept or check")
                continue
            for token in [*_items(rule, "src"), *_items(rule, "dst")]:
                self._reference(where, token)
        for index, test in enumerate(self.section("tests", list)):
            self._check_test(f"tests[{index}]", test)

    def _check_rule(self, where: str, rule: object) -> None:
        if not isinstance(rule, dict) or rule.get("action") != "accept":
            self.problems.append(f'{where}: action must be "accept"')
            return
        for token in _items(rule, "src", "users"):
            self._reference(f"{where}.src", token)
        for entry in _items(rule, "dst", "ports"):
            target, _, spec = str(entry).rpartition(":")
            if not target or _ports(spec) is None:
                self.problems.append(f"{where}.dst: {entry!r}: want target:ports")
            else:
                self._reference(f"{where}.dst", target)

    def _check_test(self, where: str, test: object) -> None:
        if not isinstance(test, dict) or not isinstance(test.get("src", test.get("user")), str):
            self.problems.append(f"{where}: src must be one identity")
            return
        for entry in [*_items(test, "accept", "allow"), *_items(test, "deny")]:
            host, _, port = str(entry).rpartition(":")
            if not host or not port.isdigit():
                self.problems.append(f"{where}: {entry!r}: want host:port with one port")

    def _reference(self, where: str, token: object) -> None:
        """Groups, tags and autogroups a rule names must exist (Tailscale's checks, our words)."""
        if not isinstance(token, str):
            self.problems.append(f"{where}: {token!r} is not a string")
        elif token.startswith("group:") and token not in self.doc.get("groups", {}):
            self.problems.append(f"{where}: group {token!r} is not defined in groups")
        elif token.startswith("tag:") and token not in self.doc.get("tagOwners", {}):
            self.problems.append(f"{where}: tag {token!r} is not defined in tagOwners")
        elif token.startswith("autogroup:") and token not in self.autogroups:
            self.problems.append(f"{where}: invalid autogroup {token!r}")

    # Tag ownership (reference §5).

    def tag_owners(self, tag: str) -> list[str] | None:
        """The owners listed for `tag`; None when the tag is not defined."""
        owners = self.doc.get("tagOwners", {}).get(tag)
        return [str(o) for o in owners] if isinstance(owners, list) else None

    def users_owning(self, tag: str) -> set[str]:
        """Users (canonical) who own `tag` directly, through a group or an autogroup."""
        users: set[str] = set()
        for owner in self.tag_owners(tag) or []:
            users |= self._users_of(owner)
        return users

    def _users_of(self, token: str) -> set[str]:
        if token.startswith("group:"):
            found: set[str] = set()
            for member in self.doc.get("groups", {}).get(token, []):
                found |= self._users_of(str(member))
            return found
        if token in ("autogroup:admin", "autogroup:owner"):
            return set(self.admins)
        if token in ("autogroup:member", "autogroup:members"):
            return set(self.members)
        user = self.resolve_user(token)
        return {user} if user else set()

    # Tests (reference §6): which src reaches which host:port under `acls`.

    def _facets(self, token: str, src_user: str | None = None) -> set[str]:
        """Every policy token that names `token`'s identity (its groups, autogroups, aliases)."""
        found = {"*", token}
        user = self.resolve_user(token)
        if user:
            found |= {f"user:{user}", "autogroup:member", "autogroup:members"}
            found |= {g for g in self.doc.get("groups", {}) if user in self._users_of(g)}
            if user in self.admins:
                found.add("autogroup:admin")
            if src_user == user:
                found.add("autogroup:self")
        elif token.startswith("tag:"):
            found.add("autogroup:tagged")
        elif token.startswith("group:"):
            found |= {"autogroup:member", "autogroup:members"}
        hosts = self.doc.get("hosts", {})
        found |= {alias for alias, address in hosts.items() if address == token}
        if token in hosts:
            found.add(str(hosts[token]))
        return found

    def _matches(self, token: str, facets: set[str]) -> bool:
        user = self.resolve_user(token)
        if (f"user:{user}" if user else token) in facets:
            return True
        network = _network(str(self.doc.get("hosts", {}).get(token, token)))
        return network is not None and any(_within(f, network) for f in facets)

    def allows(self, src: str, dst: str, port: int, proto: str | None = None) -> bool:
        """Whether some `acls` rule accepts `src` → `dst:port`."""
        src_facets = self._facets(src)
        dst_facets = self._facets(dst, src_user=self.resolve_user(src))
        for rule in self.doc.get("acls", []):
            if proto and rule.get("proto") and rule["proto"] != proto:
                continue
            if not any(self._matches(s, src_facets) for s in _items(rule, "src", "users")):
                continue
            for entry in _items(rule, "dst", "ports"):
                target, _, spec = str(entry).rpartition(":")
                ports = _ports(spec)
                if ports and ports(port) and self._matches(target, dst_facets):
                    return True
        return False

    def run_tests(self, tests: Iterable[Any] | None = None) -> list[TestFailure]:
        """Failures of `tests` (default: the policy's own) against its `acls`."""
        failures: list[TestFailure] = []
        for test in self.doc.get("tests", []) if tests is None else tests:
            src = str(test.get("src", test.get("user", "")))
            proto = test.get("proto")
            for want, entries in ((True, _items(test, "accept", "allow")),
                                  (False, _items(test, "deny"))):  # fmt: skip
                for entry in entries:
                    host, _, port = str(entry).rpartition(":")
                    if self.allows(src, host, int(port), proto) != want:
                        failures.append(TestFailure(src, str(entry), want))
        return failures


@dataclass(frozen=True)
class TestFailure:
    """One assertion of a `tests` entry that the policy breaks."""

    src: str
    dst: str
    want_accept: bool

    def tailscale(self) -> str:
        """Tailscale's wording: `address "bob@example.com:22": want: Drop, got: Accept`."""
        want, got = ("Accept", "Drop") if self.want_accept else ("Drop", "Accept")
        return f'address "{self.dst}": want: {want}, got: {got}'

    def headscale(self) -> str:
        """Headscale 0.29's wording: `src -> dst: expected ALLOWED, got DENIED`."""
        want, got = ("ALLOWED", "DENIED") if self.want_accept else ("DENIED", "ALLOWED")
        return f"{self.src} -> {self.dst}: expected {want}, got {got}"


def tailscale_data(failures: Iterable[TestFailure]) -> list[dict[str, Any]]:
    """Failures grouped by src as Tailscale's `data`: [{"user", "errors"}]."""
    grouped: dict[str, list[str]] = {}
    for failure in failures:
        grouped.setdefault(failure.src, []).append(failure.tailscale())
    return [{"user": src, "errors": errors} for src, errors in grouped.items()]
