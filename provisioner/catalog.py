"""What can be asked for: plans and images, with the built-in defaults (and the default node)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from provisioner.errors import UnknownReference
from provisioner.models import Image, Node, Plan

T = TypeVar("T")
Item = TypeVar("Item", Plan, Image)

DEFAULT_PLANS = (
    Plan("small", vcpus=1, memory_mib=1024, disk_gib=10),
    Plan("medium", vcpus=2, memory_mib=4096, disk_gib=40),
    Plan("large", vcpus=4, memory_mib=8192, disk_gib=80, requires_approval=True),
)
DEFAULT_IMAGES = (Image("debian-12", base_volume="debian-12.qcow2", os="debian12"),)
DEFAULT_NODES = (Node("local", libvirt_uri="test:///default", pool="default-pool"),)


def _by_name(items: Iterable[Item]) -> Mapping[str, Item]:
    """A read-only name → item table."""
    return MappingProxyType({item.name: item for item in items})


@dataclass
class Catalog:
    """The configured plans and the known images (configured or imported), looked up by name."""

    plans: Mapping[str, Plan]
    images: Mapping[str, Image]

    def learn_images(self, images: Iterable[Image]) -> None:
        """Take in the stored images (an import in another process may have added one)."""
        self.images = _by_name(images)

    @classmethod
    def of(cls, plans: Iterable[Plan], images: Iterable[Image]) -> Catalog:
        """Build a catalog from lists."""
        return cls(_by_name(plans), _by_name(images))

    def plan(self, name: str) -> Plan:
        """The plan called `name`, or UnknownReference listing the choices."""
        return _lookup("plan", self.plans, name)

    def image(self, name: str) -> Image:
        """The image called `name`, or UnknownReference listing the choices."""
        return _lookup("image", self.images, name)


def _lookup(kind: str, table: Mapping[str, T], name: str) -> T:
    """Find `name` in `table` or explain what exists."""
    try:
        return table[name]
    except KeyError:
        choices = ", ".join(sorted(table)) or "none configured"
        raise UnknownReference(f"unknown {kind} {name!r}; choose one of: {choices}") from None
