"""Hypervisor port on libvirt-python: every call runs on the node's own thread, never the loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt

from provisioner.adapters.domain_xml import NAMESPACE, domain_xml, workspace_id_from_metadata
from provisioner.errors import HypervisorError, NodeUnavailable
from provisioner.models import DomainState
from provisioner.ports import DomainInfo, DomainSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

# libvirt error codes that mean "the connection is gone", not "the request was wrong".
CONNECTION_ERRORS = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_SYSTEM_ERROR,
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
    """One node's libvirtd (or the in-process test driver) behind a dedicated thread."""

    def __init__(self, node_name: str, uri: str, *, call_timeout: float = 60.0) -> None:
        self._node = node_name
        self._uri = uri
        self._timeout = call_timeout
        self._conn: Any = None
        self._domain_type = "test" if uri.startswith("test:") else "qemu"
        self._stuck_since: float | None = None
        # One thread per node: a hung node only ever blocks its own thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"libvirt-{node_name}")

    async def _call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(connection)` on the node thread, translating libvirt's errors."""
        if self._stuck_since is not None:
            # The node's one thread is still inside a call that timed out: queueing more
            # calls behind it would hold every worker that touches this node.
            stuck = time.monotonic() - self._stuck_since
            raise NodeUnavailable(f"node {self._node} is not answering (stuck for {stuck:.0f} s)")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, functools.partial(self._in_thread, fn))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError:
            self._stuck_since = time.monotonic()
            future.add_done_callback(self._unstuck)
            raise NodeUnavailable(
                f"node {self._node} did not answer within {self._timeout:g} s"
            ) from None

    def _unstuck(self, _future: asyncio.Future[Any]) -> None:
        """The call that timed out has returned: the node thread is free again."""
        self._stuck_since = None

    def _in_thread(self, fn: Callable[[Any], T]) -> T:
        """Body of a call on the node thread: (re)connect, run, translate."""
        try:
            if self._conn is None:
                self._conn = libvirt.open(self._uri)
            return fn(self._conn)
        except libvirt.libvirtError as error:
            if error.get_error_code() in CONNECTION_ERRORS:
                self._conn = None
                raise NodeUnavailable(
                    f"node {self._node} is unreachable: {error.get_error_message()}"
                ) from None
            raise HypervisorError(f"node {self._node}: {error.get_error_message()}") from None

    async def lookup(self, name: str) -> DomainInfo | None:
        """The domain called `name`, or None."""

        def lookup(conn: Any) -> DomainInfo | None:
            try:
                domain = conn.lookupByName(name)
            except libvirt.libvirtError as error:
                if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise
            return _info(domain)

        return await self._call(lookup)

    async def define(self, spec: DomainSpec) -> None:
        """Define the domain from the spec."""
        xml = domain_xml(spec, self._domain_type)
        await self._call(lambda conn: conn.defineXML(xml))

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
        """Remove the domain's definition."""
        await self._call(lambda conn: conn.lookupByName(name).undefine())

    async def list_ours(self) -> Sequence[DomainInfo]:
        """Every domain that carries our metadata; a failed listing raises, never truncates."""

        def list_all(conn: Any) -> list[DomainInfo]:
            infos = [_info(domain) for domain in conn.listAllDomains()]
            return [info for info in infos if info.workspace_id is not None]

        return await self._call(list_all)

    async def check(self) -> None:
        """Raise NodeUnavailable unless libvirt answers."""
        await self._call(lambda conn: conn.getLibVersion())

    async def close(self) -> None:
        """Close the connection and stop the node thread."""

        def close(conn: Any) -> None:
            conn.close()
            self._conn = None

        if self._conn is not None:
            try:
                await self._call(close)
            except (NodeUnavailable, HypervisorError) as error:
                log.warning("closing node %s: %s", self._node, error.message)
        self._thread.shutdown(wait=False, cancel_futures=True)


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
