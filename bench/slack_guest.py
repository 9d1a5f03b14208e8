"""Our side of `guest_slack`: a real guest asked for in Slack, to the ready DM and its ssh line.

`serve` runs with Slack on (HTTP mode, signed requests) against the fake Slack Web API of
`bench.slack_ack` on loopback, and with the node and image of `bench.guest_ours` (the loopback
sshd in front of the namespace's libvirtd, `debian-12` booted from kernel and initrd). The owner
(a Slack user whose e-mail the fake knows) registers an SSH key with `/workspace keys add`; each
run sends a signed `/workspace create NAME`, waits until the fake has received the ready DM,
reads the `ssh USER@HOST` line out of it and runs that line through the node as jump host.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.bare_guest import BenchError
from bench.guest_ours import diagnose, import_image, pinned, remove, wait_healthy, write_config
from bench.serve import _console_script, serve_environment, stop_process
from bench.slack_ack import FakeSlackThread, _pdeathsig
from tests.e2e.guest import GuestImage, Jump, SshNode, free_port, keypair
from tests.fakes.slack_payloads import signed_headers, slash_command

SIGNING_SECRET = "bench-signing-secret"  # a throw-away secret shared with the fake's requests
USER_ID = "UBENCH0001"
OWNER = "bench@example.com"
CHANNEL = "C111"
SSH_LINE = re.compile(r"`ssh ([a-z_][a-z0-9_.-]*)@([0-9A-Za-z.:-]+)`")
POLL = 0.02  # how often the benchmark looks at what the fake received


@dataclass
class SlackWorld:
    """A running serve with Slack on, its fake Slack, and the owner's key."""

    slack: FakeSlackThread
    api: httpx.Client
    env: dict[str, str]
    node: SshNode
    key: Path
    serve_log: Path

    def command(self, text: str) -> tuple[str, float]:
        """POST a signed `/workspace TEXT` to serve; its response_url id and the ack's seconds."""
        rid = secrets.token_hex(4)
        url = self.slack.fake.response_url(rid, channel=CHANNEL, user_id=USER_ID)
        body = slash_command(text, user_id=USER_ID, channel_id=CHANNEL, response_url=url)
        began = time.monotonic()
        answer = self.api.post(
            "/slack/events", content=body, headers=signed_headers(body, SIGNING_SECRET)
        )
        if answer.status_code != 200:
            verb = text.split(maxsplit=1)[0]
            raise BenchError(f"/workspace {verb}: serve answered {answer.status_code}")
        return rid, time.monotonic() - began

    def responses(self, rid: str) -> list[str]:
        """Texts serve posted to one command's response_url so far."""

        async def texts() -> list[str]:
            return [str(r.get("text", "")) for r in self.slack.fake.responses(rid)]

        return self.slack.call(texts())

    def seen(self) -> list[str]:
        """What the fake received, shortly: method, channel and the start of the text."""

        async def lines() -> list[str]:
            return [
                f"{c.method} {c.params.get('channel', '')} {str(c.params.get('text', ''))[:80]}"
                for c in self.slack.fake.calls
            ]

        return self.slack.call(lines())

    def dm(self, name: str) -> tuple[float, str] | None:
        """(when the fake received it, monotonic; its text and blocks) of the DM about `name`."""

        async def find() -> tuple[float, str] | None:
            for call in self.slack.fake.calls_of("chat.postMessage"):
                text = str(call.params.get("text", ""))
                if call.params.get("channel") == f"D{USER_ID}" and name in text:
                    return call.at, f"{text}\n{json.dumps(call.params.get('blocks'))}"
            return None

        return self.slack.call(find())


@contextlib.contextmanager
def slack_world(
    node: SshNode, image: GuestImage, log: Callable[[str], None]
) -> Iterator[SlackWorld]:
    """Fake Slack, serve (Slack on, node = the sshd), the image imported, the owner's key added."""
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-slack-")))
        key = keypair(work / "owner_key", "bench-owner")
        slack = FakeSlackThread()
        stack.callback(slack.close)  # after serve: its drain still talks to the fake
        slack.fake.add_user(USER_ID, email=OWNER)
        token = "prov_bench-" + secrets.token_urlsafe(24)
        env = serve_environment(
            work,
            free_port(),
            token,
            PROVISIONER_CONFIG=str(write_config(work / "provisioner.toml", node, image)),
            SLACK_BOT_TOKEN="xoxb-bench",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.fake.api_url,
        )
        log_path = work / "serve.log"
        process = _start_serve(env, log_path)
        stack.callback(stop_process, process)
        base = f"http://127.0.0.1:{env['PROVISIONER_PORT']}"
        auth = {"Authorization": f"Bearer {token}"}
        api = stack.enter_context(httpx.Client(base_url=base, headers=auth, timeout=30))
        wait_healthy(api, process, log_path)
        log(f"provisioner image import: {import_image(env, image):.1f} s")
        world = SlackWorld(slack, api, env, node, key, log_path)
        add_key(world)
        yield world


def _start_serve(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`provisioner serve` in its own session; the fake's thread already runs, so the child
    hook loads nothing (bench.slack_ack's `_pdeathsig`)."""
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [_console_script(), "serve"],
            env=env,
            cwd=log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pdeathsig(),  # noqa: PLW1509 (only calls a pre-resolved libc function)
        )


def add_key(world: SlackWorld) -> None:
    """`/workspace keys add KEY` as the owner; checked through GET /v1/keys."""
    public = Path(f"{world.key}.pub").read_text().strip()
    rid, _ = world.command(f"keys add {public}")
    deadline = time.monotonic() + 30
    while not world.responses(rid) and time.monotonic() < deadline:
        time.sleep(POLL)
    keys = world.api.get("/v1/keys", params={"owner": OWNER}).json().get("keys", [])
    if not any(k["public_key"].split()[1] == public.split()[1] for k in keys):
        raise BenchError(f"`keys add` did not store the key; Slack was told {world.responses(rid)}")


def wait_dm(world: SlackWorld, name: str, timeout: float) -> tuple[float, str]:
    """The ready DM about `name` (monotonic time the fake got it, its content); else BenchError."""
    deadline = time.monotonic() + timeout
    while (found := world.dm(name)) is None:
        if time.monotonic() > deadline:
            raise BenchError(f"no DM about {name} within {timeout:g} s")
        time.sleep(POLL)
    if "is ready" not in found[1].split("\n", 1)[0]:
        raise BenchError(f"the DM about {name} is not a ready DM: {found[1][:300]}")
    return found


def created(world: SlackWorld, name: str) -> tuple[str, str]:
    """The workspace id and its create operation's id (the operation from serve's database)."""
    deadline, ids = time.monotonic() + 30, list[str]()
    while not ids and time.monotonic() < deadline:  # the create runs after the ack
        listing = world.api.get("/v1/workspaces", params={"owner": OWNER, "limit": 200}).json()
        ids = [w["id"] for w in listing["workspaces"] if w["name"] == name]
        time.sleep(POLL)
    if not ids:
        raise BenchError(f"no workspace {name} 30 s after the command")
    ws_id = ids[0]
    path = world.env["PROVISIONER_DATABASE_URL"].split(":///", 1)[1]
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute(
            "SELECT id FROM operations WHERE workspace_id = ? AND kind = 'create'", (ws_id,)
        ).fetchone()
    return ws_id, str(row[0])


def create_once(world: SlackWorld, timeout: float) -> dict[str, Any]:
    """One `/workspace create NAME` → ready DM → its ssh line logs in; deleted afterwards."""
    name = f"sl-{secrets.token_hex(3)}"
    began, wall = time.monotonic(), time.time()
    rid, ack = world.command(f"create {name}")
    ws_id = op_id = ""
    try:
        ws_id, op_id = created(world, name)
        dm_at, content = wait_dm(world, name, timeout)
        found = SSH_LINE.search(content)
        if found is None:
            raise BenchError(f"the ready DM of {name} shows no `ssh USER@HOST` line: {content}")
        user, host = found.groups()
        with Jump(world.node.port, world.node.client_key, world.node.host_key) as jump:
            left = timeout - (time.monotonic() - began)
            jump.wait(host, user, world.key, left, host_key=pinned(world.env, ws_id))
            login = time.monotonic() - began
            guest = guest_profile(jump, host, user, world.key, pinned(world.env, ws_id), wall)
        op = world.api.get(f"/v1/operations/{op_id}").json()
        return {
            "name": name,
            "ack": ack,
            "dm": dm_at - began,
            "ssh": login,
            "ssh_line": found.group(0),
            "steps": {s["name"]: step_times(s, wall) for s in op["steps"]},
            "accepted": since(op["created_at"], wall),
            "guest": guest,
        }
    except BenchError as error:
        told, seen = world.responses(rid), "\n  ".join(world.seen()[-15:])
        if ws_id:
            seen += "\n" + diagnose(world.api, world.env, ws_id, world.node)
        raise BenchError(
            f"create {name}: {error}\nSlack was told: {told}\nfake saw:\n  {seen}"
        ) from None
    finally:
        if ws_id:
            remove(world.api, ws_id, op_id)


def since(stamp: str | None, wall: float) -> float | None:
    """Seconds from `wall` (time.time() at the request) to an ISO timestamp of the server."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - wall


def step_times(step: dict[str, Any], wall: float) -> dict[str, Any]:
    """A step's state, detail and start/end in seconds after the request."""
    return {
        "state": step["state"],
        "detail": step.get("detail"),
        "start": since(step.get("started_at"), wall),
        "end": since(step.get("finished_at"), wall),
    }


# Run as the owner after the timed login: the guest's clock, when sshd and each cloud-init stage
# were done, and what `cloud-init status --wait` costs once cloud-init has finished.
PROFILE = r"""
now=$(date +%s.%N); up=$(cut -d' ' -f1 /proc/uptime)
echo "clock $now $up"
echo "sshd $(systemctl show -P ActiveEnterTimestampMonotonic ssh.service)"
a=$(date +%s.%N); cloud-init status --wait >/dev/null 2>&1; b=$(date +%s.%N)
echo "status_cli $a $b"
echo "status_json $(tr -d '\n' < /run/cloud-init/status.json)"
"""


def guest_profile(
    jump: Jump, host: str, user: str, key: Path, host_key: str | None, wall: float
) -> dict[str, Any]:
    """Guest events in seconds after the request (host clock), from the guest's own records."""
    done = jump.run(host, user, key, ["sh", "-c", PROFILE], host_key=host_key, timeout=60)
    received = time.time()
    fields = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines()}
    if done.returncode != 0 or "clock" not in fields:
        return {"error": (done.stderr or done.stdout).strip()[-300:]}
    now, uptime = map(float, fields["clock"].split())
    offset = now - received  # guest clock minus host clock (±the output's trip back)
    booted = now - uptime - offset - wall  # the guest kernel's start, after the request
    a, b = map(float, fields["status_cli"].split())
    profile: dict[str, Any] = {
        "clock_offset": offset,
        "kernel_start": booted,
        "status_cli_s": b - a,
    }
    if fields.get("sshd", "").strip().isdigit():
        profile["sshd_active"] = booted + int(fields["sshd"]) / 1e6
    with contextlib.suppress(ValueError, KeyError, TypeError):
        stages = json.loads(fields["status_json"])["v1"]
        for stage in ("init-local", "init", "modules-config", "modules-final"):
            if stages.get(stage, {}).get("finished"):
                profile[f"{stage}_done"] = stages[stage]["finished"] - offset - wall
    return profile
