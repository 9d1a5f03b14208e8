"""The e2e guest image boots under TCG, gets a DHCP lease on e2e-net and takes SSH via the node.

Plain libvirt, no provisioner: this checks the tier itself (image, pool, network, node sshd,
`ssh -J`), so that a failure in the provisioner's own guest tests is never the tier's fault.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from .conftest import LIBVIRT_URI
from .guest import (
    NETWORK,
    POOL,
    GuestImage,
    GuestSpec,
    Jump,
    SshNode,
    guest_domain_xml,
    keypair,
    overlay_volume_xml,
    public_key_line,
    seed_iso,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BOOT_SECONDS = 300.0  # one guest under TCG: 40-70 s here, more when the machine is busy
NAME = "e2e-image-check"


def upload(conn: Any, pool: Any, name: str, source: Path, fmt: str) -> Any:
    """A new volume holding `source`, streamed through libvirt (no shell on the node)."""
    size = source.stat().st_size
    volume = pool.createXML(
        f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
        f"<target><format type='{fmt}'/></target></volume>",
        0,
    )
    stream = conn.newStream(0)
    volume.upload(stream, 0, size, 0)
    with source.open("rb") as handle:
        stream.sendAll(lambda _stream, nbytes, fh: fh.read(min(nbytes, 1 << 20)), handle)
    stream.finish()
    return volume


def lease_of(domain: Any) -> str | None:
    """The guest's IPv4 address from its DHCP lease, if any yet."""
    try:
        found = domain.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
    except libvirt.libvirtError:
        return None
    for iface in found.values():
        for addr in iface.get("addrs") or []:
            if addr["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                return str(addr["addr"])
    return None


@pytest.fixture
def pool() -> Iterator[Any]:
    """The pool `default`; every volume of this test is deleted afterwards."""
    conn = libvirt.open(LIBVIRT_URI)
    storage = conn.storagePoolLookupByName(POOL)
    before = set(storage.listVolumes())
    try:
        yield conn, storage
    finally:
        for name in conn.listDefinedDomains() + [d.name() for d in conn.listAllDomains()]:
            if name == NAME:
                domain = conn.lookupByName(name)
                if domain.isActive():
                    domain.destroy()
                domain.undefine()
        storage.refresh(0)
        for name in set(storage.listVolumes()) - before:
            storage.storageVolLookupByName(name).delete(0)
        conn.close()


def test_the_image_boots_gets_a_lease_and_takes_ssh_through_the_node(
    pool: tuple[Any, Any], ssh_node: SshNode, guest_image: GuestImage, tmp_path: Path
) -> None:
    conn, storage = pool
    assert storage.isActive() and storage.autostart()
    base = upload(conn, storage, f"{NAME}-base.qcow2", guest_image.base, "qcow2")
    kernel = upload(conn, storage, f"{NAME}-vmlinuz", guest_image.kernel, "raw")
    initrd = upload(conn, storage, f"{NAME}-initrd.img", guest_image.initrd, "raw")
    storage.createXML(overlay_volume_xml(f"{NAME}.qcow2", base.path(), 10), 0)
    user_key, host_key = keypair(tmp_path / "user_key"), keypair(tmp_path / "host_key")
    seed = seed_iso(
        tmp_path / "seed.iso", "tester", public_key_line(Path(f"{user_key}.pub")), NAME, host_key
    )
    upload(conn, storage, f"{NAME}-seed.iso", seed, "raw")
    console = tmp_path / "console.log"
    spec = GuestSpec(
        name=NAME,
        disk_volume=f"{NAME}.qcow2",
        seed_volume=f"{NAME}-seed.iso",
        kernel=kernel.path(),
        initrd=initrd.path(),
        cmdline=guest_image.cmdline,
        console_log=str(console),
    )
    domain = conn.defineXML(guest_domain_xml(spec))
    domain.create()

    deadline = time.monotonic() + BOOT_SECONDS
    while (address := lease_of(domain)) is None:
        assert time.monotonic() < deadline, console.read_text(errors="replace")[-3000:]
        time.sleep(0.5)
    leased = [lease["ipaddr"] for lease in conn.networkLookupByName(NETWORK).DHCPLeases()]
    assert address in leased
    with Jump(ssh_node.port, ssh_node.client_key, ssh_node.host_key) as jump:
        pinned = public_key_line(Path(f"{host_key}.pub"))
        try:
            jump.wait(address, "tester", user_key, deadline - time.monotonic(), host_key=pinned)
        except TimeoutError as error:
            pytest.fail(f"{error}\n{console.read_text(errors='replace')[-3000:]}")
        done = jump.run(address, "tester", user_key, ["sh", "-c", "hostname; nproc; sudo -n id -u"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [NAME, "1", "0"]
