"""Hypervisor port on libvirt-python: every call runs on the node's own thread, never the loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from provisioner.adapters import libvirt_storage as storage
from provisioner.adapters.domain_xml import (
    NAMESPACE,
    BootFiles,
    domain_xml,
    workspace_id_from_metadata,
)
from provisioner.errors import Conflict, HypervisorError, InvalidInput, NodeUnavailable, NotFound
from provisioner.models import DomainState, Node
from provisioner.ports import DomainInfo, DomainSpec, NodeLink, PoolSpace, VolumeInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

# libvirt error codes that mean "the connection is gone", not "the request was wrong".
CONNECTION_ERRORS = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
    }
)
STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.SHUTOFF,
}

# Silence libvirt's default handler, which prints every error to stderr; we translate them.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class LibvirtHypervisor:
    """One node's libvirtd (or the in-process test driver) behind a dedicated thread.

    With a node link, libvirt talks to the node's libvirtd through the SSH connection's
    forwarded UNIX socket; the link reconnects (and re-verifies the host key) when needed.
    """

    def __init__(
        self, node: Node, *, link: NodeLink | None = None, call_timeout: float = 60.0
    ) -> None:
        self._node = node
        self._link = link
        self._timeout = call_timeout
        self._conn: Any = None
        self._socket: str | None = None
        self._domain_type: str | None = "test" if node.simulated else None
        self._stuck_since: float | None = None
        self._simulated_contents: dict[str, bytes] = {}
        # One thread per node: a hung node only ever blocks its own thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"libvirt-{node.name}")

    async def _call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(connection)` on the node thread, translating libvirt's errors."""
        if self._stuck_since is not None:
            # The node's one thread is still inside a call that timed out: queueing more
            # calls behind it would hold every worker that touches this node.
            stuck = time.monotonic() - self._stuck_since
            raise NodeUnavailable(
                f"node {self._node.name} is not answering (stuck for {stuck:.0f} s)"
            )
        socket = await self._link.libvirt_socket() if self._link is not None else None
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, functools.partial(self._in_thread, fn, socket))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError:
            self._mark_stuck(future)
            raise NodeUnavailable(
                f"node {self._node.name} did not answer within {self._timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            # A caller with a shorter deadline gave up: the thread may still be stuck inside.
            if not future.done():
                self._mark_stuck(future)
            raise

    def _mark_stuck(self, future: asyncio.Future[Any]) -> None:
        """Fail fast from now on, until the call blocking the node thread returns."""
        self._stuck_since = time.monotonic()
        future.add_done_callback(self._unstuck)

    def _unstuck(self, _future: asyncio.Future[Any]) -> None:
        """The call that timed out has returned: the node thread is free again."""
        self._stuck_since = None

    def _in_thread(self, fn: Callable[[Any], T], socket: str | None) -> T:
        """Body of a call on the node thread: (re)connect, run, translate."""
        try:
            return fn(self._connection(socket))
        except libvirt.libvirtError as error:
            if _lost_connection(error):
                self._drop_connection()
                raise NodeUnavailable(
                    f"node {self._node.name} is unreachable: {error.get_error_message()}"
                ) from None
            raise HypervisorError(f"node {self._node.name}: {error.get_error_message()}") from None

    def _drop_connection(self) -> None:
        """Close the connection here, on the node thread.

        Never leave it to the garbage collector: a libvirt connection freed on the event
        loop's thread would wait there for libvirtd's answer, which has to come through the
        SSH forward that the (now blocked) loop runs.
        """
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None

    def _connection(self, socket: str | None) -> Any:
        """The open libvirt connection, reopened when the link's socket changed."""
        if self._conn is not None and socket != self._socket:
            self._drop_connection()
        if self._conn is None:
            uri = (
                self._node.libvirt_uri if socket is None else f"qemu+unix:///system?socket={socket}"
            )
            self._conn = libvirt.open(uri)
            self._socket = socket
        return self._conn

    def _pool(self, conn: Any) -> Any:
        """The node's storage pool."""
        return storage.pool_of(conn, self._node.pool)

    async def lookup(self, name: str) -> DomainInfo | None:
        """The domain called `name`, or None."""
        return await self._call(lambda conn: _lookup(conn, name))

    async def define(self, spec: DomainSpec) -> None:
        """Define the domain from the spec, its disks found in the node's pool."""

        def define(conn: Any) -> None:
            xml = domain_xml(spec, self._type_of(conn), self._boot_files(conn, spec))
            conn.defineXML(xml)

        await self._call(define)

    def _type_of(self, conn: Any) -> str:
        """The domain type for this node: configured, else KVM when the node offers it."""
        if self._domain_type is None:
            wanted = self._node.virt_type
            if wanted == "auto":
                wanted = "kvm" if "<domain type='kvm'" in conn.getCapabilities() else "qemu"
            self._domain_type = wanted
        return self._domain_type

    def _boot_files(self, conn: Any, spec: DomainSpec) -> BootFiles:
        """Paths of the domain's disk, seed, and kernel/initrd if the image boots directly."""
        pool = self._pool(conn)

        def path(volume: str | None) -> str | None:
            if volume is None:
                return None
            info = storage.volume_info(pool, volume)
            if info is None:
                raise Conflict(
                    f"volume {volume!r} is missing from pool {self._node.pool!r} on node "
                    f"{self._node.name}; run `provisioner image import` or recreate the workspace",
                    code="volume_missing",
                )
            return info.path

        disk, seed = path(spec.disk_volume), path(spec.seed_volume)
        assert disk is not None and seed is not None
        return BootFiles(disk, seed, path(spec.image.kernel), path(spec.image.initrd))

    async def start(self, name: str) -> None:
        """Power the domain on."""
        await self._call(lambda conn: conn.lookupByName(name).create())

    async def shutdown(self, name: str) -> None:
        """Ask the guest to power off through ACPI."""
        await self._call(lambda conn: conn.lookupByName(name).shutdown())

    async def destroy(self, name: str) -> None:
        """Power the domain off at once."""
        await self._call(lambda conn: conn.lookupByName(name).destroy())

    async def undefine(self, name: str) -> None:
        """Remove the domain's definition (and its NVRAM, if any)."""
        flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM if not self._node.simulated else 0
        await self._call(lambda conn: conn.lookupByName(name).undefineFlags(flags))

    async def list_ours(self) -> Sequence[DomainInfo]:
        """Every domain that carries our metadata; a failed listing raises, never truncates."""

        def list_all(conn: Any) -> list[DomainInfo]:
            infos = [_info(domain) for domain in conn.listAllDomains()]
            return [info for info in infos if info.workspace_id is not None]

        return await self._call(list_all)

    async def addresses(self, name: str) -> Sequence[str]:
        """IPv4 addresses from the network's DHCP leases, else from the guest agent."""
        return await self._call(lambda conn: _addresses(conn.lookupByName(name)))

    async def volume(self, name: str) -> VolumeInfo | None:
        """The volume called `name` in the node's pool, or None."""
        return await self._call(lambda conn: storage.volume_info(self._pool(conn), name))

    async def volumes(self) -> Sequence[str]:
        """Every volume name in the node's pool."""
        return await self._call(lambda conn: storage.volume_names(self._pool(conn)))

    async def create_overlay(self, name: str, base: str, size_gib: int) -> None:
        """A qcow2 overlay backed by `base`, as large as the plan's disk."""
        await self._call(
            lambda conn: storage.create_overlay(self._pool(conn), name, base, size_gib)
        )

    async def upload_volume(self, name: str, source: bytes | Path) -> None:
        """A new volume with `source` streamed into it; visible only once complete."""
        simulated = self._node.simulated
        await self._call(
            lambda conn: storage.upload(conn, self._pool(conn), name, source, simulated=simulated)
        )
        if simulated and isinstance(source, bytes):
            # The test driver keeps no contents; this node keeps small ones (seeds), as a real
            # pool would. Imported images stay contentless.
            self._simulated_contents[name] = source

    async def download_volume(self, name: str, limit: int) -> bytes:
        """The volume's contents, read over a libvirt stream (the test driver: as uploaded)."""
        if self._node.simulated:
            if await self.volume(name) is None:
                raise NotFound(f"no volume {name} on node {self._node.name}")
            data = self._simulated_contents.get(name, b"")
            if len(data) > limit:
                raise InvalidInput(f"volume {name} is larger than {limit} bytes")
            return data
        return await self._call(lambda conn: storage.download(conn, self._pool(conn), name, limit))

    async def delete_volume(self, name: str) -> None:
        """Delete the volume if it exists."""
        await self._call(lambda conn: storage.delete(self._pool(conn), name))
        self._simulated_contents.pop(name, None)

    async def check(self) -> PoolSpace:
        """Raise unless libvirt and the pool answer; the pool's room."""

        def check(conn: Any) -> PoolSpace:
            conn.getLibVersion()
            return storage.space(self._pool(conn))

        return await self._call(check)

    async def close(self) -> None:
        """Close the connection (on the node thread, even a stuck one), the link, the thread."""
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(self._thread, self._drop_connection)
        if self._stuck_since is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closing), 5.0)
        if self._link is not None:
            await self._link.close()
        # A stuck thread closes the connection once its call returns, then ends.
        self._thread.shutdown(wait=False)


def _lost_connection(error: libvirt.libvirtError) -> bool:
    """Whether an error means the connection is gone (not that the request was refused)."""
    code = error.get_error_code()
    if code == libvirt.VIR_ERR_SYSTEM_ERROR:
        # Also used for local file errors on the node ("Unable to open file"); only an
        # error from the RPC layer means the connection itself broke.
        return error.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
    return code in CONNECTION_ERRORS


def _lookup(conn: Any, name: str) -> DomainInfo | None:
    """The domain called `name`, or None."""
    try:
        domain = conn.lookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
    return _info(domain)


def _addresses(domain: Any) -> list[str]:
    """IPv4 addresses of a domain: DHCP leases first, the guest agent as a fallback."""
    for source in (
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    ):
        try:
            interfaces = domain.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError:
            continue  # no agent in the guest (yet): not an error, just no answer
        found = [
            entry["addr"]
            for name, iface in interfaces.items()
            if name != "lo"
            for entry in iface.get("addrs") or []
            if entry.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4
            and not entry["addr"].startswith("127.")
        ]
        if found:
            return found
    return []


def _info(domain: Any) -> DomainInfo:
    """Name, reduced state and our workspace id (None if not ours) of a domain."""
    state = STATES.get(domain.state()[0], DomainState.OTHER)
    try:
        xml = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise
        return DomainInfo(domain.name(), state, None)
    return DomainInfo(domain.name(), state, workspace_id_from_metadata(xml))
