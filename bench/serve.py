"""A throw-away `provisioner serve`: temp data dir, fresh database, free port, sure clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

# Far more than 250 small workspaces need; the default node (64 vCPU) would refuse the 65th.
BIG_NODE = {
    "name": "local",
    "libvirt_uri": "test:///default",
    "capacity": {"vcpus": 4096, "memory_mib": 16777216, "disk_gib": 1000000},
}
# Settings that would leak from the caller's shell into the server under test.
FOREIGN_ENV = ("PROVISIONER_", "SLACK_", "TAILSCALE_", "SSH_")
STOP_SECONDS = 30.0  # serve drains for up to 20 s after SIGTERM
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Serve:
    """A running server: where it listens, how to authenticate, what it is."""

    url: str
    token: str
    process: subprocess.Popen[bytes]
    database: str
    log_path: Path

    def cpu_seconds(self) -> float | None:
        """User + system CPU time serve has used so far, its HTTP processes included (Linux)."""
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                if pid == self.process.pid:
                    return None
                continue  # a child that just exited
            # Fields 14 and 15 of stat(5), counted after the ")" that ends the command name.
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def pids(self) -> list[int]:
        """serve's process id, then those of the HTTP processes it started."""
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        return [pid, *map(int, children)]

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's output, for error reports."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@contextlib.contextmanager
def serve(
    database_url: str | None,
    *,
    workers: int | None = None,
    log_level: str | None = None,
    command: list[str] | None = None,
    http_processes: int = 1,
) -> Iterator[Serve]:
    """Start `provisioner serve` (or `command`) on a fresh database; stop it, clean up after."""
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="provisioner-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        if database_url is None:
            url, database = f"sqlite+aiosqlite:///{tmp / 'provisioner.db'}", "sqlite"
        else:
            url, database = _fresh_postgres(database_url), "postgresql"
            stack.callback(_drop_postgres, database_url, sa.make_url(url).database or "")
        nodes = tmp / "nodes.json"
        nodes.write_text(json.dumps([BIG_NODE]))
        token = "prov_bench-" + secrets.token_urlsafe(24)
        port = _free_port()
        env = serve_environment(tmp, port, token, url, PROVISIONER_NODES=str(nodes))
        if workers is not None:
            env["PROVISIONER_WORKERS"] = str(workers)
        if log_level is not None:
            env["PROVISIONER_LOG_LEVEL"] = log_level
        if http_processes > 1:
            env["PROVISIONER_HTTP_PROCESSES"] = str(http_processes)
        log_path = tmp / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command or [_console_script(), "serve"],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Our own session: a terminal's Ctrl-C reaches us, and we stop serve in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads exist yet)
            )
        stack.callback(stop_process, process)
        yield Serve(f"http://127.0.0.1:{port}", token, process, database, log_path)


def serve_environment(
    work: Path, port: int, token: str, database_url: str | None = None, **settings: str
) -> dict[str, str]:
    """serve's environment: ours minus foreign settings, scratch state in `work`, `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env.pop("API_TOKEN", None)
    env.update(
        PROVISIONER_DATA_DIR=str(work / "data"),
        PROVISIONER_DATABASE_URL=database_url or f"sqlite+aiosqlite:///{work / 'provisioner.db'}",
        PROVISIONER_ADMIN_TOKEN=token,
        PROVISIONER_RATE_LIMIT="0",  # the benchmarks poll far faster than any client should
        PROVISIONER_HOST="127.0.0.1",
        PROVISIONER_PORT=str(port),
        **settings,
    )
    return env


def _console_script() -> str:
    """The `provisioner` console script of this virtualenv."""
    beside = Path(sys.executable).parent / "provisioner"
    found = str(beside) if beside.exists() else shutil.which("provisioner")
    if found is None:
        raise SystemExit("bench: the `provisioner` console script is not installed")
    return found


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the benchmark itself is killed (Linux), never orphaned."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], seconds: float = STOP_SECONDS) -> None:
    """SIGTERM, wait up to `seconds` for the drain, then SIGKILL; a second Ctrl-C kills at once."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(seconds)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.kill()
        process.wait()


def _fresh_postgres(base_url: str) -> str:
    """Create an empty database on the server of `base_url`; its URL."""
    base = sa.make_url(base_url)
    if base.drivername != "postgresql+asyncpg":
        raise SystemExit("bench: --database-url must be a postgresql+asyncpg:// URL")
    name = f"bench_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(base_url, f'CREATE DATABASE "{name}"'))
    except (OSError, sa.exc.SQLAlchemyError) as error:
        shown = base.render_as_string()  # password masked
        raise SystemExit(f"bench: cannot create a database on {shown}: {error}") from None
    return base.set(database=name).render_as_string(hide_password=False)


def _drop_postgres(base_url: str, name: str) -> None:
    """Drop the database the benchmark created, even if a killed server left sessions."""
    try:
        asyncio.run(_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception as error:  # clean-up must not hide the benchmark's own outcome
        print(f"bench: could not drop database {name}: {error}", file=sys.stderr)


async def _admin(url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()
