"""Real guests for the e2e tier: the loopback sshd node, the guest image, SSH through the node.

No pytest here: `bench/guest_boot.py` uses the same pieces (the fixtures are in conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

REPO = Path(__file__).resolve().parents[2]
START_SSHD = REPO / "scripts" / "e2e" / "start-sshd.sh"
IMAGE_ENV = "PROVISIONER_E2E_IMAGE_DIR"
IMAGE_FILES = ("base.qcow2", "vmlinuz", "initrd.img", "cmdline")
NETWORK = "e2e-net"  # isolated, with DHCP (scripts/e2e/setup-host.sh)
POOL = "default"  # dir pool on the namespace's tmpfs (scripts/e2e/setup-host.sh)
SSH_ATTEMPT_SECONDS = 20.0  # one login attempt; a booting guest under TCG answers slowly


def free_port() -> int:
    """A TCP port that was free a moment ago on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keypair(path: Path, comment: str = "provisioner-e2e") -> Path:
    """A fresh passphrase-less ed25519 key at `path` (public key at `path`.pub)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


def public_key_line(path: Path) -> str:
    """'type base64' of an OpenSSH public key file, without its comment."""
    return " ".join(path.read_text().split()[:2])


class SshNode(NamedTuple):
    """The node: OpenSSH sshd on 127.0.0.1:`port`, root may log in with `client_key`."""

    port: int
    client_key: Path
    host_key: str  # the sshd's public host key line ("ssh-ed25519 AAAA…"), to pin

    @property
    def directory(self) -> Path:
        """Where its keys, config, pid file and log are."""
        return self.client_key.parent

    @property
    def sshd_log(self) -> Path:
        """The sshd's own log (connections, refused channels)."""
        return self.directory / "sshd" / "sshd.log"


def start_node(directory: Path, attempts: int = 3) -> SshNode:
    """Start the node's sshd (scripts/e2e/start-sshd.sh) on a free port with a new client key."""
    key = keypair(directory / "client_key", "provisioner-e2e-client")
    failures = []
    for _ in range(attempts):  # the port may be taken between free_port() and sshd's bind
        port = free_port()
        done = subprocess.run(
            [str(START_SSHD), str(directory / "sshd"), str(port), f"{key}.pub"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return SshNode(port, key, public_key_line(directory / "sshd" / "hostkey.pub"))
        failures.append(f"port {port}: {done.stdout}{done.stderr}".strip())
    raise RuntimeError("the node's sshd did not start:\n" + "\n".join(failures))


def stop_node(node: SshNode) -> None:
    """SIGTERM the node's sshd (its open sessions live on until they end)."""
    pid_file = node.directory / "sshd" / "sshd.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


@dataclass(frozen=True)
class GuestImage:
    """The Debian guest built by scripts/e2e/build-image.sh, for direct kernel boot."""

    directory: Path

    @property
    def base(self) -> Path:
        """The root file system (ext4 on the whole disk), qcow2."""
        return self.directory / "base.qcow2"

    @property
    def kernel(self) -> Path:
        """The guest's kernel."""
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        """The guest's initramfs."""
        return self.directory / "initrd.img"

    @property
    def cmdline(self) -> str:
        """The kernel command line the image needs (root=/dev/vda, serial console)."""
        return (self.directory / "cmdline").read_text().strip()


def find_image() -> GuestImage | str:
    """The image named by PROVISIONER_E2E_IMAGE_DIR, or why there is none usable."""
    where = os.environ.get(IMAGE_ENV)
    if not where:
        return f"{IMAGE_ENV} is not set (scripts/test.sh sets it; or scripts/e2e/cached-image.sh)"
    missing = [name for name in IMAGE_FILES if not (Path(where) / name).is_file()]
    if missing:
        return f"{IMAGE_ENV}={where} lacks {', '.join(missing)} (scripts/e2e/build-image.sh)"
    return GuestImage(Path(where))


class Jump:
    """`ssh -J` through the node to guests; config, known_hosts and ControlPath in a temp dir.

    The node's host key is pinned when given (StrictHostKeyChecking yes), else accepted on first
    use into the temp dir. The connection to the node is shared (ControlMaster), so repeated
    attempts cost one channel each, not one SSH handshake each.
    """

    def __init__(
        self, port: int, client_key: Path, host_key: str | None = None, user: str = "root"
    ) -> None:
        # Short: a ControlPath must fit in a UNIX socket address (108 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="e2e-ssh-"))
        known = self.dir / "known_hosts.node"
        known.write_text(f"[127.0.0.1]:{port} {host_key}\n" if host_key else "")
        self.config = self.dir / "config"
        self.config.write_text(
            "Host node\n"
            "  HostName 127.0.0.1\n"
            f"  Port {port}\n"
            f"  User {user}\n"
            f"  IdentityFile {client_key}\n"
            f"  UserKnownHostsFile {known}\n"
            f"  StrictHostKeyChecking {'yes' if host_key else 'accept-new'}\n"
            "  ControlMaster auto\n"
            f"  ControlPath {self.dir}/cm-%C\n"
            "  ControlPersist 300\n"
            "Host *\n"
            "  BatchMode yes\n"
            "  IdentitiesOnly yes\n"
            "  ConnectTimeout 5\n"
            "  LogLevel ERROR\n"
        )

    def command(
        self, address: str, user: str, key: Path, argv: list[str], host_key: str | None = None
    ) -> list[str]:
        """The ssh command line that runs `argv` on the guest at `address` as `user`.

        The guest's host key is pinned when given; otherwise (a key the guest made at first
        boot) it is accepted once into a known_hosts file of this Jump only.
        """
        known = self.dir / f"known_hosts.{address}"
        if host_key:
            known.write_text(f"{address} {host_key}\n")
        return [
            "ssh",
            "-F",
            str(self.config),
            "-J",
            "node",
            "-i",
            str(key),
            "-l",
            user,
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            f"StrictHostKeyChecking={'yes' if host_key else 'accept-new'}",
            address,
            "--",
            # ssh hands the remote shell one string: quote, so that argv arrives as given.
            shlex.join(argv),
        ]

    def run(
        self,
        address: str,
        user: str,
        key: Path,
        argv: list[str],
        *,
        host_key: str | None = None,
        timeout: float = SSH_ATTEMPT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` on the guest; exit 255 is ssh's own failure (no connection, refused)."""
        try:
            return subprocess.run(
                self.command(address, user, key, argv, host_key),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], 255, "", f"no answer within {timeout:g} s")

    def wait(
        self,
        address: str,
        user: str,
        key: Path,
        timeout: float,
        *,
        host_key: str | None = None,
        interval: float = 0.5,
    ) -> float:
        """Seconds until a login running `true` succeeds; TimeoutError after `timeout`."""
        started = time.monotonic()
        while True:
            done = self.run(address, user, key, ["true"], host_key=host_key)
            if done.returncode == 0:
                return time.monotonic() - started
            if time.monotonic() - started + interval > timeout:
                raise TimeoutError(
                    f"no SSH login as {user}@{address} within {timeout:g} s; "
                    f"last: {done.stderr.strip() or done.returncode}"
                )
            time.sleep(interval)

    def close(self) -> None:
        """Stop the shared connection to the node and remove the temp dir."""
        subprocess.run(
            ["ssh", "-F", str(self.config), "-O", "exit", "node"],
            capture_output=True,
            check=False,
            timeout=10,
        )
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Jump:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def wait_for_ssh(
    jump_port: int,
    client_key: Path,
    guest_ip: str,
    user: str,
    key: Path,
    timeout: float,
    *,
    jump_host_key: str | None = None,
    guest_host_key: str | None = None,
) -> float:
    """Seconds until `ssh -J` through the node logs in to the guest and runs `true`."""
    with Jump(jump_port, client_key, jump_host_key) as jump:
        return jump.wait(guest_ip, user, key, timeout, host_key=guest_host_key)


def seed_iso(
    path: Path, user: str, public_key: str, hostname: str, host_key: Path | None = None
) -> Path:
    """A NoCloud seed (ISO 9660, label cidata): `user` with `public_key` and sudo.

    With `host_key` (an ed25519 private key file, its public key beside it) the guest uses that
    host key instead of generating four at first boot (~6 s under TCG), and can be pinned.
    """
    work = Path(tempfile.mkdtemp(prefix="e2e-seed-"))
    keys = ""
    if host_key is not None:
        private = "".join(f"    {line}\n" for line in host_key.read_text().splitlines())
        public = public_key_line(Path(f"{host_key}.pub"))
        keys = f"ssh_keys:\n  ed25519_private: |\n{private}  ed25519_public: {public}\n"
    try:
        (work / "meta-data").write_text(
            f"instance-id: {uuid.uuid4()}\nlocal-hostname: {hostname}\n"
        )
        (work / "user-data").write_text(
            "#cloud-config\n"
            "users:\n"
            f"  - name: {user}\n"
            "    shell: /bin/bash\n"
            "    sudo: ALL=(ALL) NOPASSWD:ALL\n"
            f"    ssh_authorized_keys: [{json.dumps(public_key)}]\n"
            # No ssh_pwauth: setting it makes cloud-init restart sshd after the first logins.
            f"{keys}"
        )
        subprocess.run(
            ["genisoimage", "-quiet", "-output", str(path), "-volid", "cidata", "-joliet",
             "-rock", str(work / "user-data"), str(work / "meta-data")],
            check=True,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def overlay_volume_xml(name: str, backing_path: str, capacity_gib: int) -> str:
    """A qcow2 volume backed by the qcow2 at `backing_path` (a copy-on-write overlay)."""
    return (
        f"<volume><name>{escape(name)}</name>"
        f"<capacity unit='GiB'>{capacity_gib}</capacity>"
        "<target><format type='qcow2'/></target>"
        f"<backingStore><path>{escape(backing_path)}</path><format type='qcow2'/></backingStore>"
        "</volume>"
    )


@dataclass(frozen=True)
class GuestSpec:
    """What a bare guest domain boots: volumes of the pool, kernel files by path."""

    name: str
    disk_volume: str
    seed_volume: str
    kernel: str
    initrd: str
    cmdline: str
    memory_mib: int = 1024
    vcpus: int = 1
    pool: str = POOL
    network: str = NETWORK
    console_log: str | None = None  # a file (written by virtlogd) that gets the serial console


def guest_domain_xml(spec: GuestSpec) -> str:
    """A TCG domain (KVM hangs guests here) with direct kernel boot, ACPI, disk, seed, NIC."""
    log = f"<log file={quoteattr(spec.console_log)}/>" if spec.console_log else ""
    return f"""<domain type='qemu'>
  <name>{escape(spec.name)}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(spec.kernel)}</kernel>
    <initrd>{escape(spec.initrd)}</initrd>
    <cmdline>{escape(spec.cmdline)}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool={quoteattr(spec.pool)} volume={quoteattr(spec.disk_volume)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='volume' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source pool={quoteattr(spec.pool)} volume={quoteattr(spec.seed_volume)}/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <source network={quoteattr(spec.network)}/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>{log}</serial>
    <console type='pty'/>
  </devices>
</domain>
"""
