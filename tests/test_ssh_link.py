"""SshLink against real OpenSSH sshds on loopback: one plays the node, a second the guest."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.adapters.ssh import SshLink
from provisioner.adapters.ssh_pinning import fingerprint
from provisioner.errors import (
    ConfigError,
    GuestUnreachable,
    InvalidInput,
    NodeUnavailable,
    NodeUntrusted,
)
from provisioner.models import Node
from provisioner.ports import HostKeySighting

ROOT = Path(__file__).resolve().parent.parent
START_SSHD = ROOT / "scripts" / "e2e" / "start-sshd.sh"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
    reason="needs root and openssh-server to run a private sshd",
)


@dataclass(frozen=True)
class Sshd:
    """A private sshd: where it listens, its host key and its log."""

    directory: Path
    port: int
    pid: int
    host_key: str  # the public key line
    fingerprint: str  # as `ssh-keygen -lf` prints it

    def accepted(self) -> int:
        """How many logins the sshd has accepted so far."""
        return (self.directory / "sshd.log").read_text().count("Accepted publickey")

    def drop_connections(self, spare: int | None = None) -> None:
        """SIGKILL every per-connection process (but `spare`): their TCP connections drop."""
        for pid in descendants(self.pid):
            if pid != spare:
                kill(pid)


@dataclass(frozen=True)
class Keys:
    """Client keys (private key paths) and a host key nobody serves."""

    client: Path
    guest: Path
    stranger: Path
    foreign_host_key: str


class Reports:
    """A HostKeyReporter that remembers what it was told."""

    def __init__(self) -> None:
        self.sightings: list[HostKeySighting] = []

    async def __call__(self, sighting: HostKeySighting) -> None:
        self.sightings.append(sighting)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children first."""
    found = subprocess.run(["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True)
    children = [int(line) for line in found.stdout.split()]
    return children + [grandchild for child in children for grandchild in descendants(child)]


def kill(pid: int) -> None:
    """SIGKILL a process we started, if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair without passphrase; the private key's path."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def start_sshd(directory: Path, authorized: Path) -> Sshd:
    """Start scripts/e2e/start-sshd.sh with `authorized` as the only authorized key."""
    port = free_port()
    subprocess.run(
        [str(START_SSHD), str(directory), str(port), str(authorized)],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(directory / "hostkey.pub")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Sshd(
        directory=directory,
        port=port,
        pid=int((directory / "sshd.pid").read_text()),
        host_key=(directory / "hostkey.pub").read_text().strip(),
        fingerprint=listed.split()[1],
    )


def stop_sshd(sshd: Sshd) -> None:
    """Kill an sshd and everything it forked."""
    for pid in [*descendants(sshd.pid), sshd.pid]:
        kill(pid)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    foreign = keygen(directory / "foreign_host")
    return Keys(
        client=keygen(directory / "client"),
        guest=keygen(directory / "guest"),
        stranger=keygen(directory / "stranger"),
        foreign_host_key=Path(f"{foreign}.pub").read_text().strip(),
    )


@pytest.fixture(scope="module")
def node_sshd(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    sshd = start_sshd(tmp_path_factory.mktemp("node") / "sshd", Path(f"{keys.client}.pub"))
    yield sshd
    stop_sshd(sshd)


@pytest.fixture(scope="module")
def guest_sshd(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    sshd = start_sshd(tmp_path_factory.mktemp("guest") / "sshd", Path(f"{keys.guest}.pub"))
    yield sshd
    stop_sshd(sshd)


def node_for(sshd: Sshd | int, host_key: str | None, libvirt_uri: str = "qemu:///system") -> Node:
    """Node n1 reached at the sshd (or a bare port), `host_key` pinned."""
    port = sshd if isinstance(sshd, int) else sshd.port
    return Node("n1", libvirt_uri, ssh_host="127.0.0.1", ssh_port=port, host_key=host_key)


@pytest.fixture
def reports() -> Reports:
    return Reports()


class Links:
    """Makes links to test nodes and closes them all at the end of the test."""

    def __init__(self, keys: Keys, guest_port: int, reports: Reports) -> None:
        self.keys, self.guest_port, self.reports = keys, guest_port, reports
        self.made: list[SshLink] = []

    def __call__(
        self,
        node: Node,
        *,
        client_key: Path | None = None,
        timeout: float = 5.0,
        guest_port: int | None = None,
    ) -> SshLink:
        link = SshLink(
            node,
            client_key=client_key or self.keys.client,
            guest_key=self.keys.guest,
            reporter=self.reports,
            connect_timeout=timeout,
            guest_port=guest_port or self.guest_port,
        )
        self.made.append(link)
        return link


@pytest.fixture
async def links(keys: Keys, guest_sshd: Sshd, reports: Reports) -> AsyncIterator[Links]:
    made = Links(keys, guest_sshd.port, reports)
    yield made
    for link in made.made:
        await link.close()


@pytest.fixture
def link(links: Links, node_sshd: Sshd) -> SshLink:
    """A link to the node sshd, its host key pinned as a public key line."""
    return links(node_for(node_sshd, node_sshd.host_key))


async def wait_for(predicate: Callable[[], object], seconds: float = 5.0) -> None:
    """Poll `predicate()` until it is true."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def round_trip(path: str, payload: bytes) -> bytes:
    """Send `payload` through the UNIX socket at `path` and read as much back."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    writer.close()
    await writer.wait_closed()
    return data


@pytest.fixture
async def libvirtd(tmp_path: Path) -> AsyncIterator[str]:
    """The path of a UNIX socket that echoes what it reads: libvirtd's stand-in."""
    writers: list[asyncio.StreamWriter] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        writer.close()

    path = str(tmp_path / "libvirt-sock")
    server = await asyncio.start_unix_server(echo, path)
    yield path
    server.close()
    for writer in writers:  # Python 3.11's server.close() leaves accepted connections open
        writer.close()
    await server.wait_closed()


# Host keys


async def test_unknown_host_key_is_reported_once_and_refused(
    links: Links, node_sshd: Sshd, reports: Reports
) -> None:
    link = links(node_for(node_sshd, None))
    with pytest.raises(NodeUntrusted) as caught:
        await link.check()
    assert reports.sightings == [
        HostKeySighting("n1", node_sshd.fingerprint, node_sshd.host_key.rsplit(" ", 1)[0], None)
    ]
    assert caught.value.message == (
        f"node n1 presents an unknown SSH host key {node_sshd.fingerprint}; check it and "
        f"approve it: provisioner node approve n1 --fingerprint {node_sshd.fingerprint}"
    )


async def test_a_pinned_public_key_line_connects(link: SshLink, reports: Reports) -> None:
    await link.check()
    assert reports.sightings == []


async def test_a_pinned_fingerprint_connects(
    links: Links, node_sshd: Sshd, reports: Reports
) -> None:
    await links(node_for(node_sshd, node_sshd.fingerprint)).check()
    assert reports.sightings == []


async def test_a_changed_host_key_is_refused_before_authenticating(
    links: Links, keys: Keys, node_sshd: Sshd, reports: Reports
) -> None:
    before = node_sshd.accepted()
    pinned = fingerprint(keys.foreign_host_key)
    with pytest.raises(NodeUntrusted) as caught:
        await links(node_for(node_sshd, keys.foreign_host_key)).check()
    assert [(s.fingerprint, s.pinned_fingerprint) for s in reports.sightings] == [
        (node_sshd.fingerprint, pinned)
    ]
    assert f"presented host key {node_sshd.fingerprint} but {pinned} is pinned" in str(caught.value)
    assert "man-in-the-middle" in str(caught.value)
    # A login made afterwards shows up in the log, so the refused one would have by now.
    await links(node_for(node_sshd, node_sshd.host_key)).check()
    await wait_for(lambda: node_sshd.accepted() > before)
    assert node_sshd.accepted() == before + 1


async def test_the_reporter_may_call_back_into_the_link(
    keys: Keys, node_sshd: Sshd, guest_sshd: Sshd
) -> None:
    """The reporter runs outside the link's lock, so it can use the link without deadlock."""
    seen: list[str] = []

    async def reporter(sighting: HostKeySighting) -> None:
        seen.append(sighting.fingerprint)
        if len(seen) == 1:  # once: the second report comes from this very call
            with pytest.raises(NodeUntrusted):
                await own.check()

    own = SshLink(
        node_for(node_sshd, None), client_key=keys.client, guest_key=keys.guest, reporter=reporter
    )
    with pytest.raises(NodeUntrusted):
        await asyncio.wait_for(own.check(), 5)
    assert seen == [node_sshd.fingerprint] * 2
    await own.close()


async def test_one_connection_is_shared_by_concurrent_callers(
    link: SshLink, node_sshd: Sshd
) -> None:
    before = node_sshd.accepted()
    await asyncio.gather(*(link.check() for _ in range(5)))
    await link.libvirt_socket()
    await wait_for(lambda: node_sshd.accepted() > before)
    await asyncio.sleep(0.2)
    assert node_sshd.accepted() == before + 1


def test_fingerprint_is_the_one_ssh_keygen_prints(node_sshd: Sshd) -> None:
    assert fingerprint(node_sshd.host_key) == node_sshd.fingerprint
    with pytest.raises(InvalidInput):
        fingerprint("ssh-ed25519 not-base64")


def test_host_key_checks_are_never_switched_off() -> None:
    sources = [p for d in ("provisioner", "api", "bot") for p in (ROOT / d).rglob("*.py")]
    offenders = [str(p) for p in sources if "known_hosts=None" in p.read_text()]
    assert offenders == []


# Connection failures


async def test_a_client_key_the_node_refuses_gives_advice(
    links: Links, keys: Keys, node_sshd: Sshd
) -> None:
    link = links(node_for(node_sshd, node_sshd.host_key), client_key=keys.stranger)
    with pytest.raises(NodeUnavailable) as caught:
        await link.check()
    assert str(caught.value) == (
        f"node n1 (root@127.0.0.1:{node_sshd.port}) refused our key {keys.stranger}; "
        "add the matching public key to its authorized_keys"
    )


async def test_a_missing_client_key_is_a_config_error(
    links: Links, node_sshd: Sshd, tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=str(missing)):
        await links(node_for(node_sshd, node_sshd.host_key), client_key=missing).check()


async def test_a_closed_port_fails_fast(links: Links) -> None:
    started = time.monotonic()
    with pytest.raises(NodeUnavailable, match="connection refused"):
        await links(node_for(free_port(), None)).check()
    assert time.monotonic() - started < 1


async def test_a_silent_peer_times_out_without_blocking_the_loop(links: Links) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # say nothing until the client gives up

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop, gaps = asyncio.get_running_loop(), [0.0]

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    ticker = asyncio.create_task(tick())
    link = links(node_for(port, None), timeout=1.0)
    started = time.monotonic()
    # Four callers at once: the first waits out the timeout, the others fail with it.
    outcomes = await asyncio.gather(*(link.check() for _ in range(4)), return_exceptions=True)
    elapsed = time.monotonic() - started
    assert all(isinstance(o, NodeUnavailable) and "within 1 s" in o.message for o in outcomes)
    # Right after a failure the node fails fast, instead of holding every caller again.
    again = time.monotonic()
    with pytest.raises(NodeUnavailable, match="within 1 s"):
        await link.check()
    assert time.monotonic() - again < 0.1
    ticker.cancel()
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()
    assert held, "the client did open the TCP connection"
    assert 0.9 < elapsed < 2
    assert max(gaps) < 0.1


# libvirt socket forwarding


async def test_libvirt_socket_reaches_the_nodes_socket(
    links: Links, node_sshd: Sshd, libvirtd: str
) -> None:
    link = links(
        node_for(node_sshd, node_sshd.host_key, libvirt_uri=f"qemu:///system?socket={libvirtd}")
    )
    path = await link.libvirt_socket()
    assert len(path) < 100 and path.startswith("/tmp/prov-ssh-")
    assert oct(Path(path).parent.stat().st_mode & 0o777) == "0o700"
    assert await link.libvirt_socket() == path, "one forward per connection"
    assert await round_trip(path, b"hello libvirt") == b"hello libvirt"
    await link.close()
    assert not Path(path).parent.exists()
    await link.close()


async def test_libvirt_socket_comes_back_after_the_connection_drops(
    links: Links, node_sshd: Sshd, libvirtd: str
) -> None:
    link = links(
        node_for(node_sshd, node_sshd.host_key, libvirt_uri=f"qemu:///system?socket={libvirtd}")
    )
    first = await link.libvirt_socket()
    assert await round_trip(first, b"one") == b"one"
    node_sshd.drop_connections()
    paths = [first]

    async def new_path() -> bool:
        paths.append(await link.libvirt_socket())
        return paths[-1] != first

    deadline = time.monotonic() + 5
    while not await new_path():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert await round_trip(paths[-1], b"two") == b"two"
    assert not Path(first).parent.exists(), "the old socket directory is removed"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("qemu:///system", None),
        ("qemu:///session", ConfigError),
        ("qemu+ssh://root@host/system", ConfigError),
        ("qemu:///system?socket=relative", ConfigError),
    ],
)
async def test_only_system_libvirt_uris_are_forwarded(
    links: Links, node_sshd: Sshd, uri: str, expected: type[Exception] | None
) -> None:
    node = node_for(node_sshd, node_sshd.host_key, libvirt_uri=uri)
    if expected is None:
        assert (await links(node).libvirt_socket()).endswith("/libvirt.sock")
    else:
        # Refused when the link is made (a node entry with it is refused), not at first use.
        with pytest.raises(expected, match="qemu:///system"):
            links(node)


# Commands on guests, through the node


async def test_run_on_guest_returns_output_and_exit_status(link: SshLink, guest_sshd: Sshd) -> None:
    hi = await link.run_on_guest(
        "127.0.0.1", "root", guest_sshd.host_key, ["echo", "hi"], timeout=5
    )
    assert (hi.exit_status, hi.stdout, hi.stderr) == (0, "hi\n", "")
    three = await link.run_on_guest(
        "127.0.0.1", "root", guest_sshd.host_key, ["sh", "-c", "echo no >&2; exit 3"], timeout=5
    )
    assert (three.exit_status, three.stderr) == (3, "no\n")
    # stdin is at EOF: a command that reads it finishes instead of waiting forever.
    cat = await link.run_on_guest("127.0.0.1", "root", guest_sshd.host_key, ["cat"], timeout=5)
    assert (cat.exit_status, cat.stdout) == (0, "")
    odd = await link.run_on_guest(
        "127.0.0.1", "root", guest_sshd.host_key, ["printf", "a\\377b"], timeout=5
    )
    assert odd.stdout == "a\ufffdb"


async def test_a_guest_with_another_host_key_is_refused(
    link: SshLink, keys: Keys, guest_sshd: Sshd
) -> None:
    with pytest.raises(GuestUnreachable, match=re.escape(guest_sshd.fingerprint)):
        await link.run_on_guest("127.0.0.1", "root", keys.foreign_host_key, ["true"], timeout=5)


async def test_a_guest_that_refuses_our_key_is_unreachable(
    keys: Keys, node_sshd: Sshd, guest_sshd: Sshd, reports: Reports
) -> None:
    link = SshLink(
        node_for(node_sshd, node_sshd.host_key),
        client_key=keys.client,
        guest_key=keys.stranger,
        reporter=reports,
        guest_port=guest_sshd.port,
    )
    try:
        with pytest.raises(GuestUnreachable, match=f"refused our key {keys.stranger} for user"):
            await link.run_on_guest("127.0.0.1", "root", guest_sshd.host_key, ["true"], timeout=5)
    finally:
        await link.close()


async def test_a_guest_that_refuses_connections_is_unreachable(
    links: Links, node_sshd: Sshd, guest_sshd: Sshd
) -> None:
    link = links(node_for(node_sshd, node_sshd.host_key), guest_port=free_port())
    with pytest.raises(GuestUnreachable, match="could not open a connection"):
        await link.run_on_guest("127.0.0.1", "root", guest_sshd.host_key, ["true"], timeout=5)


async def test_a_command_past_its_timeout_is_unreachable(
    link: SshLink, guest_sshd: Sshd, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    argv = ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 10"]
    started = time.monotonic()
    try:
        with pytest.raises(GuestUnreachable, match="outcome unknown"):
            await link.run_on_guest("127.0.0.1", "root", guest_sshd.host_key, argv, timeout=0.5)
        assert time.monotonic() - started < 2
    finally:
        # sshd leaves a command without a terminal running after the client goes away.
        await wait_for(pid_file.exists)
        kill(int(pid_file.read_text()))


async def test_a_connection_dropped_mid_command_gives_an_unknown_outcome(
    link: SshLink, guest_sshd: Sshd, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    argv = ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"]
    run = asyncio.create_task(
        link.run_on_guest("127.0.0.1", "root", guest_sshd.host_key, argv, timeout=10)
    )
    await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    sleeper = int(pid_file.read_text())
    try:
        guest_sshd.drop_connections(spare=sleeper)
        result = await asyncio.wait_for(run, 5)
    finally:
        kill(sleeper)
    assert result.exit_status is None
