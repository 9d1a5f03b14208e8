"""Host-key pinning for our SSH connections: fingerprints, pins, and a client that checks them."""

from __future__ import annotations

import re
from pathlib import Path

import asyncssh

from provisioner.errors import ConfigError, InvalidInput

FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
# OpenSSH's own preference order; asyncssh's default puts RSA first, so a node with several
# host keys would show ops a different key than `ssh-keyscan` or `ssh-keygen -lf` does.
HOST_KEY_ALGS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
# Non-empty but trusting nothing: every key goes to PinnedHost. An empty value would make
# asyncssh fall back to ~/.ssh/known_hosts.
TRUST_NOTHING: tuple[list[str], list[str], list[str]] = ([], [], [])


def fingerprint(public_key_line: str) -> str:
    """The SHA256 fingerprint of an OpenSSH public key line, as `ssh-keygen -lf` prints it."""
    return str(public_key(public_key_line).get_fingerprint("sha256"))


def public_key(line: str) -> asyncssh.SSHKey:
    """Parse an OpenSSH public key line; InvalidInput if it is not one."""
    try:
        return asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise InvalidInput(
            "not an OpenSSH public key line (expected 'ssh-ed25519 AAAA… comment')"
        ) from None


def pin(pinned: str | None) -> tuple[str | None, list[str]]:
    """The pinned fingerprint, and host key algorithms that make the server show that key."""
    if pinned is None or FINGERPRINT_RE.match(pinned.strip()):
        return (pinned.strip() if pinned else None), list(HOST_KEY_ALGS)
    key = public_key(pinned)
    own = [alg for alg in HOST_KEY_ALGS if alg.encode() in key.sig_algorithms]
    own = own or [alg.decode() for alg in key.sig_algorithms]
    return fingerprint(pinned), own + [alg for alg in HOST_KEY_ALGS if alg not in own]


def private_key(path: Path) -> asyncssh.SSHKey:
    """Load a client key; ConfigError naming the file (never its content) if that fails."""
    try:
        return asyncssh.read_private_key(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the SSH key {path}: {exc.strerror or exc}") from None
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise ConfigError(f"the SSH key {path} is not usable: {exc}") from None


class PinnedHost(asyncssh.SSHClient):
    """Accepts only the pinned host key and remembers the key the server presented."""

    def __init__(self, pinned: str | None) -> None:
        self.pinned = pinned
        self.presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        """Called during key exchange, before any authentication."""
        self.presented = key
        return self.pinned is not None and key.get_fingerprint("sha256") == self.pinned


def connect_options(client: PinnedHost, algs: list[str], key: asyncssh.SSHKey) -> dict[str, object]:
    """Options shared by node and guest connections: our key only, our host key check only."""
    return {
        "client_factory": lambda: client,
        "known_hosts": TRUST_NOTHING,
        "server_host_key_algs": algs,
        "client_keys": [key],
        # No ssh-agent and no ~/.ssh/config: what we connect with must be what settings say.
        "agent_path": None,
        "config": None,
    }
