"""Settings from the TOML file and the environment (env wins); the only reader of either."""

from __future__ import annotations

import base64
import binascii
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.catalog import DEFAULT_IMAGES, DEFAULT_NODES, DEFAULT_PLANS
from provisioner.errors import ConfigError
from provisioner.models import Capacity, Image, Node, Plan, Quota


@dataclass(frozen=True)
class SlackSettings:
    """The Slack app, when it is configured (HTTP mode needs a signing secret)."""

    bot_token: str
    signing_secret: str | None
    app_token: str | None
    api_url: str
    slash_command: str
    ops_channel: str | None
    ops_users: frozenset[str]


@dataclass(frozen=True)
class Settings:
    """Everything the composition root needs to build the provisioner."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".provisioner")
    database_url: str = ""
    admin_token: str | None = None
    nodes: tuple[Node, ...] = DEFAULT_NODES
    plans: tuple[Plan, ...] = DEFAULT_PLANS
    images: tuple[Image, ...] = DEFAULT_IMAGES
    lease_seconds: float = 30.0
    workers: int = 16
    fault_point: str | None = None
    log_level: str = "INFO"
    rate_limit: float = 20.0
    rate_burst: int = 40
    cors_origins: frozenset[str] = frozenset()
    slack: SlackSettings | None = None
    quota: Quota = field(default_factory=Quota)
    boot_timeout: float = 600.0
    orphan_grace: float = 600.0
    compat_node_key: str | None = None
    http_processes: int = 1
    serve_role: str = "all"
    config_path: str | None = None

    @property
    def url(self) -> str:
        """Where `serve` listens, as a base URL for clients."""
        return f"http://{self.host}:{self.port}"


def load(config_path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `config_path` (or PROVISIONER_CONFIG) overlaid with the environment."""
    env = os.environ if environ is None else environ
    path = config_path or env.get("PROVISIONER_CONFIG")
    config = _read_file(Path(path), "PROVISIONER_CONFIG") if path else {}

    def pick(name: str, key: str, default: Any) -> Any:
        return env.get(name, config.get(key, default))

    data_dir = Path(pick("PROVISIONER_DATA_DIR", "data_dir", ".provisioner"))
    nodes_file = env.get("PROVISIONER_NODES", config.get("nodes_file"))
    node_entries = _read_file(Path(nodes_file), "PROVISIONER_NODES") if nodes_file else config
    return Settings(
        host=str(pick("PROVISIONER_HOST", "host", "127.0.0.1")),
        port=_number(pick("PROVISIONER_PORT", "port", 8080), "PROVISIONER_PORT", 1, 65535),
        data_dir=data_dir,
        database_url=str(
            pick("PROVISIONER_DATABASE_URL", "database_url", "")
            or f"sqlite+aiosqlite:///{data_dir.resolve() / 'provisioner.db'}"
        ),
        admin_token=env.get("PROVISIONER_ADMIN_TOKEN") or env.get("API_TOKEN") or None,
        nodes=_nodes(node_entries.get("nodes"), env),
        plans=_section(config.get("plans"), "plans", _plan) or DEFAULT_PLANS,
        images=_section(config.get("images"), "images", _image) or DEFAULT_IMAGES,
        lease_seconds=float(
            _number(
                pick("PROVISIONER_LEASE_SECONDS", "lease_seconds", 30), "lease_seconds", 1, 3600
            )
        ),
        workers=_number(pick("PROVISIONER_WORKERS", "workers", 16), "PROVISIONER_WORKERS", 1, 512),
        fault_point=env.get("PROVISIONER_FAULT_POINT") or None,
        log_level=str(pick("PROVISIONER_LOG_LEVEL", "log_level", "INFO")).upper(),
        rate_limit=float(
            _number(
                pick("PROVISIONER_RATE_LIMIT", "rate_limit", 20),
                "PROVISIONER_RATE_LIMIT",
                0,
                100000,
            )
        ),
        rate_burst=_number(
            pick("PROVISIONER_RATE_BURST", "rate_burst", 40), "PROVISIONER_RATE_BURST", 1, 100000
        ),
        cors_origins=_origins(pick("PROVISIONER_CORS_ORIGINS", "cors_origins", "")),
        slack=_slack(env, config.get("slack") or {}),
        boot_timeout=float(
            _number(
                pick("PROVISIONER_BOOT_TIMEOUT", "boot_timeout", 600),
                "PROVISIONER_BOOT_TIMEOUT",
                1,
                86400,
            )
        ),
        orphan_grace=float(
            _number(
                pick("PROVISIONER_ORPHAN_GRACE", "orphan_grace", 600),
                "PROVISIONER_ORPHAN_GRACE",
                0,
                86400 * 30,
            )
        ),
        compat_node_key=env.get("SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED") or None,
        http_processes=_number(
            pick("PROVISIONER_HTTP_PROCESSES", "http_processes", 1),
            "PROVISIONER_HTTP_PROCESSES",
            1,
            64,
        ),
        # Internal: set by serve for the extra HTTP processes it starts.
        serve_role=_choice(env.get("PROVISIONER_SERVE_ROLE", "all"), "serve role", SERVE_ROLES),
        config_path=path,
        quota=Quota(
            _number(
                pick("PROVISIONER_QUOTA_WORKSPACES", "quota_workspaces", 0),
                "PROVISIONER_QUOTA_WORKSPACES",
                0,
                100000,
            ),
            _number(
                pick("PROVISIONER_QUOTA_VCPUS", "quota_vcpus", 0),
                "PROVISIONER_QUOTA_VCPUS",
                0,
                1000000,
            ),
        ),
    )


def _read_file(path: Path, setting: str) -> dict[str, Any]:
    """A TOML or JSON file as a dict, or ConfigError naming the setting."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"{setting}: {path} is not valid {path.suffix[1:] or 'TOML'}: {error}"
        ) from None
    if isinstance(data, list):
        data = {"nodes": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{setting}: {path} must hold a table of settings")
    return data


def _number(value: Any, setting: str, low: int, high: int) -> int:
    """An integer setting within bounds."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{setting} must be between {low} and {high}, got {number}")
    return number


def _section(raw: Any, name: str, build: Any) -> tuple[Any, ...]:
    """Build one item per `[name.ITEM]` table."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table of tables, like [{name}.small]")
    return tuple(build(key, _table(value, f"{name}.{key}")) for key, value in raw.items())


def _table(value: Any, where: str) -> dict[str, Any]:
    """`value` if it is a table, else ConfigError."""
    if not isinstance(value, dict):
        raise ConfigError(f"[{where}] must be a table")
    return value


def _plan(name: str, raw: dict[str, Any]) -> Plan:
    """A plan from its table."""
    where = f"plans.{name}"
    _known(
        raw,
        where,
        {"vcpus", "memory_mib", "disk_gib", "ttl_hours", "max_ttl_hours", "requires_approval"},
    )
    return Plan(
        name=name,
        vcpus=_number(raw.get("vcpus"), f"{where}.vcpus", 1, 256),
        memory_mib=_number(raw.get("memory_mib"), f"{where}.memory_mib", 128, 4 << 20),
        disk_gib=_number(raw.get("disk_gib"), f"{where}.disk_gib", 1, 65536),
        ttl_hours=_number(raw.get("ttl_hours", 72), f"{where}.ttl_hours", 1, 87600),
        max_ttl_hours=_number(raw.get("max_ttl_hours", 720), f"{where}.max_ttl_hours", 1, 87600),
        requires_approval=bool(raw.get("requires_approval", False)),
    )


def _image(name: str, raw: dict[str, Any]) -> Image:
    """An image from its table."""
    where = f"images.{name}"
    _known(raw, where, {"base_volume", "os", "kernel", "initrd", "cmdline"})
    if not isinstance(raw.get("base_volume"), str):
        raise ConfigError(f"{where}.base_volume is required (the base volume's name in the pool)")
    return Image(
        name=name,
        base_volume=raw["base_volume"],
        os=str(raw.get("os", "linux")),
        kernel=raw.get("kernel"),
        initrd=raw.get("initrd"),
        cmdline=raw.get("cmdline"),
    )


NODE_KEYS = {
    "name",
    "ssh_host",
    "ssh_port",
    "ssh_user",
    "ssh_key",
    "host_key",
    "libvirt_uri",
    "pool",
    "network",
    "virt_type",
    "capacity",
}
VIRT_TYPES = ("auto", "kvm", "qemu")
SERVE_ROLES = ("all", "http")


def _nodes(raw: Any, env: Mapping[str, str]) -> tuple[Node, ...]:
    """Nodes from the config or nodes file, or the single compatibility node, or the default."""
    if env.get("SSH_HOST"):
        return (_compat_node(env),)
    if raw is None:
        return DEFAULT_NODES
    entries = (
        [{"name": k, **_table(v, f"nodes.{k}")} for k, v in raw.items()]
        if isinstance(raw, dict)
        else raw
    )
    if not isinstance(entries, list) or not entries:
        raise ConfigError("nodes must be a non-empty list of node entries")
    nodes = tuple(_node(_table(entry, "nodes[]")) for entry in entries)
    if len({n.name for n in nodes}) != len(nodes):
        raise ConfigError("nodes: two nodes share a name")
    return nodes


def _node(raw: dict[str, Any]) -> Node:
    """A node from its entry."""
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("every node entry needs a name")
    where = f"nodes.{name}"
    _known(raw, where, NODE_KEYS)
    cap = _table(raw.get("capacity", {}), f"{where}.capacity")
    return Node(
        name=name,
        libvirt_uri=str(raw.get("libvirt_uri", "qemu:///system")),
        ssh_host=raw.get("ssh_host"),
        ssh_port=_number(raw.get("ssh_port", 2222), f"{where}.ssh_port", 1, 65535),
        ssh_user=str(raw.get("ssh_user", "root")),
        ssh_key=raw.get("ssh_key"),
        host_key=raw.get("host_key"),
        pool=str(raw.get("pool", "default")),
        network=str(raw.get("network", "default")),
        virt_type=_choice(raw.get("virt_type", "auto"), f"{where}.virt_type", VIRT_TYPES),
        capacity=Capacity(
            _number(cap.get("vcpus", 64), f"{where}.capacity.vcpus", 1, 4096),
            _number(cap.get("memory_mib", 262144), f"{where}.capacity.memory_mib", 128, 1 << 30),
            _number(cap.get("disk_gib", 4096), f"{where}.capacity.disk_gib", 1, 1 << 20),
        ),
    )


def _compat_node(env: Mapping[str, str]) -> Node:
    """The one node of a GlueOps-style deployment (SSH_HOST, SSH_PORT, SSH_USER, key)."""
    key = env.get("SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED")
    if key:
        try:
            base64.b64decode(key, validate=True)
        except binascii.Error:
            raise ConfigError(
                "SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED is not valid base64"
            ) from None
    return Node(
        name="node-1",
        ssh_host=env["SSH_HOST"],
        ssh_port=_number(env.get("SSH_PORT", 2222), "SSH_PORT", 1, 65535),
        ssh_user=env.get("SSH_USER", "root"),
        ssh_key="env:SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED" if key else None,
    )


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else ConfigError listing them."""
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _known(raw: dict[str, Any], where: str, allowed: set[str]) -> None:
    """ConfigError for keys that are not settings (usually typos)."""
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"[{where}] has unknown key {unknown[0]!r}; known: {', '.join(sorted(allowed))}"
        )


def _origins(raw: Any) -> frozenset[str]:
    """CORS origins from a comma-separated string or a list; empty means CORS stays off."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ConfigError("PROVISIONER_CORS_ORIGINS must be a comma-separated list of origins")
    origins = frozenset(str(item).strip().rstrip("/") for item in items if str(item).strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(
                f"PROVISIONER_CORS_ORIGINS: {origin!r} is not an origin like https://host"
            )
    return origins


def _slack(env: Mapping[str, str], raw: Any) -> SlackSettings | None:
    """Slack settings, or None when no bot token is set (Slack off)."""
    table = _table(raw, "slack")

    def pick(name: str, key: str, default: str | None = None) -> str | None:
        value = env.get(name, table.get(key, default))
        return str(value) if value else None

    token = pick("SLACK_BOT_TOKEN", "bot_token")
    if token is None:
        return None
    secret = pick("SLACK_SIGNING_SECRET", "signing_secret")
    app_token = pick("SLACK_APP_TOKEN", "app_token")
    if not token.startswith("xoxb-"):
        raise ConfigError("SLACK_BOT_TOKEN must be a bot token (xoxb-…)")
    if app_token is not None and not app_token.startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN must be an app-level token (xapp-…) for Socket Mode")
    if secret is None and app_token is None:
        raise ConfigError("SLACK_SIGNING_SECRET is required (or SLACK_APP_TOKEN for Socket Mode)")
    command = pick("PROVISIONER_SLASH_COMMAND", "slash_command", "/workspace") or "/workspace"
    if not command.startswith("/"):
        raise ConfigError("PROVISIONER_SLASH_COMMAND must start with '/', like /workspace")
    users = pick("PROVISIONER_OPS_USERS", "ops_users", "") or ""
    return SlackSettings(
        bot_token=token,
        signing_secret=secret,
        app_token=app_token,
        api_url=pick("SLACK_API_URL", "api_url", "https://slack.com/api/") or "",
        slash_command=command,
        ops_channel=pick("PROVISIONER_OPS_CHANNEL", "ops_channel"),
        ops_users=frozenset(u.strip() for u in users.split(",") if u.strip()),
    )
