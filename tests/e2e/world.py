"""An e2e world: the loopback sshd node in front of the namespace's libvirtd, and settings for it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt
import pytest
from serve_process import PROVISIONER, child_env

from provisioner.keys import parse_public_key

from .guest import NETWORK, POOL, GuestImage, SshNode

ADMIN_SECRET = "prov_e2e-admin-" + "e" * 24
OWNER = "dev@example.com"
OWNER_LOGIN = "dev"
BOOT_SECONDS = 400.0  # create → SSH-ready under TCG, with room for two guests at once


@dataclass(frozen=True)
class World:
    """Settings for serve children whose one node `n1` is reached over SSH."""

    tmp: Path
    node: SshNode
    image: GuestImage

    def settings(self, *, pin: bool = True, **extra: str) -> dict[str, str]:
        """Environment for a serve child (or a CLI call); `pin` pins the node's host key."""
        entry: dict[str, Any] = {
            "name": "n1",
            "ssh_host": "127.0.0.1",
            "ssh_port": self.node.port,
            "ssh_user": "root",
            "ssh_key": str(self.node.client_key),
            "libvirt_uri": "qemu:///system",
            "pool": POOL,
            "network": NETWORK,
            "virt_type": "qemu",  # /dev/kvm exists here but KVM guests hang
            "capacity": {"vcpus": 8, "memory_mib": 8192, "disk_gib": 200},
        }
        if pin:
            entry["host_key"] = self.node.host_key
        nodes = self.tmp / ("nodes-pinned.json" if pin else "nodes.json")
        nodes.write_text(json.dumps([entry]))
        return {
            "PROVISIONER_DATA_DIR": str(self.tmp / "data"),
            "PROVISIONER_DATABASE_URL": f"sqlite+aiosqlite:///{self.database}",
            "PROVISIONER_ADMIN_TOKEN": ADMIN_SECRET,
            "PROVISIONER_LEASE_SECONDS": "2",
            "PROVISIONER_RATE_LIMIT": "0",
            "PROVISIONER_NODES": str(nodes),
            "PROVISIONER_BOOT_TIMEOUT": str(int(BOOT_SECONDS)),
            **extra,
        }

    @property
    def database(self) -> Path:
        """The SQLite file the children share."""
        return self.tmp / "provisioner.db"

    def cli(self, settings: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        """Run `provisioner ARGS…` with these settings; its output as text."""
        return subprocess.run(
            [str(PROVISIONER), *args],
            env=child_env(settings),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def import_image(self, settings: Mapping[str, str]) -> str:
        """`provisioner image import debian-12 …` with the kernel boot files; its output."""
        # Interface names as the seed's network config expects (eth0).
        cmdline = self.image.cmdline
        assert "net.ifnames=0" in cmdline, "rebuild the image (scripts/e2e/cached-image.sh)"
        done = self.cli(
            settings,
            "image",
            "import",
            "debian-12",
            str(self.image.base),
            "--kernel",
            str(self.image.kernel),
            "--initrd",
            str(self.image.initrd),
            "--cmdline",
            cmdline,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def add_owner_key(self, public_key: str) -> None:
        """Give the owner an SSH key, as `/workspace keys add` would."""
        line, fingerprint = parse_public_key(public_key)
        with sqlite3.connect(self.database) as db:
            db.execute(
                "INSERT INTO ssh_keys (owner, fingerprint, public_key, created_at) "
                "VALUES (?, ?, ?, ?)",
                (OWNER, fingerprint, line, datetime.now(UTC).replace(tzinfo=None)),
            )

    def guest_host_key(self, workspace_id: str) -> str:
        """The guest host key the provisioner generated and stored for a workspace."""
        with sqlite3.connect(self.database) as db:
            row = db.execute(
                "SELECT guest_host_key FROM workspaces WHERE id = ?", (workspace_id,)
            ).fetchone()
        assert row and row[0], f"no guest host key stored for {workspace_id}"
        return str(row[0])


def our_volumes(conn: Any, domain: str) -> list[str]:
    """The volumes in the pool that belong to the domain (its disk and its seed)."""
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh(0)
    return sorted(v for v in pool.listVolumes() if v.startswith(domain))


def remove_workspace_volumes(conn: Any) -> None:
    """Delete every workspace volume left in the pool (images stay for the next test)."""
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh(0)
    for name in pool.listVolumes():
        if name.startswith("ws-"):
            with contextlib.suppress(libvirt.libvirtError):
                pool.storageVolLookupByName(name).delete(0)


@pytest.fixture
def world(tmp_path: Path, ssh_node: SshNode, guest_image: GuestImage, conn: Any) -> Iterator[World]:
    """Settings around the node; workspace volumes are removed afterwards."""
    try:
        yield World(tmp_path, ssh_node, guest_image)
    finally:
        remove_workspace_volumes(conn)
