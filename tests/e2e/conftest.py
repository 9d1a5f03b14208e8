"""Fixtures of the e2e tier: the namespace's real libvirtd, serve children, the sshd node, the image."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from serve_process import ServeGroup

from provisioner.adapters.domain_xml import NAMESPACE
from tests.fakes.tailscale_api import FakeTailscale

from .guest import GuestImage, SshNode, find_image, start_node, stop_node
from .world import world  # noqa: F401 (the fixture of the SSH-node tests)

LIBVIRT_URI = "qemu:///system"
ADMIN_SECRET = "prov_e2e-admin-" + "e" * 24
LEASE_SECONDS = 2


@pytest.fixture(autouse=True)
def _inside_the_namespace() -> None:
    """Never touch the host's own libvirtd: run only inside scripts/e2e/netns-run.sh."""
    if not os.environ.get("PROVISIONER_E2E_NETNS"):
        pytest.skip("e2e: run via scripts/e2e/netns-run.sh scripts/e2e/run.sh")


@pytest.fixture
def conn() -> Iterator[Any]:
    """A connection to the namespace's libvirtd; our leftover domains are removed afterwards."""
    connection = libvirt.open(LIBVIRT_URI)
    try:
        yield connection
    finally:
        for domain in connection.listAllDomains():
            if workspace_of(domain) is not None:
                if domain.isActive():
                    domain.destroy()
                domain.undefine()
        connection.close()


def workspace_of(domain: Any) -> str | None:
    """The workspace id in a domain's provisioner metadata, or None if it carries none."""
    try:
        xml = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE)
    except libvirt.libvirtError:
        return None
    root = ET.fromstring(xml)
    # libvirt hands the element back with or without our namespace, depending on its version.
    found = root.find(f"{{{NAMESPACE}}}id")
    if found is None:
        found = root.find("id")
    return None if found is None else found.text


def domains_of(conn: Any, workspace_id: str) -> list[Any]:
    """Every domain on the node whose metadata names the workspace."""
    return [d for d in conn.listAllDomains() if workspace_of(d) == workspace_id]


@pytest.fixture
def serve_settings(tmp_path: Path) -> dict[str, str]:
    """One node on the real libvirtd, SQLite (PostgreSQL is outside the namespace), short lease."""
    nodes = tmp_path / "nodes.json"
    nodes.write_text(
        json.dumps(
            [
                {
                    "name": "n1",
                    "libvirt_uri": LIBVIRT_URI,
                    "capacity": {"vcpus": 8, "memory_mib": 8192, "disk_gib": 100},
                }
            ]
        )
    )
    return {
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'provisioner.db'}",
        "PROVISIONER_ADMIN_TOKEN": ADMIN_SECRET,
        "PROVISIONER_LEASE_SECONDS": str(LEASE_SECONDS),
        "PROVISIONER_RATE_LIMIT": "0",
        "PROVISIONER_NODES": str(nodes),
    }


@pytest.fixture
async def serves(tmp_path: Path, conn: Any) -> AsyncIterator[ServeGroup]:
    """Serve children for this test, killed at the end (before leftover domains are removed)."""
    group = ServeGroup(tmp_path, ADMIN_SECRET)
    try:
        yield group
    finally:
        await group.aclose()


@pytest.fixture
def ssh_node(tmp_path: Path) -> Iterator[SshNode]:
    """The node: OpenSSH sshd on 127.0.0.1 at a free port, accepting a fresh client key for root.

    Unpacks as (port, client key path, the sshd's public host key line); stopped afterwards.
    """
    node = start_node(tmp_path / "node")
    try:
        yield node
    finally:
        stop_node(node)


@pytest.fixture
async def tailnet() -> AsyncIterator[FakeTailscale]:
    """The fake Tailscale API on the namespace's loopback, for serve children to use."""
    async with FakeTailscale.running() as fake:
        yield fake


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The Debian guest image (PROVISIONER_E2E_IMAGE_DIR); tests that need it skip without it."""
    found = find_image()
    if isinstance(found, str):
        pytest.skip(f"no e2e guest image: {found}")
    return found
