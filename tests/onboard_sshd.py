"""A private OpenSSH sshd with password logins on loopback, and throwaway users on this machine."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
# Every user the tests make starts so; the sshd lets no one else in.
PREFIX = "onbt"


@dataclass
class PasswordSshd:
    """An sshd on 127.0.0.1 that takes passwords and keys (StrictModes on), for PREFIX* only."""

    directory: Path
    port: int
    pid: int = 0

    @property
    def host_key(self) -> str:
        """The public host key line it presents."""
        return (self.directory / "hostkey.pub").read_text().strip()

    @property
    def fingerprint(self) -> str:
        """Its host key's SHA256 fingerprint, as ssh-keygen prints it."""
        listed = subprocess.run(
            ["ssh-keygen", "-lf", str(self.directory / "hostkey.pub")],
            check=True,
            capture_output=True,
            text=True,
        )
        return listed.stdout.split()[1]

    def start(self) -> None:
        """Start (or start again) on the same port with the current host key."""
        config = self.directory / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.directory}/hostkey\n"
            f"PidFile {self.directory}/sshd.pid\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "PermitRootLogin yes\nPubkeyAuthentication yes\nPasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes yes\n"
            f"AllowUsers {PREFIX}*\nX11Forwarding no\nPrintMotd no\nLogLevel VERBOSE\n"
        )
        pid_file = self.directory / "sshd.pid"
        pid_file.unlink(missing_ok=True)
        subprocess.run(
            [str(SSHD), "-f", str(config), "-E", str(self.directory / "sshd.log")], check=True
        )
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text().strip():
                self.pid = int(pid_file.read_text())
                return
            time.sleep(0.02)
        raise RuntimeError("sshd did not start")

    def new_host_key(self) -> None:
        """Replace the host key (a reinstalled host, or a man in the middle); restart."""
        self.stop()
        for name in ("hostkey", "hostkey.pub"):
            (self.directory / name).unlink()
        keygen(self.directory / "hostkey")
        self.start()

    def stop(self) -> None:
        """Kill the sshd and the per-connection processes it forked."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.pid)], check=False, capture_output=True, text=True
        )
        for pid in [*map(int, found.stdout.split()), self.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if _gone(self.pid):
                return
            time.sleep(0.02)

    def log(self) -> str:
        """What the sshd logged."""
        return (self.directory / "sshd.log").read_text()


def _gone(pid: int) -> bool:
    """Whether the process ended (a zombie counts: its sockets are closed already)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair; the private key's path."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def free_port() -> int:
    """A TCP port on loopback nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sshd(directory: Path) -> PasswordSshd:
    """A fresh sshd with its own host key."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    keygen(directory / "hostkey")
    sshd = PasswordSshd(directory, free_port())
    sshd.start()
    return sshd


class Users:
    """Throwaway accounts on this machine, removed afterwards (with their homes)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, bool]] = []

    def name(self) -> str:
        """A fresh name for an account the test expects to be created; removed afterwards."""
        name = f"{PREFIX}{secrets.token_hex(4)}"
        self.made.append((name, False))
        return name

    def login(self, *, root: bool) -> tuple[str, str]:
        """A login user with a random password: uid 0 (a root login) or a plain user."""
        name, password = f"{PREFIX}{secrets.token_hex(4)}", "pw-" + secrets.token_urlsafe(18)
        # uid 0 without a home of its own: a root login without touching root's password.
        how = ["-o", "-u", "0", "-g", "0", "-M", "-d", "/root"] if root else ["-m"]
        subprocess.run(["useradd", *how, "-s", "/bin/sh", name], check=True)
        self.made.append((name, root))
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        return name, password

    def remove_all(self) -> None:
        """Delete every account made (uid 0 ones without -r: their home is /root)."""
        for name, root in reversed(self.made):
            known = subprocess.run(["id", "-u", name], check=False, capture_output=True)
            if known.returncode != 0:
                continue
            # -f: a uid-0 account always "has running processes" (those of root).
            flags = ["-f"] if root else ["-f", "-r"]
            subprocess.run(["userdel", *flags, name], check=False, capture_output=True)


@contextmanager
def running_sshd(directory: Path) -> Iterator[PasswordSshd]:
    """A fresh sshd while the block runs."""
    server = start_sshd(directory)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def throwaway_users() -> Iterator[Users]:
    """Users made in the block, removed after it."""
    made = Users()
    try:
        yield made
    finally:
        made.remove_all()
