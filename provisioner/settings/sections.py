"""Tables of the settings file (`[plans.NAME]`, `[images.NAME]`, nodes), and files of settings."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.catalog import DEFAULT_NODES
from provisioner.errors import ConfigError
from provisioner.models import Capacity, Image, Node, Plan
from provisioner.settings.values import Choice, Whole

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


def number(value: Any, where: str, low: int, high: int) -> int:
    """An integer inside a section, within bounds."""
    result: int = Whole(low, high).parse(value, where)
    return result


def table(value: Any, where: str) -> dict[str, Any]:
    """`value` if it is a table, else ConfigError."""
    if not isinstance(value, dict):
        raise ConfigError(f"[{where}] must be a table")
    return value


def known(raw: dict[str, Any], where: str, allowed: set[str]) -> None:
    """ConfigError for keys that are not settings (usually typos)."""
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"[{where}] has unknown key {unknown[0]!r}; known: {', '.join(sorted(allowed))}"
        )


def named_tables(build: Callable[[str, dict[str, Any]], Any]) -> Callable[[Any, str], Any]:
    """A Table builder: one item per `[name.ITEM]` table, in file order."""

    def tables(raw: Any, name: str) -> tuple[Any, ...]:
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}] must be a table of tables, like [{name}.small]")
        return tuple(build(key, table(value, f"{name}.{key}")) for key, value in raw.items())

    return tables


def plan(name: str, raw: dict[str, Any]) -> Plan:
    """A plan from its table."""
    where = f"plans.{name}"
    known(
        raw,
        where,
        {"vcpus", "memory_mib", "disk_gib", "ttl_hours", "max_ttl_hours", "requires_approval"},
    )
    return Plan(
        name=name,
        vcpus=number(raw.get("vcpus"), f"{where}.vcpus", 1, 256),
        memory_mib=number(raw.get("memory_mib"), f"{where}.memory_mib", 128, 4 << 20),
        disk_gib=number(raw.get("disk_gib"), f"{where}.disk_gib", 1, 65536),
        ttl_hours=number(raw.get("ttl_hours", 72), f"{where}.ttl_hours", 1, 87600),
        max_ttl_hours=number(raw.get("max_ttl_hours", 720), f"{where}.max_ttl_hours", 1, 87600),
        requires_approval=bool(raw.get("requires_approval", False)),
    )


def image(name: str, raw: dict[str, Any]) -> Image:
    """An image from its table."""
    where = f"images.{name}"
    known(raw, where, {"base_volume", "os", "kernel", "initrd", "cmdline"})
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


def nodes(raw: Any, where: str = "nodes") -> tuple[Node, ...]:
    """Nodes from `[[nodes]]` entries or `[nodes.NAME]` tables; the default node when absent."""
    if raw is None:
        return DEFAULT_NODES
    entries = (
        [{"name": k, **table(v, f"nodes.{k}")} for k, v in raw.items()]
        if isinstance(raw, dict)
        else raw
    )
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where} must be a non-empty list of node entries")
    found = tuple(node(table(entry, "nodes[]")) for entry in entries)
    if len({n.name for n in found}) != len(found):
        raise ConfigError(f"{where}: two nodes share a name")
    return found


def node(raw: dict[str, Any]) -> Node:
    """A node from its entry."""
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("every node entry needs a name")
    where = f"nodes.{name}"
    known(raw, where, NODE_KEYS)
    cap = table(raw.get("capacity", {}), f"{where}.capacity")
    return Node(
        name=name,
        libvirt_uri=str(raw.get("libvirt_uri", "qemu:///system")),
        ssh_host=raw.get("ssh_host"),
        ssh_port=number(raw.get("ssh_port", 2222), f"{where}.ssh_port", 1, 65535),
        ssh_user=str(raw.get("ssh_user", "root")),
        ssh_key=raw.get("ssh_key"),
        host_key=raw.get("host_key"),
        pool=str(raw.get("pool", "default")),
        network=str(raw.get("network", "default")),
        virt_type=Choice(VIRT_TYPES).parse(raw.get("virt_type", "auto"), f"{where}.virt_type"),
        capacity=Capacity(
            number(cap.get("vcpus", 64), f"{where}.capacity.vcpus", 1, 4096),
            number(cap.get("memory_mib", 262144), f"{where}.capacity.memory_mib", 128, 1 << 30),
            number(cap.get("disk_gib", 4096), f"{where}.capacity.disk_gib", 1, 1 << 20),
        ),
    )


def compat_node(host: str, port: int, user: str, key: str | None) -> Node:
    """The one node of a GlueOps-style deployment (SSH_HOST, SSH_PORT, SSH_USER, key)."""
    return Node(
        name="node-1",
        ssh_host=host,
        ssh_port=port,
        ssh_user=user,
        ssh_key="env:SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED" if key else None,
    )


@dataclass(frozen=True)
class Table:
    """A TOML table (or list of tables) handed to `build`; with `file`, also a path to one."""

    build: Callable[[Any, str], Any]
    shape: str
    file: bool = False

    @property
    def allowed(self) -> str:
        """The table's shape, and the file alternative."""
        return f"{self.shape}, or a path to a TOML file of it" if self.file else self.shape

    def parse(self, value: Any, where: str) -> Any:
        """What `build` makes of the table (read from the file first when a path is given)."""
        if self.file and isinstance(value, str):
            value = read_file(Path(value), where)
        return self.build(value, where)


def read_file(path: Path, setting: str) -> dict[str, Any]:
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
