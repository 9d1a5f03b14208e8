"""NodeLink on asyncssh: one verified connection per node, libvirt's socket forwarded over it."""

from __future__ import annotations

import asyncio
import logging
import shlex
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncssh

from provisioner.adapters.ssh_pinning import (
    PinnedHost,
    connect_options,
    pin,
    private_key,
)
from provisioner.errors import (
    ConfigError,
    GuestUnreachable,
    InvalidInput,
    NodeUnavailable,
    NodeUntrusted,
)
from provisioner.models import Node
from provisioner.ports import CommandResult, HostKeyReporter, HostKeySighting

log = logging.getLogger(__name__)
T = TypeVar("T")

SYSTEM_SOCKET = "/var/run/libvirt/libvirt-sock"


def remote_libvirt_socket(node: Node) -> str:
    """The path of libvirtd's socket on the node, from the node's libvirt URI."""
    uri = urlsplit(node.libvirt_uri)
    if uri.scheme in ("qemu", "qemu+unix") and not uri.netloc and uri.path == "/system":
        path = parse_qs(uri.query).get("socket", [SYSTEM_SOCKET])[-1]
        if path.startswith("/"):
            return path
    raise ConfigError(
        f"node {node.name}: libvirt URI {node.libvirt_uri!r} cannot be reached through our SSH "
        "link; use qemu:///system, or qemu:///system?socket=/absolute/path/to/libvirt-sock"
    )


class _Untrusted(Exception):
    """Raised under the lock; the reporter is awaited once the lock is released."""

    def __init__(self, sighting: HostKeySighting, message: str) -> None:
        super().__init__(message)
        self.sighting, self.message = sighting, message


@dataclass
class _Forward:
    """A local UNIX socket forwarded to the node's libvirt socket, in its own directory."""

    directory: str
    path: str
    listener: asyncssh.SSHListener

    def close(self) -> None:
        """Stop forwarding and remove the socket file."""
        self.listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class SshLink:
    """One node reached over SSH: a shared, lazily opened, host-key-verified connection."""

    def __init__(
        self,
        node: Node,
        *,
        client_key: str | Path,
        guest_key: str | Path,
        reporter: HostKeyReporter,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 15.0,
        guest_port: int = 22,
    ) -> None:
        if node.ssh_host is None:
            raise ConfigError(f"node {node.name} has no ssh_host; it cannot be reached over SSH")
        remote_libvirt_socket(node)  # a libvirt URI we cannot forward fails here, not later
        self._node, self._reporter = node, reporter
        self._client_key, self._guest_key = Path(client_key), Path(guest_key)
        self._connect_timeout, self._keepalive = connect_timeout, keepalive_interval
        self._guest_port = guest_port
        self._where = f"{node.ssh_user}@{node.ssh_host}:{node.ssh_port}"
        self._lock = asyncio.Lock()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._forward: _Forward | None = None
        # Until when (loop time) a failed connect is repeated at once, and its message.
        self._failure: tuple[float, str] | None = None

    async def libvirt_socket(self) -> str:
        """A local UNIX socket that reaches the node's libvirt socket (connects if needed)."""
        remote = remote_libvirt_socket(self._node)
        return await self._locked(lambda: self._forwarded(remote))

    async def check(self) -> None:
        """Raise unless the node accepts us (NodeUntrusted, NodeUnavailable)."""
        await self._locked(self._connected)

    @asynccontextmanager
    async def guest_tunnel(self, address: str) -> AsyncIterator[int]:
        """A port on 127.0.0.1 forwarded, over the verified node connection, to a guest's sshd."""
        conn = await self._locked(self._connected)
        try:
            listener = await conn.forward_local_port("127.0.0.1", 0, address, self._guest_port)
        except (OSError, asyncssh.Error) as exc:
            raise GuestUnreachable(
                f"could not forward a port to guest {address} via node {self._node.name}: "
                f"{_reason(exc)}"
            ) from None
        try:
            yield listener.get_port()
        finally:
            listener.close()

    async def close(self) -> None:
        """Close the forwarder and the connection; safe to call twice."""
        async with self._lock:
            self._drop_forward()
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await conn.wait_closed()
            except TimeoutError:
                conn.abort()  # a peer that stopped reading must not hold close() forever

    async def run_on_guest(
        self, address: str, user: str, host_key: str, argv: Sequence[str], *, timeout: float
    ) -> CommandResult:
        """Run `argv` on a guest reached through the node, the guest's host key pinned."""
        pinned, algs = pin(host_key)
        client = PinnedHost(pinned)
        options = connect_options(client, algs, private_key(self._guest_key))
        where = f"guest {address} via node {self._node.name}"
        try:
            async with asyncio.timeout(timeout):
                node = await self._locked(self._connected)
                guest = await self._guest(node, address, user, client, options)
                try:
                    # stdin at EOF: a command that reads it must not hang.
                    done = await guest.run(
                        shlex.join(argv),
                        check=False,
                        stdin=asyncssh.DEVNULL,
                        encoding="utf-8",
                        errors="replace",
                    )
                finally:
                    guest.close()  # no wait: a dead guest must not hold us past the timeout
        except TimeoutError:
            raise GuestUnreachable(
                f"{where} did not finish {argv[0]!r} within {timeout:g} s; outcome unknown"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise GuestUnreachable(f"{where} failed: {_reason(exc)}") from None
        # exit_status None: the connection dropped mid-command and the outcome is unknown.
        return CommandResult(done.exit_status, _text(done.stdout), _text(done.stderr))

    async def _guest(
        self,
        node: asyncssh.SSHClientConnection,
        address: str,
        user: str,
        client: PinnedHost,
        options: dict[str, object],
    ) -> asyncssh.SSHClientConnection:
        """Open an SSH connection to the guest, tunnelled through the node's connection."""
        try:
            return await node.connect_ssh(address, self._guest_port, username=user, **options)
        except asyncssh.HostKeyNotVerifiable:
            shown = client.presented.get_fingerprint("sha256") if client.presented else "?"
            raise GuestUnreachable(
                f"guest {address} presented host key {shown} but {client.pinned} is pinned; "
                "refusing to connect"
            ) from None
        except asyncssh.PermissionDenied:
            # Retryable: cloud-init may not have installed our key yet.
            raise GuestUnreachable(
                f"guest {address} refused our key {self._guest_key} for user {user}"
            ) from None

    async def _locked(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run `action` under the link's lock; report an untrusted key after releasing it."""
        try:
            async with self._lock:
                return await action()
        except _Untrusted as untrusted:
            # Outside the lock: the reporter may call back into this link.
            await self._reporter(untrusted.sighting)
            raise NodeUntrusted(untrusted.message) from None

    async def _forwarded(self, remote: str) -> str:
        """The current forward's local path, made anew for each connection. Lock held."""
        conn = await self._connected()
        if self._forward is None:
            # /tmp, not $TMPDIR: a UNIX socket path must fit in 107 bytes.
            directory = tempfile.mkdtemp(prefix="prov-ssh-", dir="/tmp")
            path = f"{directory}/libvirt.sock"
            try:
                listener = await conn.forward_local_path(path, remote)
            except OSError as exc:
                shutil.rmtree(directory, ignore_errors=True)
                raise NodeUnavailable(f"cannot listen on {path}: {exc.strerror}") from None
            self._forward = _Forward(directory, path, listener)
        return self._forward.path

    async def _connected(self) -> asyncssh.SSHClientConnection:
        """The live connection, opened again if it was lost. Lock held."""
        if self._conn is None or self._conn.is_closed():
            if self._conn is not None:
                log.info("connection to node %s was lost; reconnecting", self._node.name)
            self._drop_forward()
            loop = asyncio.get_running_loop()
            if self._failure is not None and loop.time() < self._failure[0]:
                # A node that just failed fails fast: callers queued behind the lock would
                # otherwise each wait a whole connect timeout, holding their workers.
                raise NodeUnavailable(self._failure[1])
            try:
                self._conn = await self._open()
            except NodeUnavailable as error:
                self._failure = (loop.time() + self._connect_timeout, error.message)
                raise
            self._failure = None
        return self._conn

    def _drop_forward(self) -> None:
        """Close the forward that belonged to the previous connection."""
        if self._forward is not None:
            self._forward.close()
            self._forward = None

    async def _open(self) -> asyncssh.SSHClientConnection:
        """A new connection to the node, its host key checked before we authenticate."""
        try:
            pinned, algs = pin(self._node.host_key)
        except InvalidInput:
            raise ConfigError(
                f"node {self._node.name}: the pinned host key is neither an OpenSSH public key "
                "line nor a SHA256:… fingerprint"
            ) from None
        client = PinnedHost(pinned)
        options = connect_options(client, algs, private_key(self._client_key))
        try:
            conn = await asyncssh.connect(
                self._node.ssh_host or "",
                self._node.ssh_port,
                username=self._node.ssh_user,
                connect_timeout=self._connect_timeout,
                keepalive_interval=self._keepalive,
                keepalive_count_max=3,
                **options,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            if client.presented is None:  # not a plain key (e.g. undecodable): nothing to show
                raise self._unavailable(exc) from None
            raise self._untrusted(client.presented, pinned) from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        log.info("connected to node %s (%s)", self._node.name, self._where)
        return conn

    def _unavailable(self, exc: BaseException) -> NodeUnavailable:
        """Why the node could not be reached, in words ops can act on."""
        node = f"node {self._node.name} ({self._where})"
        if isinstance(exc, asyncssh.PermissionDenied):
            return NodeUnavailable(
                f"{node} refused our key {self._client_key}; "
                "add the matching public key to its authorized_keys"
            )
        if isinstance(exc, TimeoutError):
            return NodeUnavailable(
                f"{node} did not complete an SSH handshake within {self._connect_timeout:g} s"
            )
        return NodeUnavailable(f"{node}: {_reason(exc)}")

    def _untrusted(self, key: asyncssh.SSHKey, pinned: str | None) -> _Untrusted:
        """The refusal of a host key that is unknown or not the pinned one."""
        name, shown = self._node.name, str(key.get_fingerprint("sha256"))
        line = key.export_public_key("openssh").decode().strip()
        approve = f"provisioner node approve {name} --fingerprint {shown}"
        if pinned is None:
            message = (
                f"node {name} presents an unknown SSH host key {shown}; "
                f"check it and approve it: {approve}"
            )
        else:
            message = (
                f"node {name} presented host key {shown} but {pinned} is pinned; refusing to "
                "connect (possible man-in-the-middle). If the node was reinstalled, approve "
                f"the new key: {approve}"
            )
        return _Untrusted(HostKeySighting(name, shown, line, pinned), message)


def _reason(exc: BaseException) -> str:
    """A short human reason for a connection failure."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is sshd listening on that port?)"
    if isinstance(exc, OSError):
        return f"unreachable ({exc.strerror or exc})"
    if isinstance(exc, asyncssh.ChannelOpenError):
        return f"the node could not open a connection to it: {exc.reason}"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"SSH connection closed: {exc.reason}"
    return str(exc) or type(exc).__name__


def _text(output: str | bytes | None) -> str:
    """Process output as text (bytes only if asyncssh ignored our encoding)."""
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""
