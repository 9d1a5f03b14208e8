"""Slack ack latency while creates run and one node hangs (issue goal: p99 ≤ 50 ms).

Starts a fake Slack (loopback, on a thread of this process) and a real `provisioner serve`
with Slack on and two nodes: `fast` (libvirt's test driver) and `hung`, which never answers.
With `--hang libvirt` (the default) `hung` is a libvirt URI whose UNIX socket accepts
connections and never answers, so libvirt calls for it block that node's thread; with
`--hang ssh` it is an SSH node on a loopback TCP port that accepts connections and never sends
a byte, so asyncssh waits for the server's banner until its connect timeout. It fires creates
through the token API (placement prefers `hung` at first, so some hang there), then sends
rounds of concurrent signed slash commands to POST /slack/events, with GET /healthz,
GET /v1/workspaces?limit=50 and GET /readyz in the same instant, from a separate load
process, and times each answer. Finally it checks that `hung` really hung.

    python -m bench.slack_ack [--hang libvirt|ssh] [--json] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bench.client import BenchError, wait_ready
from bench.report import interrupted, target_lines
from bench.serve import (
    PR_SET_PDEATHSIG,
    Serve,
    _console_script,
    _free_port,
    serve_environment,
    stop_process,
)
from bench.stats import Summary
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_payloads import signed_headers, slash_command

TARGET_P99_MS = 50.0
SIGNING_SECRET = "bench-signing-secret"  # a throw-away secret for the fake
STOP_SECONDS = 5.0  # the scratch database is thrown away: no need to wait out the drain
SMALL = 1024  # MiB of the `small` plan: `hung` starts with room for this many more than `fast`
HEAD_START = 10
REQUEST_TIMEOUT = 30.0
HANGS = ("libvirt", "ssh")
# How a call on `hung` fails once it gives up: the libvirt adapter's call timeout (and its
# fail-fast while the node thread is stuck), or the SSH link's connect timeout.
HANG_MESSAGES = (
    "did not answer within",
    "is not answering (stuck for",
    "did not complete an SSH handshake within",
)
T = TypeVar("T")
STUCK_FOR = re.compile(r"stuck for \d+ s")  # so a failure counts once, whatever the seconds
LISTENERS = {
    "libvirt": "its libvirt socket (silent UNIX socket)",
    "ssh": "its SSH port (silent TCP listener on 127.0.0.1)",
}
# What the load process times: its key in the results, and its row in the table.
KINDS = (
    ("slack_ack", "POST /slack/events → 200"),
    ("healthz", "GET /healthz"),
    ("list_workspaces", "GET /v1/workspaces?limit=50"),
    ("readyz", "GET /readyz"),
)


@dataclass(frozen=True)
class Options:
    """What to run, from the command line."""

    creates: int
    commands: int
    rounds: int
    probes: int
    gap: float
    warmup: int
    hang_wait: float
    mix: list[str]
    hang: str
    healthy: bool
    serve_log_level: str | None
    serve_command: list[str] | None


@dataclass(frozen=True)
class SshIdentity:
    """What the `hung` SSH node entry needs: serve's client key and the host key to pin."""

    client_key: Path
    host_key: str


def ssh_identity(tmp: Path) -> SshIdentity:
    """Two fresh ed25519 keys made with ssh-keygen: a client key, and a host key to pin.

    Nobody ever presents the host key (the listener never speaks); pinning it makes `hung` a
    trusted node that placement may pick, without a host-key approval first.
    """
    if shutil.which("ssh-keygen") is None:
        raise SystemExit("bench: --hang ssh needs ssh-keygen (the openssh-client package)")
    client, host = tmp / "bench_client_ed25519", tmp / "bench_host_ed25519"
    for path in (client, host):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.stem, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    return SshIdentity(client, host.with_suffix(".pub").read_text().strip())


def hung_entry(hang: HangListener, opts: Options, ssh: SshIdentity | None) -> dict[str, Any]:
    """How serve reaches `hung`: through the silent listener, or answering with `healthy`."""
    if opts.healthy:
        return {"libvirt_uri": "test:///default"}
    if ssh is None:
        return {"libvirt_uri": f"qemu+unix:///system?socket={hang.address}"}
    host, port = hang.address
    return {
        "libvirt_uri": "qemu:///system",
        "ssh_host": host,
        "ssh_port": port,
        "ssh_user": "bench",
        "ssh_key": str(ssh.client_key),
        "host_key": ssh.host_key,
    }


def nodes_file(hung: dict[str, Any]) -> list[dict[str, Any]]:
    """`fast` on the test driver; `hung` (as given) with the most free memory."""
    fast_mib = 512 * 1024
    return [
        {
            "name": "fast",
            "libvirt_uri": "test:///default",
            "capacity": {"vcpus": 1024, "memory_mib": fast_mib, "disk_gib": 1 << 16},
        },
        {
            "name": "hung",
            **hung,
            "capacity": {
                "vcpus": 1024,
                "memory_mib": fast_mib + HEAD_START * SMALL,
                "disk_gib": 1 << 16,
            },
        },
    ]


class HangListener:
    """A UNIX socket or loopback TCP port that accepts every connection and never says a word."""

    def __init__(self, unix_path: Path | None = None) -> None:
        if unix_path is not None:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(str(unix_path))
        else:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.bind(("127.0.0.1", 0))
        self.address: Any = self._listener.getsockname()  # a path, or (host, port)
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self._held: list[socket.socket] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hang-listener", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        """Keep every connection open and unanswered until released."""
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1

    def release(self) -> None:
        """Close everything: blocked libvirt calls and SSH connects fail at once, so serve exits."""
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
        for conn in self._held:
            conn.close()
        self._held.clear()


class FakeSlackThread:
    """FakeSlack served by its own event loop thread, so it answers while we block or measure."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-slack", daemon=True
        )
        self._cm: contextlib.AbstractAsyncContextManager[FakeSlack] = FakeSlack.running()
        self._thread.start()
        self.fake = self.call(self._cm.__aenter__())

    def call(self, work: Awaitable[T]) -> T:
        """Run a coroutine on the fake's loop and wait for its result."""

        async def wrapped() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(30)

    def counts(self) -> Counter[str]:
        """How many calls of each method the fake has seen (read on its own loop)."""

        async def count() -> Counter[str]:
            return Counter(call.method for call in self.fake.calls)

        return self.call(count())

    def warnings(self) -> list[str]:
        """Texts of response_url posts that report a problem to the user."""

        async def texts() -> list[str]:
            calls = self.fake.calls_of("response_url")
            found = (str(call.params.get("text", "")) for call in calls)
            return [text for text in found if text.startswith(":warning:")]

        return self.call(texts())

    def close(self) -> None:
        """Stop serving and end the thread."""
        try:
            self.call(self._cm.__aexit__(None, None, None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


@contextlib.contextmanager
def slack_serve(tmp: Path, api_url: str, nodes: Path, opts: Options) -> Iterator[Serve]:
    """`provisioner serve` with Slack on (HTTP mode, pointed at the fake) and our two nodes."""
    token = "prov_bench-" + secrets.token_urlsafe(24)
    port = _free_port()
    env = serve_environment(
        tmp,
        port,
        token,
        PROVISIONER_NODES=str(nodes),
        PROVISIONER_OPS_CHANNEL="COPS",
        SLACK_BOT_TOKEN="xoxb-bench",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=api_url,
    )
    if opts.serve_log_level is not None:
        env["PROVISIONER_LOG_LEVEL"] = opts.serve_log_level
    log_path = tmp / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            opts.serve_command or [_console_script(), "serve"],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pdeathsig(),  # noqa: PLW1509 (only calls a pre-resolved libc function)
        )
    try:
        yield Serve(f"http://127.0.0.1:{port}", token, process, "sqlite", log_path)
    finally:
        stop_process(process, STOP_SECONDS)


def _pdeathsig() -> Callable[[], None] | None:
    """A child hook asking for SIGTERM when we die (Linux), with libc resolved beforehand.

    Unlike bench.serve's hook it loads nothing in the child: our fake Slack and silent-socket
    threads already run, and a lock one of them held at fork time would stay held forever.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


@dataclass
class Timings:
    """Raw latencies in seconds and the statuses that were not 200."""

    seconds: list[float] = field(default_factory=list)
    bad: Counter[str] = field(default_factory=Counter)
    round_max: list[float] = field(default_factory=list)

    def add(self, status: str, seconds: float) -> None:
        """One answer."""
        self.seconds.append(seconds)
        if status != "200":
            self.bad[status] += 1

    def as_dict(self) -> dict[str, Any]:
        """Summary for the report (with each round's slowest answer when rounds were kept)."""
        out = {**Summary.of(self.seconds).as_dict(), "non_200": dict(self.bad)}
        if self.round_max:
            out["round_max"] = [round(s * 1000, 1) for s in self.round_max]
        return out


# ----- the load process: a lean blocking HTTP/1.1 client with its own interpreter -----------
# The fake Slack and the asyncio client of this process would share one GIL and one loop with
# the measurement; in a process of its own, a timestamp is taken the moment a response is whole.

_POOL: list[socket.socket] = []  # keep-alive connections of the load process, reused by rounds


def _load_init() -> None:
    """In the load process: Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _status_if_complete(buf: bytes) -> tuple[str, bool] | None:
    """(status, keep-alive) once `buf` holds a whole response with a Content-Length body."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if len(buf) - end - 4 < int(headers.get("content-length", "0")):
        return None
    return lines[0].split(" ")[1], headers.get("connection", "").lower() != "close"


def fire(port: int, requests: list[bytes], timeout: float) -> list[tuple[str, float]]:
    """Send each request on its own connection, all at once; (status, seconds) of each."""
    while len(_POOL) < len(requests):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _POOL.append(conn)
    conns = _POOL[: len(requests)]
    results = [("timeout", timeout)] * len(requests)
    bufs = [b""] * len(requests)
    started = [0.0] * len(requests)
    dead: set[socket.socket] = set()
    with selectors.DefaultSelector() as sel:
        for i, (conn, request) in enumerate(zip(conns, requests, strict=True)):
            started[i] = time.perf_counter()
            try:
                conn.sendall(request)
            except OSError as error:  # e.g. the server closed an idle connection
                results[i] = (type(error).__name__, time.perf_counter() - started[i])
                dead.add(conn)
                continue
            sel.register(conn, selectors.EVENT_READ, i)
        deadline = started[0] + timeout
        while sel.get_map() and (left := deadline - time.perf_counter()) > 0:
            for key, _ in sel.select(left):
                i = key.data
                conn = conns[i]
                try:
                    chunk = conn.recv(1 << 16)
                except OSError as error:
                    done: tuple[str, bool] | None = (type(error).__name__, False)
                else:
                    bufs[i] += chunk
                    done = _status_if_complete(bufs[i]) if chunk else ("closed", False)
                if done is not None:
                    results[i] = (done[0], time.perf_counter() - started[i])
                    sel.unregister(conn)
                    if not done[1]:
                        dead.add(conn)
        dead.update(conns[key.data] for key in sel.get_map().values())
    for conn in dead:
        conn.close()
        _POOL.remove(conn)
    return results


def raw_request(
    port: int, method: str, path: str, headers: dict[str, str], body: str = ""
) -> bytes:
    """One HTTP/1.1 request as bytes, keep-alive."""
    data = body.encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in {**headers, "Content-Length": str(len(data))}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI), in %."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(part.split("=") for part in first.split()[1:])
    return float(fields["avg10"])


@dataclass
class Run:
    """Everything one benchmark run needs."""

    server: Serve
    slack: FakeSlackThread
    hang: HangListener
    opts: Options
    users: list[str]
    load: ProcessPoolExecutor

    @property
    def auth(self) -> dict[str, str]:
        """Headers of the admin token."""
        return {"Authorization": f"Bearer {self.server.token}"}


def _command(run: Run, rnd: int, i: int) -> tuple[str, dict[str, str]]:
    """Command i of round `rnd` from user i, signed: the --mix in turn (`create` gets a name)."""
    user = run.users[i % len(run.users)]
    text = run.opts.mix[i % len(run.opts.mix)]
    if text == "create":
        text = f"create bench-{rnd}-{i}"
    rid = f"{rnd}-{i}"
    url = run.slack.fake.response_url(rid, channel="C111", user_id=user)
    body = slash_command(text, user_id=user, response_url=url)
    return body, signed_headers(body, SIGNING_SECRET)


async def burst(run: Run, rnd: int, commands: int, probes: int) -> list[tuple[str, str, float]]:
    """One round: `commands` at once, with `probes` of each GET sent in the same instant."""
    port = int(run.server.url.rsplit(":", 1)[1])
    jobs: list[tuple[str, bytes]] = []
    for i in range(commands):  # built and signed before anything is sent
        body, headers = _command(run, rnd, i)
        jobs.append(("slack_ack", raw_request(port, "POST", "/slack/events", headers, body)))
    listing = raw_request(port, "GET", "/v1/workspaces?limit=50", run.auth)
    for _ in range(probes):
        jobs.append(("healthz", raw_request(port, "GET", "/healthz", {})))
        jobs.append(("list_workspaces", listing))
        jobs.append(("readyz", raw_request(port, "GET", "/readyz", {})))
    loop = asyncio.get_running_loop()
    answers = await loop.run_in_executor(
        run.load, fire, port, [raw for _, raw in jobs], REQUEST_TIMEOUT
    )
    pairs = zip(jobs, answers, strict=True)
    return [(kind, status, seconds) for (kind, _), (status, seconds) in pairs]


async def call_api(
    run: Run, session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> dict[str, Any]:
    """One token-API call; its JSON body, or BenchError on any non-2xx answer."""
    url = run.server.url + path
    async with session.request(method, url, headers=run.auth, **kwargs) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        if response.status >= 300:
            raise BenchError(f"{method} {path} answered {response.status}: {body}")
        return body


async def start_creates(run: Run, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """Fire the API creates at once; their create operations (with the node) as accepted."""
    answers = await asyncio.gather(
        *(
            call_api(
                run,
                session,
                "POST",
                "/v1/workspaces",
                json={"plan": "small", "image": "debian-12", "name": f"api-{i}"},
            )
            for i in range(run.opts.creates)
        )
    )
    return [{**a["operation"], "node": a["workspace"]["node"]} for a in answers]


async def operations(
    run: Run, session: aiohttp.ClientSession, ops: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The current state of each operation."""
    found = await asyncio.gather(
        *(call_api(run, session, "GET", f"/v1/operations/{op['id']}") for op in ops)
    )
    return [{**now, "node": op["node"]} for op, now in zip(ops, found, strict=True)]


async def workspaces_by_node(run: Run, session: aiohttp.ClientSession) -> dict[str, Any]:
    """Every workspace (the Slack-made ones too) counted by node and state."""
    counts: dict[str, Counter[str]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = await call_api(run, session, "GET", "/v1/workspaces", params=params)
        for ws in page["workspaces"]:
            counts.setdefault(ws["node"], Counter())[ws["state"]] += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return {node: dict(c) for node, c in sorted(counts.items())}


async def wait_for_hang(
    run: Run, session: aiohttp.ClientSession, ops: list[dict[str, Any]]
) -> float:
    """Seconds until serve connected to the silent listener and a `hung` operation runs."""
    began = time.perf_counter()
    if run.opts.healthy:
        return 0.0
    while time.perf_counter() - began < run.opts.hang_wait:
        if run.hang.accepted:
            current = await operations(run, session, [op for op in ops if op["node"] == "hung"])
            if any(op["state"] == "running" for op in current):
                return time.perf_counter() - began
        await asyncio.sleep(0.1)
    raise BenchError(f"node `hung` was not contacted within {run.opts.hang_wait:g} s")


def _hang_explains(op: dict[str, Any]) -> bool:
    """Whether a create on `hung` is stuck, waits for `hung`'s share of workers, or failed."""
    error = op.get("error") or ""
    return op["state"] in ("running", "pending") or (
        op["state"] == "failed" and any(text in error for text in HANG_MESSAGES)
    )


async def evidence(
    run: Run, session: aiohttp.ClientSession, ops: list[dict[str, Any]]
) -> dict[str, Any]:
    """Proof that `hung` really hung during the measurement, and what the fast node did."""
    current = await operations(run, session, ops)
    by_node: dict[str, Counter[str]] = {}
    for op in current:
        by_node.setdefault(op["node"], Counter())[op["state"]] += 1
    on_hung = [op for op in current if op["node"] == "hung"]
    stuck = [
        {"step": s["name"], "started_at": s["started_at"]}
        for op in on_hung
        if op["state"] == "running"
        for s in op["steps"]
        if s["state"] == "running"
    ]
    failures = Counter(
        STUCK_FOR.sub("stuck for … s", s["detail"] or "")
        for op in on_hung
        for s in op["steps"]
        if s["state"] == "failed"
    )
    start = time.perf_counter()
    async with session.get(run.server.url + "/readyz") as response:
        ready = await response.json(content_type=None)
        ready_status = response.status
    ready_s = time.perf_counter() - start
    everything = await workspaces_by_node(run, session)
    return {
        "hang_socket_connections": run.hang.accepted,
        "all_workspaces_by_node_and_state": everything,
        "api_creates_by_node_and_state": {n: dict(c) for n, c in sorted(by_node.items())},
        "hung_steps_running": stuck[:3],
        "hung_steps_running_count": len(stuck),
        "hung_step_failures": failures.most_common(3),
        "readyz": {"status": ready_status, "seconds": round(ready_s, 3), "body": ready},
        "hung_confirmed": bool(
            run.hang.accepted
            and on_hung
            and all(_hang_explains(op) for op in on_hung)
            and not everything.get("hung", {}).get("running")
            and ready.get("nodes", {}).get("hung", "ok") != "ok"
        ),
    }


async def measure(run: Run) -> dict[str, Any]:
    """Creates, wait for the hang, warm up, then the measured rounds and the evidence."""
    await wait_ready(run.server)
    timings = {kind: Timings() for kind, _ in KINDS}
    warm = Timings()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        ops = await start_creates(run, session)
        hang_after = await wait_for_hang(run, session, ops)
        for _, status, seconds in await burst(run, -1, run.opts.warmup, 0):
            warm.add(status, seconds)
        cpu0, started = run.server.cpu_seconds(), time.perf_counter()
        pressure = []
        for rnd in range(run.opts.rounds):
            answers = await burst(run, rnd, run.opts.commands, run.opts.probes)
            for kind, status, seconds in answers:
                timings[kind].add(status, seconds)
            acks = [seconds for kind, _, seconds in answers if kind == "slack_ack"]
            timings["slack_ack"].round_max.append(max(acks))
            pressure.append(cpu_pressure())
            await asyncio.sleep(run.opts.gap)
        wall = time.perf_counter() - started
        cpu1 = run.server.cpu_seconds()
        await asyncio.sleep(1.0)  # let the last round's follow-up work reach the fake
        calls = run.slack.counts()
        hang = await evidence(run, session, ops)
    known = [p for p in pressure if p is not None]
    return {
        "environment": _environment(run.opts),
        "hang_established_after_s": round(hang_after, 3),
        **{kind: t.as_dict() for kind, t in timings.items()},
        "warmup_ack": warm.as_dict(),
        "wall_s": round(wall, 3),
        "serve_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 3),
        "cpu_pressure_avg10_pct": round(max(known), 1) if known else None,
        "fake_slack_calls": dict(sorted(calls.items())),
        "slack_warnings": Counter(run.slack.warnings()).most_common(3),
        "hang": hang,
    }


def _environment(opts: Options) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpus": cpus,
        "python": sys.version.split()[0],
        "database": "sqlite",
        "api_creates": opts.creates,
        "commands_per_round": opts.commands,
        "rounds": opts.rounds,
        "probes_per_round": opts.probes,
        "gap_s": opts.gap,
        "mix": opts.mix,
        "hang": opts.hang,
        "healthy_baseline": opts.healthy,
        "serve_command": opts.serve_command,
        "loadavg_at_end": os.getloadavg(),
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goal, and the precondition that makes the number mean something."""
    p99 = results["slack_ack"]["p99"]
    bad = sum(results["slack_ack"]["non_200"].values())
    return [
        {
            "name": "Slack ack p99 (50 concurrent commands, creates running, node hung)",
            "limit": f"≤ {TARGET_P99_MS:g} ms",
            "value": f"{p99:.1f} ms",
            "met": p99 <= TARGET_P99_MS,
        },
        {
            "name": "every Slack ack is a 200",
            "limit": "0 others",
            "value": str(bad),
            "met": bad == 0,
        },
        {
            "name": "node `hung` really hung during the run",
            "limit": "yes",
            "value": "yes" if results["hang"]["hung_confirmed"] else "no",
            "met": results["hang"]["hung_confirmed"],
        },
    ]


def _latency_rows(results: dict[str, Any]) -> list[str]:
    """Percentile rows with the count of answers that were not 200."""
    lines = [f"  {'':30}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}   (ms)   non-200"]
    for key, label in KINDS:
        s = results[key]
        bad = ", ".join(f"{status}: {n}" for status, n in s["non_200"].items()) or "none"
        lines.append(
            f"  {label:30}{s['n']:6d}{s['p50']:9.1f}{s['p90']:9.1f}{s['p99']:9.1f}"
            f"{s['max']:9.1f}          {bad}"
        )
    return lines


def _hang_lines(results: dict[str, Any]) -> list[str]:
    """What shows that node `hung` hung."""
    hang = results["hang"]
    by_node = "; ".join(
        f"{node} {states}" for node, states in hang["api_creates_by_node_and_state"].items()
    )
    example = hang["hung_steps_running"][:1]
    since = f" (e.g. {example[0]['step']} since {example[0]['started_at']})" if example else ""
    ready = hang["readyz"]
    listener = LISTENERS[results["environment"]["hang"]]
    lines = [
        f"hung node: {listener} accepted {hang['hang_socket_connections']} connection(s); "
        f"a create ran on `hung` {results['hang_established_after_s']:.2f} s after the "
        "creates were accepted",
        f"  API creates by node and state at the end: {by_node}",
        "  all workspaces by node and state: "
        + "; ".join(f"{n} {c}" for n, c in hang["all_workspaces_by_node_and_state"].items()),
        f"  steps still running on `hung`: {hang['hung_steps_running_count']}{since}",
    ]
    for text, count in hang["hung_step_failures"]:
        lines.append(f"  steps failed on `hung` ({count}): {text}")
    lines.append(
        f"  /readyz answered {ready['status']} in {ready['seconds']:.2f} s: "
        f"nodes {ready['body'].get('nodes')}"
    )
    return lines


def table(results: dict[str, Any]) -> str:
    """The report as aligned text."""
    env = results["environment"]
    cpu = results["serve_cpu_s"]
    calls = ", ".join(f"{method} {n}" for method, n in results["fake_slack_calls"].items())
    load = ", ".join(f"{x:.1f}" for x in env["loadavg_at_end"])
    node = "answering (--healthy baseline)" if env["healthy_baseline"] else f"hung ({env['hang']})"
    lines = [
        f"Slack ack, node `hung` {node}: {env['cpus']} CPUs (load {load}), "
        f"Python {env['python']}, {env['database']}",
        f"{env['api_creates']} API creates, then {env['rounds']} rounds of "
        f"{env['commands_per_round']} commands ({', '.join(env['mix'])} in turn) "
        f"+ {env['probes_per_round']} of each GET, {env['gap_s']:g} s apart",
        "",
        *_latency_rows(results),
        "  slowest ack per round: "
        + " ".join(f"{ms:.0f}" for ms in results["slack_ack"].get("round_max", [])),
        "",
        f"  rounds took {results['wall_s']:.2f} s; serve CPU {cpu} s; "
        f"worst CPU pressure after a round {results['cpu_pressure_avg10_pct']}% (PSI avg10)",
        f"  fake Slack saw: {calls}",
    ]
    for text, count in results["slack_warnings"]:
        lines.append(f"  users were told ({count} times): {text[:100]}")
    lines += ["", *_hang_lines(results), "", "targets:"]
    return "\n".join(lines + target_lines(results))


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.slack_ack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--creates", type=int, default=20, metavar="N", help="API creates fired first (20)")
    add("--commands", type=int, default=50, metavar="N", help="slash commands per round (50)")
    add("--rounds", type=int, default=10, metavar="N", help="measured rounds (10)")
    add("--probes", type=int, default=5, metavar="N", help="of each GET per round (5)")
    add("--gap", type=float, default=1.0, help="seconds between rounds (1)")
    add("--warmup", type=int, default=4, metavar="N", help="unmeasured commands first (4)")
    add("--hang-wait", type=float, default=30.0, help="seconds to wait for the hang to show (30)")
    add("--mix", default="list,create", help="commands in turn, e.g. help,list (list,create)")
    add(
        "--hang",
        choices=HANGS,
        default="libvirt",
        help="how `hung` hangs: its libvirt socket or its SSH port never answers (libvirt)",
    )
    add("--healthy", action="store_true", help="comparison run: node `hung` answers too")
    add("--serve-log-level", help="PROVISIONER_LOG_LEVEL for serve (default: serve's own)")
    add("--serve-command", help="run this instead of `provisioner serve`")
    add("--json", action="store_true", help="print one JSON document instead of a table")
    add("--check", action="store_true", help="exit 1 when a target is missed")
    return parser


def run_benchmark(opts: Options) -> dict[str, Any] | None:
    """Set everything up, measure, tear down in order; None (after a message) on failure."""
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="provisioner-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        slack = FakeSlackThread()
        stack.callback(slack.close)  # last: serve's drain still talks to it
        users = [f"UB{i:04d}" for i in range(opts.commands)]
        for i, user in enumerate(users):
            slack.fake.add_user(user, email=f"bench{i}@example.com")
        ssh = opts.hang == "ssh" and not opts.healthy
        identity = ssh_identity(tmp) if ssh else None
        hang = HangListener(None if ssh else tmp / "hang.sock")
        nodes = tmp / "nodes.json"
        nodes.write_text(json.dumps(nodes_file(hung_entry(hang, opts, identity))))
        server = stack.enter_context(slack_serve(tmp, slack.fake.api_url, nodes, opts))
        stack.callback(hang.release)  # first: unblock the node thread so serve can exit
        load = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), _load_init)
        stack.callback(load.shutdown, cancel_futures=True)
        try:
            return asyncio.run(measure(Run(server, slack, hang, opts, users, load)))
        except (BenchError, aiohttp.ClientError, OSError) as error:
            print(f"bench: {type(error).__name__}: {error}", file=sys.stderr)
            print(f"--- end of the serve log ---\n{server.log_tail()}", file=sys.stderr)
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 on a missed target with --check, 2 on failure."""
    args = _parser().parse_args(argv)
    opts = Options(
        creates=max(args.creates, 1),
        commands=max(args.commands, 1),
        rounds=max(args.rounds, 1),
        probes=max(args.probes, 0),
        gap=max(args.gap, 0.0),
        warmup=max(args.warmup, 0),
        hang_wait=args.hang_wait,
        hang=args.hang,
        mix=[word.strip() for word in args.mix.split(",") if word.strip()] or ["list"],
        healthy=args.healthy,
        serve_log_level=args.serve_log_level,
        serve_command=shlex.split(args.serve_command) if args.serve_command else None,
    )
    signal.signal(signal.SIGTERM, interrupted)
    try:
        results = run_benchmark(opts)
    except KeyboardInterrupt:
        print("bench: interrupted; server stopped and scratch data removed", file=sys.stderr)
        return 130
    if results is None:
        return 2
    results["targets"] = targets(results)
    print(json.dumps(results, indent=2) if args.json else table(results))
    missed = not all(target["met"] for target in results["targets"])
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
