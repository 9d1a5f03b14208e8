"""The provisioner's own SSH identity on disk: made once, private key readable by us only."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

from provisioner.errors import ConfigError


def ensure_keypair(path: Path) -> str:
    """The public key line of the ed25519 key at `path`, generating the key on first use."""
    public = path.with_suffix(".pub")
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # ssh-keygen rather than asyncssh: loading asyncssh costs a serve ~30 MB for good.
        try:
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provisioner", "-f", path],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as error:
            raise ConfigError(
                f"cannot make the SSH key {path} with ssh-keygen ({error}); install openssh-client"
            ) from None
    try:
        return public.read_text().strip()
    except OSError as error:
        raise ConfigError(f"cannot read {public}: {error.strerror}") from None


def write_key_from_base64(path: Path, encoded: str) -> Path:
    """Write a private key given base64-encoded (GlueOps-style settings) to `path`, mode 0600."""
    import asyncssh  # lazily: only the GlueOps-style node needs it

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(path, base64.b64decode(encoded))
    try:
        asyncssh.read_private_key(path)
    except asyncssh.KeyImportError:
        raise ConfigError(
            "SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED does not hold an OpenSSH private key"
        ) from None
    return path


def _write_private(path: Path, data: bytes) -> None:
    """Write key material so that it is never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
