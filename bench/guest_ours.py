"""Part B of `guest_boot`: the same boot through `provisioner serve`, node = the loopback sshd.

`serve` gets a config (docs: CONTRACT.md §1-2) whose only node is the sshd on 127.0.0.1 (its host
key pinned, libvirt at qemu:///system of the namespace, pool `default`, network e2e-net) and
an image `debian-12` booted directly from kernel/initrd volumes. The image is imported with
`provisioner image import`. Each run is timed from sending POST /v1/workspaces (plan `small`:
1 vCPU, 1024 MiB, 10 GiB, as the baseline) until the create operation succeeded (it ends by
waiting for SSH) and then until our own `ssh -J` login through the node, as the workspace's
owner, runs `true`. The owner's SSH key is written into serve's database before the first
create (the API has no route for users' keys; Slack's `/workspace keys add` does the same).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.bare_guest import BenchError, lease_address, spread, virsh
from bench.serve import serve_environment, stop_process
from provisioner import settings
from provisioner.adapters.store.tables import ssh_keys
from provisioner.keys import parse_public_key
from provisioner.requests import login_name
from tests.e2e.guest import NETWORK, POOL, GuestImage, Jump, SshNode, free_port, keypair

OWNER = "bench@example.com"
IMAGE = "debian-12"
VOLUMES = {"base_volume": "debian-12.qcow2", "kernel": "debian-12.vmlinuz"}
VOLUMES["initrd"] = "debian-12.initrd.img"
POLL = 0.25
NOTABLE = re.compile(r"WARNING|ERROR|Traceback|[Dd]ata[Ss]ource|ssh_keys|cc_ssh|ci-info: no")
PR_SET_PDEATHSIG = 1


def _toml(value: Any) -> str:
    """A TOML value for strings, numbers and booleans (JSON's string escapes are TOML's)."""
    return json.dumps(value)


def write_config(path: Path, node: SshNode, image: GuestImage) -> Path:
    """The config of serve: one node (the loopback sshd) and the image `debian-12`."""
    entry: dict[str, Any] = {
        "ssh_host": "127.0.0.1",
        "ssh_port": node.port,
        "ssh_user": "root",
        "ssh_key": str(node.client_key),
        "host_key": node.host_key,
        "libvirt_uri": "qemu:///system",
        "pool": POOL,
        "network": NETWORK,
    }
    if "virt_type" in getattr(settings, "NODE_KEYS", ()):
        entry["virt_type"] = "qemu"  # /dev/kvm exists here but KVM guests hang
    lines = ["[nodes.bench]", *(f"{k} = {_toml(v)}" for k, v in entry.items())]
    lines += ["[nodes.bench.capacity]", "vcpus = 8", "memory_mib = 8192", "disk_gib = 200", ""]
    lines += [f"[images.{IMAGE}]", 'os = "debian12"']
    lines += [f"{k} = {_toml(v)}" for k, v in VOLUMES.items()]
    lines += [f"cmdline = {_toml(image.cmdline)}", ""]
    path.write_text("\n".join(lines))
    return path


def _console_script() -> str:
    """The `provisioner` console script of this virtualenv."""
    return str(Path(sys.executable).parent / "provisioner")


def _die_with_parent() -> None:
    """In the child: SIGTERM if the benchmark dies (Linux), so that serve is never orphaned."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def running_serve(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`provisioner serve` as a child in its own session; SIGTERM (then SIGKILL) at the end."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [_console_script(), "serve"],
            env=env,
            cwd=log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads yet)
        )
    try:
        yield process
    finally:
        stop_process(process)


def wait_healthy(client: httpx.Client, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once GET /healthz answers; BenchError with the log if serve dies or hangs."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"serve exited with {process.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if client.get("/healthz").status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"serve not healthy within 30 s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, without the access log's lines (the benchmark polls a lot)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join([line for line in text if "aiohttp.access" not in line][-lines:])


def import_image(env: dict[str, str], image: GuestImage) -> float:
    """`provisioner image import debian-12 base.qcow2 --kernel … --initrd … --cmdline …`."""
    argv = [_console_script(), "image", "import", IMAGE, str(image.base)]
    argv += ["--kernel", str(image.kernel), "--initrd", str(image.initrd)]
    argv += ["--cmdline", image.cmdline]
    began = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[1:4])} failed:\n{done.stdout}{done.stderr}")
    seconds = time.monotonic() - began
    volumes = {line.split()[0] for line in virsh("vol-list", POOL).splitlines() if line.strip()}
    missing = sorted(set(VOLUMES.values()) - volumes)
    if missing:
        raise BenchError(
            f"after the import the pool lacks {missing} (the config's volume names); "
            f"it holds {sorted(volumes)}"
        )
    return seconds


def add_owner_key(env: dict[str, str], public_key: str) -> None:
    """Store the owner's SSH key in serve's database, as `/workspace keys add` would."""
    line, fingerprint = parse_public_key(public_key)
    url = env["PROVISIONER_DATABASE_URL"].replace("sqlite+aiosqlite:", "sqlite:")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                ssh_keys.insert().values(
                    owner=OWNER,
                    fingerprint=fingerprint,
                    public_key=line,
                    created_at=datetime.now(UTC),
                )
            )
    finally:
        engine.dispose()


def wait_operation(client: httpx.Client, op_id: str, timeout: float) -> dict[str, Any]:
    """Poll the operation until it ends; its final JSON."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/operations/{op_id}")
        response.raise_for_status()
        op: dict[str, Any] = response.json()
        if op["state"] in {"succeeded", "failed", "cancelled"}:
            return op
        if time.monotonic() > deadline:
            raise BenchError(f"operation {op_id} not finished within {timeout:g} s: {op}")
        time.sleep(POLL)


def create_once(
    client: httpx.Client, env: dict[str, str], node: SshNode, key: Path, timeout: float
) -> dict[str, Any]:
    """One workspace: POST, operation succeeded, our SSH login; deleted afterwards."""
    name = f"bench-{secrets.token_hex(3)}"
    body = {"plan": "small", "image": IMAGE, "name": name, "owner": OWNER}
    started = time.monotonic()
    response = client.post("/v1/workspaces", json=body)
    if response.status_code != 202:
        raise BenchError(f"POST /v1/workspaces answered {response.status_code}: {response.text}")
    accepted = response.json()
    ws_id, op_id = accepted["workspace"]["id"], accepted["operation"]["id"]
    try:
        try:
            op = wait_operation(client, op_id, timeout)
        except BenchError as error:
            raise BenchError(f"{error}\n{diagnose(client, env, ws_id, node)}") from None
        succeeded = time.monotonic() - started
        if op["state"] != "succeeded":
            raise BenchError(f"create of {name} {op['state']}: {op.get('error')}\n{op['steps']}")
        ws = client.get(f"/v1/workspaces/{ws_id}").json()
        address = ws.get("address") or lease_address(ws["domain"])
        if not address:
            raise BenchError(f"workspace {name} has no address: {ws}")
        with Jump(node.port, node.client_key, node.host_key) as jump:
            left = timeout - (time.monotonic() - started)
            host_key = ws.get("guest_host_key") or pinned(env, ws_id)  # None: accept-new
            jump.wait(address, login_name(OWNER), key, left, host_key=host_key)
        return {
            "succeeded": succeeded,
            "ssh": time.monotonic() - started,
            "address": address,
            "steps": [(s["name"], s["state"], s.get("detail")) for s in op["steps"]],
            "step_s": step_seconds(op["steps"]),
        }
    finally:
        remove(client, ws_id, op_id)


def pinned(env: dict[str, str], ws_id: str) -> str | None:
    """The guest host key serve stored for a workspace (the API does not show it)."""
    path = env["PROVISIONER_DATABASE_URL"].split(":///", 1)[1]
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            row = db.execute("SELECT guest_host_key FROM workspaces WHERE id = ?", (ws_id,))
            found = row.fetchone()
    except sqlite3.Error:
        return None
    return str(found[0]) if found and found[0] else None


def diagnose(client: httpx.Client, env: dict[str, str], ws_id: str, node: SshNode) -> str:
    """What the workspace looks like, and which host key its guest really presents."""
    ws = client.get(f"/v1/workspaces/{ws_id}").json()
    lines = [f"workspace: {json.dumps(ws)}"]
    address = ws.get("address") or lease_address(ws.get("domain", ""))
    if address:
        with Jump(node.port, node.client_key, node.host_key) as jump:
            # No key pinned: accepted into the Jump's own known_hosts, which we then read.
            done = jump.run(address, "nobody", Path(os.devnull), ["true"], timeout=20)
            seen = jump.dir / f"known_hosts.{address}"
            presented = seen.read_text().strip() if seen.exists() else done.stderr.strip()
        lines.append(f"guest {address} presents: {presented or '(nothing)'}")
        pin = ws.get("guest_host_key") or pinned(env, ws_id) or "(none stored)"
        lines.append(f"the workspace pins:      {pin}")
    for console in Path("/var/log/libvirt/qemu").glob(f"{ws.get('domain')}*console*"):
        text = console.read_text(errors="replace").splitlines()
        notable = [line for line in text if NOTABLE.search(line)]
        lines += [f"--- {console}: cloud-init's warnings and key lines ---", *notable[-30:]]
    return "\n".join(lines)


def remove(client: httpx.Client, ws_id: str, op_id: str) -> None:
    """Cancel the create if it still runs, then delete the workspace (best effort)."""
    with contextlib.suppress(httpx.HTTPError, BenchError):
        op = client.get(f"/v1/operations/{op_id}").json()
        if op.get("state") not in {"succeeded", "failed", "cancelled"}:
            client.post(f"/v1/operations/{op_id}/cancel")
            wait_operation(client, op_id, 120)
        deleted = client.delete(f"/v1/workspaces/{ws_id}")
        if deleted.status_code == 202:
            wait_operation(client, deleted.json()["id"], 120)


def ours(
    node: SshNode, image: GuestImage, runs: int, timeout: float, log: Callable[[str], None]
) -> dict[str, Any]:
    """Import the image with the provisioner, then create `runs` workspaces one by one."""
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
        work = Path(tmp)
        key = keypair(work / "owner_key", "bench-owner")
        config = write_config(work / "provisioner.toml", node, image)
        token = "prov_bench-" + secrets.token_urlsafe(24)
        env = serve_environment(work, free_port(), token, PROVISIONER_CONFIG=str(config))
        log_path = work / "serve.log"
        with running_serve(env, log_path) as process:
            base = f"http://127.0.0.1:{env['PROVISIONER_PORT']}"
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
                wait_healthy(client, process, log_path)
                import_s = import_image(env, image)
                log(f"provisioner image import: {import_s:.1f} s")
                add_owner_key(env, Path(f"{key}.pub").read_text())
                done = []
                try:
                    for i in range(runs):
                        run = create_once(client, env, node, key, timeout)
                        log(
                            f"ours run {i + 1}/{runs}: POST → succeeded {run['succeeded']:.1f} s, "
                            f"→ SSH {run['ssh']:.1f} s ({run['address']})"
                        )
                        done.append(run)
                except (BenchError, httpx.HTTPError) as error:
                    kept = Path(tempfile.mkstemp(prefix="bench-guest-serve-", suffix=".log")[1])
                    shutil.copyfile(log_path, kept)
                    raise BenchError(
                        f"{type(error).__name__}: {error}\n--- end of the serve log "
                        f"(all of it: {kept}) ---\n{tail(log_path)}"
                    ) from None
    return {
        "import_s": round(import_s, 2),
        "runs": len(done),
        "post_to_succeeded_s": spread([r["succeeded"] for r in done]),
        "post_to_ssh_s": spread([r["ssh"] for r in done]),
        "each_post_to_ssh_s": [round(r["ssh"], 2) for r in done],
        "step_s": {
            name: spread([r["step_s"][name] for r in done if name in r["step_s"]])
            for name in done[-1]["step_s"]
        },
        "steps_of_last_run": done[-1]["steps"],
    }


def step_seconds(steps: list[dict[str, Any]]) -> dict[str, float]:
    """How long each step took, by the server's clock (steps without both stamps left out)."""
    took = {}
    for step in steps:
        if step.get("started_at") and step.get("finished_at"):
            began = datetime.fromisoformat(step["started_at"].replace("Z", "+00:00"))
            ended = datetime.fromisoformat(step["finished_at"].replace("Z", "+00:00"))
            took[step["name"]] = (ended - began).total_seconds()
    return took
