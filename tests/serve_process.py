"""`provisioner serve` as a real child process, for tests that kill it: start, kill, terminate."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parent.parent
PROVISIONER = REPO / ".venv" / "bin" / "provisioner"
# Settings the child must not inherit from the test runner's environment.
FOREIGN_PREFIXES = ("PROVISIONER_", "SLACK_", "TAILSCALE_", "SSH_")
FOREIGN_NAMES = frozenset({"API_TOKEN"})
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


def free_port() -> int:
    """A TCP port that was free a moment ago on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment without provisioner settings, plus `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(FOREIGN_PREFIXES) and key not in FOREIGN_NAMES
    }
    env.update(settings)
    return env


class ServeProcess:
    """One `provisioner serve` child on its own port; its output goes to `log_path`."""

    def __init__(self, settings: Mapping[str, str], log_path: Path, admin_token: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            [str(PROVISIONER), "serve"],
            env=child_env({**settings, "PROVISIONER_PORT": str(self.port)}),
            cwd=log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for pytest must not reach it first
        )
        self.client = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10.0
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def log_text(self) -> str:
        """Everything the child printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    async def wait_healthy(self, timeout: float = 15.0) -> None:
        """Return once GET /healthz answers 200; raise with the log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeDied(self, "exited before it was healthy")
            try:
                if (await self.client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        raise ServeDied(self, f"not healthy within {timeout:g} s")

    async def wait_exit(self, timeout: float) -> int:
        """The exit code once the child ends by itself (negative: killed by that signal)."""
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise ServeDied(self, f"still running after {timeout:g} s")
            await asyncio.sleep(0.05)
        return code

    def kill(self) -> None:
        """SIGKILL: the crash, with no chance to clean up."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code once the child has drained and exited."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def aclose(self) -> None:
        """Kill the child if it still runs, and release the client and the log."""
        self.kill()
        await self.client.aclose()
        self._log.close()


class ServeDied(AssertionError):
    """A serve child did not behave; the message carries the tail of its log."""

    def __init__(self, serve: ServeProcess, what: str) -> None:
        tail = "\n".join(serve.log_text().splitlines()[-40:])
        super().__init__(f"serve pid {serve.pid} {what}; log {serve.log_path}:\n{tail}")


class ServeGroup:
    """The serve children of one test; whatever still runs at the end is killed."""

    def __init__(self, log_dir: Path, admin_token: str) -> None:
        self._log_dir, self._admin_token = log_dir, admin_token
        self.started: list[ServeProcess] = []

    async def start(self, settings: Mapping[str, str], *, attempts: int = 3) -> ServeProcess:
        """A healthy serve child; retries when the picked port was taken in the meantime."""
        for _ in range(attempts):
            log_path = self._log_dir / f"serve-{len(self.started) + 1}.log"
            serve = ServeProcess(settings, log_path, self._admin_token)
            self.started.append(serve)
            try:
                await serve.wait_healthy()
                return serve
            except ServeDied:
                if "address already in use" not in serve.log_text().lower():
                    raise
        raise AssertionError(f"no free port found in {attempts} attempts")

    async def aclose(self) -> None:
        """Kill and release every child."""
        for serve in self.started:
            await serve.aclose()


async def create_workspace(serve: ServeProcess, name: str) -> tuple[dict[str, Any], str]:
    """POST a small workspace through `serve`; its JSON and the id of its create operation."""
    resp = await serve.client.post(
        "/v1/workspaces", json={"plan": "small", "image": "debian-12", "name": name}
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    return body["workspace"], body["operation"]["id"]


async def delete_workspace(serve: ServeProcess, workspace_id: str) -> str:
    """DELETE a workspace through `serve`; the id of its delete operation."""
    resp = await serve.client.delete(f"/v1/workspaces/{workspace_id}")
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


async def wait_operation(
    client: httpx.AsyncClient, op_id: str, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll GET /v1/operations/{id} until the operation ends; its final JSON."""
    deadline = time.monotonic() + timeout
    op: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = await client.get(f"/v1/operations/{op_id}")
        resp.raise_for_status()
        op = resp.json()
        if op["state"] in FINAL_STATES:
            return op
        await asyncio.sleep(0.1)
    raise AssertionError(f"operation {op_id} did not end within {timeout:g} s: {op}")
