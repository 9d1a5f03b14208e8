"""Settings from the TOML file and the environment (env wins); the only reader of either.

Every setting is one row of `table.SETTINGS`; the README's configuration reference is generated
from it (`python -m provisioner.settings --markdown`) and a test keeps the two equal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from provisioner.catalog import DEFAULT_IMAGES, DEFAULT_NODES, DEFAULT_PLANS
from provisioner.errors import ConfigError
from provisioner.models import Image, Node, Plan, Quota
from provisioner.settings import sections
from provisioner.settings.policies import ApprovalRule, Limits, Quotas, check_references
from provisioner.settings.sections import read_file
from provisioner.settings.setting import group, read_all
from provisioner.settings.table import SETTINGS

__all__ = ["ApprovalRule", "Limits", "Quotas", "Settings", "SlackSettings", "TailnetSettings"]
__all__ += ["SETTINGS", "load"]


@dataclass(frozen=True)
class SlackSettings:
    """The Slack app, when it is configured (HTTP mode needs a signing secret)."""

    bot_token: str = field(repr=False)
    signing_secret: str | None = field(repr=False)
    app_token: str | None = field(repr=False)
    api_url: str
    slash_command: str
    ops_channel: str | None
    ops_users: frozenset[str]


@dataclass(frozen=True)
class TailnetSettings:
    """The tailnet (Tailscale or Headscale) that workspaces join, when one is configured."""

    kind: str  # "tailscale" or "headscale"
    api_url: str
    api_key: str | None = field(default=None, repr=False)
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)
    tailnet: str = "-"
    base_domain: str | None = None
    tags: tuple[str, ...] = ()
    own_tag: str = "tag:provisioner"
    node_tags: tuple[str, ...] = ("tag:provisioner-node",)
    join: str = "required"  # or "optional": a device that never appears leaves node-only access
    join_timeout: timedelta = timedelta(minutes=5)
    key_expiry: timedelta = timedelta(hours=1)
    acl_base: Path | None = None


def _no_groups() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Settings:
    """Everything the composition root needs to build the provisioner."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".provisioner")
    database_url: str = ""
    admin_token: str | None = field(default=None, repr=False)
    nodes: tuple[Node, ...] = DEFAULT_NODES
    plans: tuple[Plan, ...] = DEFAULT_PLANS
    images: tuple[Image, ...] = DEFAULT_IMAGES
    default_plan: str = "small"
    default_image: str = "debian-12"
    lease_seconds: float = 30.0
    workers: int = 16
    fault_point: str | None = None
    log_level: str = "INFO"
    rate_limit: float = 20.0
    rate_burst: int = 40
    cors_origins: frozenset[str] = frozenset()
    slack: SlackSettings | None = None
    tailnet: TailnetSettings | None = None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=_no_groups)
    ops_group: str = "ops"
    quota: Quota = field(default_factory=Quota)
    quotas: Quotas = field(default_factory=Quotas)
    approval_rules: tuple[ApprovalRule, ...] = ()
    approval_ttl: timedelta = timedelta(hours=24)
    expiry_grace: timedelta = timedelta(hours=24)
    reminders: tuple[timedelta, ...] = (timedelta(hours=24), timedelta(hours=1))
    scheduler_period: timedelta = timedelta(seconds=30)
    playbooks_dir: Path | None = None  # None: data_dir / "playbooks" (see playbooks_path)
    playbook_timeout: timedelta = timedelta(seconds=1800)
    ansible_playbook: str = "ansible-playbook"
    boot_timeout: float = 600.0
    orphan_grace: float = 600.0
    compat_node_key: str | None = field(default=None, repr=False)
    http_processes: int = 1
    serve_role: str = "all"
    config_path: str | None = None

    @property
    def url(self) -> str:
        """Where `serve` listens, as a base URL for clients."""
        return f"http://{self.host}:{self.port}"

    @property
    def playbooks_path(self) -> Path:
        """The playbook catalogue's directory."""
        return self.playbooks_dir or self.data_dir / "playbooks"


def load(config_path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `config_path` (or PROVISIONER_CONFIG) overlaid with the environment."""
    env = os.environ if environ is None else environ
    path = config_path or env.get("PROVISIONER_CONFIG") or None
    config = read_file(Path(path), "PROVISIONER_CONFIG") if path else {}
    values = read_all(SETTINGS, env, config)
    catalogue = _catalogue(values)
    data_dir: Path = values["data_dir"]
    values.update(
        config_path=path,
        database_url=values["database_url"]
        or f"sqlite+aiosqlite:///{data_dir.resolve() / 'provisioner.db'}",
        playbooks_dir=values["playbooks_dir"] or data_dir / "playbooks",
        slack=_slack(group(values, "slack")),
        tailnet=_tailnet(group(values, "tailnet")),
        groups=values["groups"] or _no_groups(),
    )
    values.update(_policies(values, catalogue))
    return Settings(**values, **catalogue)


def _catalogue(values: dict[str, Any]) -> dict[str, Any]:
    """Nodes, plans, images and the defaults a create without plan or image gets."""
    nodes_file, ssh_host = values.pop("nodes_file"), values.pop("ssh_host")
    ssh = (values.pop("ssh_port"), values.pop("ssh_user"))
    entries = values.pop("nodes")
    if nodes_file is not None:
        entries = read_file(nodes_file, "PROVISIONER_NODES").get("nodes")
    plans = values.pop("plans") or DEFAULT_PLANS
    images = values.pop("images") or DEFAULT_IMAGES
    return {
        "nodes": (sections.compat_node(ssh_host, *ssh, values["compat_node_key"]),)
        if ssh_host
        else sections.nodes(entries, "PROVISIONER_NODES" if nodes_file else "nodes"),
        "plans": plans,
        "images": images,
        "default_plan": _default(values.pop("default_plan"), [p.name for p in plans], "plan"),
        "default_image": _default(values.pop("default_image"), [i.name for i in images], "image"),
    }


def _default(chosen: str | None, names: list[str], what: str) -> str:
    """The configured default if it names a known item, else the first item."""
    if chosen is None:
        return names[0]
    if chosen not in names:
        raise ConfigError(
            f"defaults.{what} (PROVISIONER_DEFAULT_{what.upper()}) names no {what} {chosen!r}; "
            f"{what}s: {', '.join(names)}"
        )
    return chosen


def _policies(values: dict[str, Any], catalogue: dict[str, Any]) -> dict[str, Any]:
    """Quotas (the legacy two settings fill `[quotas.default]` when it is absent) and rules."""
    quota = Quota(values.pop("quota_workspaces"), values.pop("quota_vcpus"))
    quotas = values["quotas"] or Quotas(Limits(quota.max_workspaces, quota.max_vcpus))
    rules = values["approval_rules"] or ()
    check_references(
        rules,
        quotas,
        values["groups"],
        {p.name for p in catalogue["plans"]},
        {i.name for i in catalogue["images"]},
    )
    return {"quota": quota, "quotas": quotas, "approval_rules": rules}


def _slack(raw: dict[str, Any]) -> SlackSettings | None:
    """Slack settings, or None when no bot token is set (Slack off)."""
    if raw["bot_token"] is None:
        return None
    if raw["signing_secret"] is None and raw["app_token"] is None:
        raise ConfigError("SLACK_SIGNING_SECRET is required (or SLACK_APP_TOKEN for Socket Mode)")
    return SlackSettings(**raw)


def _tailnet(raw: dict[str, Any]) -> TailnetSettings | None:
    """Tailnet settings, or None when no tailnet is configured (or PROVISIONER_TAILNET=off)."""
    tailscale = (raw.pop("tailscale_url"), raw.pop("tailscale_key"))
    headscale = (raw.pop("headscale_url"), raw.pop("headscale_key"))
    oauth = (raw["oauth_client_id"], raw["oauth_client_secret"])
    kind = raw.pop("kind")
    if kind is None:
        kind = "tailscale" if tailscale[1] or any(oauth) else "headscale" if headscale[0] else "off"
    if kind == "off":
        return None
    if kind == "headscale":
        if not all(headscale):
            raise ConfigError(
                "PROVISIONER_TAILNET=headscale needs HEADSCALE_API_URL and HEADSCALE_API_KEY"
            )
        return TailnetSettings(kind, *headscale, **raw)
    if any(oauth) and not all(oauth):
        raise ConfigError(
            "TAILSCALE_OAUTH_CLIENT_ID and TAILSCALE_OAUTH_CLIENT_SECRET go together; one is unset"
        )
    if not tailscale[1] and not all(oauth):
        raise ConfigError(
            "PROVISIONER_TAILNET=tailscale needs TAILSCALE_API_KEY, or "
            "TAILSCALE_OAUTH_CLIENT_ID and TAILSCALE_OAUTH_CLIENT_SECRET"
        )
    return TailnetSettings(kind, *tailscale, **raw)
