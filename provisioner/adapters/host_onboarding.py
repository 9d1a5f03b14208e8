"""HostOnboarder on asyncssh: the host key, one password login that sets up the account, a check."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncssh

from provisioner.adapters.ssh import _reason, _text
from provisioner.adapters.ssh_pinning import HOST_KEY_ALGS, TRUST_NOTHING, PinnedHost, pin
from provisioner.errors import OnboardingFailed, TimedOut
from provisioner.ports.onboarding import Account, KeyPair, PasswordLogin

# Runs as root on the host (directly, or through sudo). Refuses system accounts and symlinked
# .ssh paths: root writing through a link a user planted would overwrite any file it points at.
ACCOUNT_SCRIPT = r"""
set -eu
u=$1; sudo_group=$2; shift 2
min=$(awk '/^UID_MIN/ {print $2}' /etc/login.defs 2>/dev/null || true); min=${min:-1000}
if id -u "$u" >/dev/null 2>&1; then
  if [ "$(id -u "$u")" -lt "$min" ]; then
    echo "$u exists and is a system account (uid below $min); refusing" >&2; exit 3
  fi
  echo "user $u already exists; adding the key to it"
else
  shell=/bin/sh; [ -x /bin/bash ] && shell=/bin/bash
  # -p '*': no password, yet not locked ('!'): sshd without PAM refuses key logins to locked ones.
  useradd -m -s "$shell" -p '*' "$u"
  echo "created user $u (shell $shell)"
fi
g=$(id -gn "$u"); home=$(getent passwd "$u" | cut -d: -f6)
[ -n "$home" ] && [ -d "$home" ] || { echo "$u has no home directory" >&2; exit 4; }
for p in "$home/.ssh" "$home/.ssh/authorized_keys"; do
  [ ! -L "$p" ] || { echo "$p is a symbolic link; refusing to write through it" >&2; exit 4; }
done
mkdir -p "$home/.ssh"; chown "$u:$g" "$home/.ssh"; chmod 700 "$home/.ssh"
f=$home/.ssh/authorized_keys; touch "$f"
for k in "$@"; do grep -qxF -- "$k" "$f" || printf '%s\n' "$k" >> "$f"; done
chown "$u:$g" "$f"; chmod 600 "$f"
echo "installed $# key(s) in $f (file 0600, directory 0700, owned by $u)"
if [ "$sudo_group" = 1 ]; then
  for grp in sudo wheel; do
    if getent group "$grp" >/dev/null; then
      usermod -aG "$grp" "$u"; echo "added $u to group $grp"; exit 0
    fi
  done
  echo "the host has neither a sudo nor a wheel group" >&2; exit 5
fi
"""

# Runs as the new user over a fresh key login: the key must be authorised, the helper key goes.
VERIFY_SCRIPT = r"""
set -eu
f=$HOME/.ssh/authorized_keys
grep -qxF -- "$1" "$f" || { echo "the key is not in $f" >&2; exit 3; }
if [ -n "$2" ]; then
  grep -vxF -- "$2" "$f" > "$f.onboard" || true
  cat "$f.onboard" > "$f"; rm -f "$f.onboard"
fi
echo "logged in as $(id -un) with the new key"
"""


class SshHostOnboarder:
    """Reaches existing hosts directly; every connection pins the host key, none reads ~/.ssh."""

    def __init__(self, *, connect_timeout: float = 10.0, command_timeout: float = 60.0) -> None:
        self._connect_timeout, self._command_timeout = connect_timeout, command_timeout

    def new_keypair(self, comment: str) -> KeyPair:
        """A fresh Ed25519 key pair."""
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        private = key.export_private_key("openssh").decode()
        return KeyPair(private, key.export_public_key("openssh").decode().strip())

    async def host_key(self, host: str, port: int) -> str:
        """The host key the host presents, in OpenSSH's preference order; no login."""
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                key = await asyncssh.get_server_host_key(
                    host, port, server_host_key_algs=list(HOST_KEY_ALGS), config=None
                )
        except TimeoutError:
            raise TimedOut(
                f"{where} did not answer SSH within {self._connect_timeout:g} s"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise OnboardingFailed(
                f"cannot fetch the host key of {where}: {_reason(exc)}"
            ) from None
        if key is None:
            raise OnboardingFailed(f"{where} presented no host key")
        return key.export_public_key("openssh").decode().strip()

    async def create_account(self, login: PasswordLogin, account: Account) -> Sequence[str]:
        """Log in once with the password; make the account as root (or through sudo)."""
        options: dict[str, object] = {
            "password": login.password,
            "client_keys": None,
            "preferred_auth": ("password", "keyboard-interactive"),
        }
        async with self._connected(
            login.host, login.port, login.host_key, login.user, options
        ) as c:
            uid = await self._run(c, "id -u", None, "reading the login user's id")
            args = [account.name, "1" if account.sudo else "0", *account.keys]
            script = shlex.join(["sh", "-c", ACCOUNT_SCRIPT, "onboard", *args])
            if _text(uid.stdout).strip() == "0":
                return await self._checked(c, script, None, "setting up the account")
            # sudo reads the password from stdin (-S) and prints no prompt (-p '').
            command = "sudo -S -p '' -- " + script
            return await self._checked(c, command, login.password + "\n", "setting up the account")

    async def verify_key_login(
        self,
        host: str,
        port: int,
        host_key: str,
        user: str,
        private_key: str,
        *,
        expect: str,
        drop: str | None = None,
    ) -> Sequence[str]:
        """A fresh key-only login as `user`; `expect` must be authorised; `drop` is removed."""
        try:
            key = asyncssh.import_private_key(private_key)
        except (asyncssh.KeyImportError, ValueError):
            raise OnboardingFailed("the key to verify the login with is not usable") from None
        options: dict[str, object] = {"client_keys": [key], "preferred_auth": ("publickey",)}
        async with self._connected(host, port, host_key, user, options) as conn:
            script = shlex.join(["sh", "-c", VERIFY_SCRIPT, "verify", expect, drop or ""])
            return await self._checked(conn, script, None, "verifying the key login")

    @asynccontextmanager
    async def _connected(
        self, host: str, port: int, host_key: str, user: str, auth: dict[str, object]
    ) -> AsyncIterator[asyncssh.SSHClientConnection]:
        """A connection that accepts only `host_key`, authenticated as `auth` says."""
        pinned, algs = pin(host_key)
        client = PinnedHost(pinned)
        where = f"{user}@{host}:{port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                conn = await asyncssh.connect(
                    host,
                    port,
                    username=user,
                    client_factory=lambda: client,
                    known_hosts=TRUST_NOTHING,
                    server_host_key_algs=algs,
                    agent_path=None,
                    config=None,
                    gss_host=None,
                    **auth,
                )
        except TimeoutError:
            raise TimedOut(
                f"{host}:{port} did not complete an SSH login within {self._connect_timeout:g} s"
            ) from None
        except asyncssh.HostKeyNotVerifiable:
            shown = client.presented.get_fingerprint("sha256") if client.presented else "?"
            raise OnboardingFailed(
                f"host key changed since approval: {host}:{port} presented {shown}, "
                f"{pinned} was approved; nothing was done on the host",
                code="host_key_changed",
            ) from None
        except asyncssh.PermissionDenied:
            raise OnboardingFailed(
                f"{where} refused the login: "
                + ("wrong password, or password logins are off" if "password" in auth else "key"),
                code="login_refused",
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise OnboardingFailed(f"cannot log in as {where}: {_reason(exc)}") from None
        try:
            yield conn
        finally:
            conn.close()

    async def _run(
        self, conn: asyncssh.SSHClientConnection, command: str, stdin: str | None, doing: str
    ) -> asyncssh.SSHCompletedProcess:
        """Run one command under the command timeout."""
        try:
            async with asyncio.timeout(self._command_timeout):
                if stdin is None:  # stdin at EOF: a command that reads it must not hang
                    return await conn.run(
                        command,
                        check=False,
                        stdin=asyncssh.DEVNULL,
                        encoding="utf-8",
                        errors="replace",
                    )
                return await conn.run(
                    command, check=False, input=stdin, encoding="utf-8", errors="replace"
                )
        except TimeoutError:
            raise TimedOut(f"{doing} took longer than {self._command_timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise OnboardingFailed(f"{doing} failed: {_reason(exc)}") from None

    async def _checked(
        self, conn: asyncssh.SSHClientConnection, command: str, stdin: str | None, doing: str
    ) -> list[str]:
        """Run a command; its output lines, or OnboardingFailed with its last error line."""
        done = await self._run(conn, command, stdin, doing)
        out, err = _text(done.stdout).splitlines(), _text(done.stderr).splitlines()
        if done.exit_status != 0:
            last = next((line for line in reversed(err) if line.strip()), "no error output")
            raise OnboardingFailed(f"{doing} failed (exit {done.exit_status}): {last.strip()}")
        return out + err
