"""Policy settings (CONTRACT §7): groups, quotas per group, and the approval rules table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from provisioner.errors import ConfigError
from provisioner.settings.sections import known, number, table

OUTCOMES = ("auto", "approve", "refuse")
LIMIT_KEYS = ("workspaces", "vcpus", "memory_mib", "disk_gib")
RULE_KEYS = {"plan", "image", "group", "over_quota", "name", "outcome"}


@dataclass(frozen=True)
class Limits:
    """What one user may hold at once (0: no limit on that resource)."""

    workspaces: int = 0
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0


@dataclass(frozen=True)
class Quotas:
    """`[quotas.default]` and `[quotas.group.NAME]`: a user in groups gets their largest limits."""

    default: Limits = field(default_factory=Limits)
    groups: Mapping[str, Limits] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ApprovalRule:
    """One `[[approval_rules]]` entry; None matchers match anything. First match wins."""

    outcome: str
    name: str | None = None
    plan: str | None = None
    image: str | None = None
    groups: tuple[str, ...] = ()
    over_quota: bool | None = None

    @property
    def label(self) -> str:
        """How messages and the audit name the rule: its name, else its matchers."""
        if self.name:
            return self.name
        parts = [
            f"plan={self.plan}" if self.plan else "",
            f"image={self.image}" if self.image else "",
        ]
        parts += [f"group={','.join(self.groups)}" if self.groups else ""]
        parts += [
            f"over_quota={str(self.over_quota).lower()}" if self.over_quota is not None else ""
        ]
        return " ".join(p for p in parts if p) or "any request"


def groups(raw: Any, where: str) -> Mapping[str, tuple[str, ...]]:
    """`NAME = [e-mails]` pairs (a file may also hold them under a `[groups]` table)."""
    raw = table(raw, where)
    if set(raw) == {"groups"} and isinstance(raw["groups"], dict):
        raw = raw["groups"]
    found: dict[str, tuple[str, ...]] = {}
    for name, members in raw.items():
        if not isinstance(members, list) or not all(
            isinstance(m, str) and "@" in m for m in members
        ):
            raise ConfigError(f"{where}.{name} must be a list of e-mail addresses")
        found[name] = tuple(members)
    return MappingProxyType(found)


def limits(raw: Any, where: str) -> Limits:
    """One `[quotas.…]` table."""
    raw = table(raw, where)
    known(raw, where, set(LIMIT_KEYS))
    return Limits(*(number(raw.get(k, 0), f"{where}.{k}", 0, 1 << 30) for k in LIMIT_KEYS))


def quotas(raw: Any, where: str) -> Quotas:
    """The `[quotas]` table: `default` and `group.NAME`."""
    raw = table(raw, where)
    known(raw, where, {"default", "group"})
    per_group = table(raw.get("group", {}), f"{where}.group")
    return Quotas(
        default=limits(raw.get("default", {}), f"{where}.default"),
        groups=MappingProxyType(
            {name: limits(v, f"{where}.group.{name}") for name, v in per_group.items()}
        ),
    )


def approval_rules(raw: Any, where: str) -> tuple[ApprovalRule, ...]:
    """The `[[approval_rules]]` list, in order."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where} must be a list of tables, written [[{where}]]")
    return tuple(
        _rule(table(entry, f"{where}[{i}]"), f"{where}[{i}]") for i, entry in enumerate(raw)
    )


def _rule(raw: dict[str, Any], where: str) -> ApprovalRule:
    """One rule, its matchers type-checked."""
    known(raw, where, RULE_KEYS)
    if raw.get("outcome") not in OUTCOMES:
        raise ConfigError(f"{where}.outcome must be one of {', '.join(OUTCOMES)}")
    group = raw.get("group", [])
    group = [group] if isinstance(group, str) else group
    text = {k: raw.get(k) for k in ("name", "plan", "image")}
    if not all(v is None or isinstance(v, str) for v in text.values()) or not (
        isinstance(group, list) and all(isinstance(g, str) for g in group)
    ):
        raise ConfigError(f"{where}: name, plan and image are text, group a name or a list")
    if not isinstance(raw.get("over_quota", False), bool):
        raise ConfigError(f"{where}.over_quota must be true or false")
    return ApprovalRule(
        outcome=raw["outcome"], groups=tuple(group), over_quota=raw.get("over_quota"), **text
    )


def check_references(
    rules: tuple[ApprovalRule, ...],
    quota: Quotas,
    known_groups: Mapping[str, Any],
    plans: set[str],
    images: set[str],
) -> None:
    """ConfigError for a rule or quota naming a plan, image or group that does not exist."""
    for i, rule in enumerate(rules):
        for what, value, names in (("plan", rule.plan, plans), ("image", rule.image, images)):
            if value is not None and value not in names:
                raise ConfigError(f"approval_rules[{i}].{what}: no {what} named {value!r}")
        for name in rule.groups:
            if name not in known_groups:
                raise ConfigError(f"approval_rules[{i}].group: no group named {name!r}")
    for name in quota.groups:
        if name not in known_groups:
            raise ConfigError(f"quotas.group.{name}: no group named {name!r} (PROVISIONER_GROUPS)")
