"""Extra HTTP processes for `serve`: more cores for the API, one set of workers.

With PROVISIONER_HTTP_PROCESSES=N, serve starts N-1 children that bind the same port
(SO_REUSEPORT) and only answer HTTP. Work they accept is claimed by the parent's workers;
a datagram on a UNIX socket in the data dir wakes those at once instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("provisioner")
PR_SET_PDEATHSIG = 1
MAX_SOCKET_PATH = 107


def wake_path(data_dir: Path) -> Path | None:
    """Where the parent listens for wake-ups (None if the path is too long for a socket)."""
    path = data_dir.resolve() / "wake.sock"
    return path if len(str(path)) <= MAX_SOCKET_PATH else None


def wake_sender(path: Path | None) -> Callable[[], None]:
    """A callable that wakes the parent's workers; never blocks, never fails."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)

    def wake() -> None:
        if path is not None:
            # Lost wake-ups only cost the workers' next poll.
            with contextlib.suppress(OSError):
                sock.sendto(b"w", str(path))

    return wake


class _Wakes(asyncio.DatagramProtocol):
    """Calls `wake` for every datagram."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def datagram_received(self, data: bytes, addr: object) -> None:
        """A child accepted work."""
        self._wake()


async def listen_for_wakes(path: Path | None, wake: Callable[[], None]) -> asyncio.BaseTransport:
    """Receive the children's wake-ups on `path`."""
    if path is None:
        raise OSError("the data dir's path is too long for a UNIX socket")
    await asyncio.to_thread(path.unlink, missing_ok=True)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Wakes(wake), local_addr=str(path), family=socket.AF_UNIX
    )
    return transport


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_children(count: int, config_path: str | None) -> list[subprocess.Popen[bytes]]:
    """Start `count` HTTP-only serve processes with this process's settings."""
    env = {**os.environ, "PROVISIONER_SERVE_ROLE": "http"}
    if config_path:
        env["PROVISIONER_CONFIG"] = config_path
    command = [sys.executable, "-m", "provisioner", "serve"]
    return [
        subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509
        for _ in range(count)
    ]


async def stop_children(children: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM the children and wait for them (killing any that linger)."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            await asyncio.to_thread(child.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("HTTP process %d did not stop; killing it", child.pid)
            child.kill()
