"""`GET /v1/workspaces` under load with 10 000 workspaces, and the memory of an idle serve.

Starts a real `provisioner serve` on a fresh database (SQLite by default), reads its RSS once
start-up has settled, seeds workspaces straight into its database (bypassing the API, which
creates ~30 per second), then loads the listing for a fixed time per scenario with `wrk` (or
an aiohttp client when wrk is missing): the first page, deep pages via cursor, and the first
page of one owner.

    python -m bench.list_workspaces [--database-url postgresql+asyncpg://...] [--json] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.client import BenchError, wait_ready
from bench.report import interrupted, target_lines
from bench.serve import Serve, serve
from bench.stats import Summary
from provisioner.adapters.store.tables import workspaces

TARGET_P99_MS = 30.0
TARGET_RPS = 800.0
TARGET_IDLE_RSS_MB = 120.0  # MB = 10^6 bytes, the stricter reading of the issue
# One in twenty seeded workspaces is failed and three are stopped; the rest run.
STATES = ("failed",) + ("stopped",) * 3 + ("running",) * 16
WRK_MARK = "BENCH-RESULT "
SPIN_LOOPS = 1_000_000
WRK_SCRIPT = """
local paths = {%(paths)s}
local threads, started = {}, 0
wrk.headers["Authorization"] = %(auth)s

function setup(thread)
  thread:set("offset", started)
  started = started + 1
  table.insert(threads, thread)
end

function init(args) n = offset; non200 = 0 end

function request()
  n = n + 1
  return wrk.format("GET", paths[n %% #paths + 1])
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  local bad, e = 0, summary.errors
  for _, t in ipairs(threads) do bad = bad + t:get("non200") end
  io.write(string.format(
    '%(mark)s{"requests": %%d, "seconds": %%.6f, "non200": %%d, "socket_errors": %%d, ' ..
    '"p50": %%.1f, "p90": %%.1f, "p99": %%.1f, "max": %%.1f, "mean": %%.1f}\\n',
    summary.requests, summary.duration / 1e6, bad, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3))
end
"""


@dataclass
class Options:
    """What to run, from the command line."""

    database_url: str | None
    workspaces: int
    owners: int
    page: int
    connections: int
    threads: int
    duration: float
    warmup: float
    client: str
    serve_log_level: str | None
    serve_command: list[str] | None
    http_processes: int = 1


@dataclass
class Load:
    """One scenario's outcome: counts, latency in ms and CPU seconds."""

    requests: int = 0
    seconds: float = 0.0
    non200: int = 0
    socket_errors: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    serve_cpu_s: float | None = None
    loop_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    spin_ms: tuple[float, float] = (math.nan, math.nan)  # before and after
    postgres_cpu_s: float = 0.0
    new_connections: int | None = None  # database connections opened (pool churn)
    machine_busy: float | None = None  # percent of all cores

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for the report and --json."""
        rate = self.requests / self.seconds if self.seconds else 0.0
        per_request = None
        if self.serve_cpu_s is not None and self.requests:
            per_request = round(self.serve_cpu_s * 1000 / self.requests, 3)
        loop_busy = loop_per_request = None
        if self.loop_cpu_s is not None and self.seconds and self.requests:
            loop_busy = round(100 * self.loop_cpu_s / self.seconds, 1)
            loop_per_request = round(self.loop_cpu_s * 1000 / self.requests, 3)
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(rate, 1),
            "latency_ms": self.latency_ms,
            "errors": self.non200 + self.socket_errors,
            "non200": self.non200,
            "socket_errors": self.socket_errors,
            "serve_cpu_ms_per_request": per_request,
            "postgres_cpu_ms_per_request": round(self.postgres_cpu_s * 1000 / self.requests, 3)
            if self.requests
            else None,
            "event_loop_busy_percent": loop_busy,
            # The loop is one thread: 1000 / this is the most req/s serve can do on any cores.
            "event_loop_cpu_ms_per_request": loop_per_request,
            "client_cpu_s": round(self.client_cpu_s, 3),
            "postgres_cpu_s": round(self.postgres_cpu_s, 3),
            "new_db_connections": self.new_connections,
            "machine_busy_percent": self.machine_busy,
            "others_cpu_cores": self._others(),
            "spin_ms_before_after": list(self.spin_ms),
        }

    def _others(self) -> float | None:
        """Cores busy with neither serve, the client nor its PostgreSQL backends: others' noise."""
        if self.machine_busy is None or self.serve_cpu_s is None or not self.seconds:
            return None
        ours = self.serve_cpu_s + self.client_cpu_s + self.postgres_cpu_s
        cores = self.machine_busy / 100 * (os.cpu_count() or 1)
        return round(max(cores - ours / self.seconds, 0.0), 2)


def _proc_kib(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/PID/status (VmRSS, VmHWM), or None off Linux or once it exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _mb(kib: int | None) -> float | None:
    """KiB as MB (10^6 bytes)."""
    return None if kib is None else round(kib * 1024 / 1e6, 1)


def _machine_ticks() -> tuple[int, int] | None:
    """Busy and total CPU ticks of the whole machine, all cores (/proc/stat)."""
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def _backends(database: str | None) -> dict[int, int]:
    """CPU ticks of each PostgreSQL backend serving `database` (found by its process title)."""
    found: dict[int, int] = {}
    if database is None:
        return found
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if not title.startswith("postgres: ") or f" {database} " not in title:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        found[int(proc.name)] = int(fields[11]) + int(fields[12])
    return found


def _backends_cpu(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds the backends used in between; a lower bound, as exited ones are not seen."""
    ticks = sum(used - before.get(pid, 0) for pid, used in after.items())
    return ticks / os.sysconf("SC_CLK_TCK")


def spin_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): this host's speed right now.

    Other tenants of a virtual machine's host can double it without any process here showing
    it (steal time stays 0), and every other number of a run moves with it.
    """
    best = math.inf
    for _ in range(3):
        began, total = time.perf_counter(), 0
        for i in range(SPIN_LOOPS):
            total += i
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 1)


def _threads(pid: int) -> set[int]:
    """Thread ids of a process (each aiosqlite connection runs in a thread of its own)."""
    try:
        return {int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()}
    except OSError:
        return set()


def _loop_cpu(pid: int) -> float | None:
    """CPU seconds of serve's main thread, the one running the event loop."""
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


async def idle_rss(server: Serve, limit: float = 20.0) -> dict[str, Any]:
    """RSS once four readings half a second apart agree within 1 % (or after `limit` s)."""
    readings: list[int] = []
    began = time.monotonic()
    while time.monotonic() - began < limit:
        await asyncio.sleep(0.5)
        kib = _proc_kib(server.process.pid, "VmRSS")
        if kib is None:
            raise BenchError("cannot read serve's VmRSS from /proc")
        readings.append(kib)
        last = readings[-4:]
        if len(last) == 4 and max(last) - min(last) <= max(last) / 100:
            break
    return {"rss_mb": _mb(readings[-1]), "settled_after_s": round(time.monotonic() - began, 1)}


def _database_url(server: Serve) -> str:
    """The database URL serve was started with (its environment, as bench.serve set it)."""
    environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        key, _, value = item.decode().partition("=")
        if key == "PROVISIONER_DATABASE_URL":
            return value
    raise BenchError("serve's environment has no PROVISIONER_DATABASE_URL")


def _rows(count: int, owners: int, now: datetime) -> list[dict[str, Any]]:
    """`count` workspaces created over the last 30 days, ids in creation order."""
    rng = random.Random(20261121)  # the same owners and states on every run
    first_ms = int((now - timedelta(days=30)).timestamp() * 1000)
    step_ms = max(timedelta(days=30) // timedelta(milliseconds=1) // count, 1)
    rows = []
    for i in range(count):
        ms = first_ms + i * step_ms
        created = datetime.fromtimestamp(ms / 1000, UTC)
        ws_id = f"ws_{ms:012x}{secrets.token_hex(5)}"
        name, state = f"seed-{i:05d}", STATES[i % len(STATES)]
        running = state == "running"
        rows.append(
            {
                "id": ws_id,
                "name": name,
                "owner": f"dev{rng.randrange(owners):03d}@example.com",
                "plan": "small",
                "image": "debian-12",
                "node": "local",
                "state": state,
                "domain_name": f"ws-{name}-{ws_id[-6:]}",
                "vcpus": 1,
                "memory_mib": 1024,
                "disk_gib": 10,
                "tailscale_hostname": f"ws-{name}" if running else None,
                "tailscale_ip": f"100.64.{i // 250}.{i % 250 + 1}" if running else None,
                "tailscale_tags": ["tag:workspace"] if running else [],
                "error": "define_domain: node local refused the domain"
                if state == "failed"
                else None,
                "created_at": created,
                "updated_at": created + timedelta(seconds=40),
                # Far ahead, so serve's TTL job does not start deleting during the run.
                "expires_at": now + timedelta(days=60),
            }
        )
    return rows


async def seed(url: str, count: int, owners: int) -> float:
    """Insert the workspaces in one transaction; seconds it took."""
    rows = _rows(count, owners, datetime.now(UTC))
    began = time.perf_counter()
    sqlite = url.startswith("sqlite")
    engine = create_async_engine(url, connect_args={"timeout": 30} if sqlite else {})
    try:
        async with engine.begin() as conn:
            await conn.execute(workspaces.insert(), rows)
            if not sqlite:  # what autovacuum would do soon; SQLite has no such thing
                await conn.execute(sa.text("ANALYZE workspaces"))
    finally:
        await engine.dispose()
    return time.perf_counter() - began


async def walk(server: Serve, page: int) -> tuple[list[str], int]:
    """Walk every page through the API: the cursors met, and how many workspaces it listed."""
    found: list[str] = []
    listed = 0
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        params = {"limit": str(page)}
        while True:
            async with session.get(server.url + "/v1/workspaces", params=params) as response:
                body = await response.json()
                if response.status != 200:
                    raise BenchError(f"listing answered {response.status}: {body}")
            listed += len(body["workspaces"])
            if body["next_cursor"] is None:
                return found, listed
            found.append(body["next_cursor"])
            params["cursor"] = body["next_cursor"]


def scenarios(opts: Options, walked: list[str]) -> dict[str, list[str]]:
    """Request paths of each scenario; a scenario's requests cycle through its paths."""
    page = f"/v1/workspaces?limit={opts.page}"
    deep = walked[len(walked) // 2 :]  # from the middle page to the last
    owners = [f"dev{i:03d}@example.com" for i in range(opts.owners)]
    return {
        "first page": [page],
        f"deep pages (cursor, {len(deep)} pages)": [f"{page}&cursor={c}" for c in deep],
        f"owner filter ({len(owners)} owners)": [f"{page}&owner={quote(o)}" for o in owners],
    }


async def _wrk(server: Serve, paths: list[str], opts: Options, seconds: float) -> Load:
    """Run wrk against `paths`; what its Lua `done` reported."""
    lua = WRK_SCRIPT % {
        "paths": ", ".join(json.dumps(p) for p in paths),
        "auth": json.dumps(f"Bearer {server.token}"),
        "mark": WRK_MARK,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua)
        script.flush()
        args = [f"-t{opts.threads}", f"-c{opts.connections}", f"-d{seconds:g}s", "--timeout=10s"]
        process = await asyncio.create_subprocess_exec(
            "wrk", *args, "-s", script.name, server.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
    marked = [line for line in out.decode().splitlines() if line.startswith(WRK_MARK)]
    if process.returncode != 0 or not marked:
        raise BenchError(f"wrk failed ({process.returncode}): {err.decode()}{out.decode()}")
    raw = json.loads(marked[0][len(WRK_MARK) :])
    latency = {key: raw[key] for key in ("p50", "p90", "p99", "max", "mean")}
    load = Load(raw["requests"], raw["seconds"], raw["non200"], raw["socket_errors"], latency)
    return load


async def _aiohttp(server: Serve, paths: list[str], opts: Options, seconds: float) -> Load:
    """The fallback client: `connections` loops, each one request at a time."""
    load, latencies = Load(), []
    headers = {"Authorization": f"Bearer {server.token}"}
    connector = aiohttp.TCPConnector(limit=opts.connections)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        began = time.perf_counter()

        async def loop(k: int) -> None:
            while time.perf_counter() - began < seconds:
                start = time.perf_counter()
                try:
                    async with session.get(server.url + paths[k % len(paths)]) as response:
                        await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    load.socket_errors += 1
                    continue
                latencies.append(time.perf_counter() - start)
                load.non200 += response.status != 200
                k += opts.connections

        await asyncio.gather(*(loop(k) for k in range(opts.connections)))
        load.seconds = time.perf_counter() - began
    load.requests, summary = len(latencies), Summary.of(latencies).as_dict()
    load.latency_ms = {key: summary[key] for key in ("p50", "p90", "p99", "max", "mean")}
    return load


@dataclass(frozen=True)
class Snapshot:
    """Counters read just before and just after a run."""

    serve: float | None
    loop: float | None
    machine: tuple[int, int] | None
    children: float  # CPU seconds of waited-for children: the wrk runs
    own: float
    backends: dict[int, int]
    threads: set[int]

    @classmethod
    def take(cls, server: Serve, database: str | None) -> Snapshot:
        """Read every counter now."""
        pid = server.process.pid
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            serve=server.cpu_seconds(),
            loop=_loop_cpu(pid),
            machine=_machine_ticks(),
            children=children.ru_utime + children.ru_stime,
            own=time.process_time(),
            backends=_backends(database),
            threads=_threads(pid),
        )


def _account(load: Load, before: Snapshot, after: Snapshot, database: str | None) -> None:
    """Store in `load` what the counters moved by during the run."""
    if before.serve is not None and after.serve is not None:
        load.serve_cpu_s = after.serve - before.serve
    if before.loop is not None and after.loop is not None:
        load.loop_cpu_s = after.loop - before.loop
    if before.machine and after.machine and after.machine[1] > before.machine[1]:
        busy = (after.machine[0] - before.machine[0]) / (after.machine[1] - before.machine[1])
        load.machine_busy = round(100 * busy, 1)
    load.client_cpu_s = after.children - before.children + after.own - before.own
    load.postgres_cpu_s = _backends_cpu(before.backends, after.backends)
    if database is None:  # SQLite: each aiosqlite connection is a thread of serve
        load.new_connections = len(after.threads - before.threads)
    else:
        load.new_connections = len(after.backends.keys() - before.backends.keys())


async def run_load(
    server: Serve, paths: list[str], opts: Options, seconds: float, database: str | None
) -> Load:
    """One timed run with the chosen client, with the CPU time of everyone involved."""
    spin0 = spin_ms()
    before = Snapshot.take(server, database)
    if opts.client == "wrk":
        load = await _wrk(server, paths, opts, seconds)
    else:
        load = await _aiohttp(server, paths, opts, seconds)
    after = Snapshot.take(server, database)
    if server.process.poll() is not None:
        raise BenchError(f"serve exited with {server.process.returncode} under load")
    _account(load, before, after, database)
    load.spin_ms = (spin0, spin_ms())
    return load


async def measure(server: Serve, opts: Options) -> dict[str, Any]:
    """Idle memory, seeding, then each scenario after a warm-up run."""
    await wait_ready(server)
    idle = await idle_rss(server)
    url = _database_url(server)
    seeded_in = await seed(url, opts.workspaces, opts.owners)
    walked, listed = await walk(server, opts.page)
    if listed != opts.workspaces:
        raise BenchError(f"the API lists {listed} workspaces, {opts.workspaces} were seeded")
    database = None if server.database == "sqlite" else sa.make_url(url).database
    results: dict[str, Any] = {}
    for name, paths in scenarios(opts, walked).items():
        if opts.warmup > 0:
            await run_load(server, paths, opts, opts.warmup, database)
        load = await run_load(server, paths, opts, opts.duration, database)
        results[name] = load.as_dict()
    pid = server.process.pid
    memory = {
        "idle_after_start": idle,
        "after_load_rss_mb": _mb(_proc_kib(pid, "VmRSS")),
        "peak_rss_mb": _mb(_proc_kib(pid, "VmHWM")),
        "processes": len(server.pids()),
        "all_processes_after_load_rss_mb": _mb(
            sum(_proc_kib(each, "VmRSS") or 0 for each in server.pids())
        ),
    }
    return {
        "environment": _environment(server, opts, seeded_in),
        "memory": memory,
        "scenarios": results,
    }


def _environment(server: Serve, opts: Options, seeded_in: float) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "database": server.database,
        "workspaces": opts.workspaces,
        "owners": opts.owners,
        "page": opts.page,
        "seeded_in_s": round(seeded_in, 2),
        "seeding": "rows inserted straight into the database, not through the API",
        "client": opts.client,
        "client_threads": opts.threads if opts.client == "wrk" else 1,
        "connections": opts.connections,
        "http_processes": opts.http_processes,
        "duration_s": opts.duration,
        "warmup_s": opts.warmup,
        "cpus": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "serve_command": opts.serve_command,
        "serve_log_level": opts.serve_log_level,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, the measured value and whether it was met."""
    idle = results["memory"]["idle_after_start"]["rss_mb"]
    found = [
        {
            "name": "idle serve RSS",
            "limit": f"≤ {TARGET_IDLE_RSS_MB:g} MB",
            "value": f"{idle:.1f} MB",
            "met": idle <= TARGET_IDLE_RSS_MB,
        }
    ]
    for name, load in results["scenarios"].items():
        p99, rate = load["latency_ms"]["p99"], load["requests_per_s"]
        found.append(
            {
                "name": f"{name}: p99 and throughput",
                "limit": f"p99 ≤ {TARGET_P99_MS:g} ms, ≥ {TARGET_RPS:g} req/s, no errors",
                "value": f"{p99:.1f} ms, {rate:.0f} req/s, {load['errors']} errors",
                "met": p99 <= TARGET_P99_MS and rate >= TARGET_RPS and load["errors"] == 0,
            }
        )
    return found


def _shown(value: float | None, form: str) -> str:
    """A number in `form`, or a dash when it could not be measured."""
    return "-" if value is None else form.format(value)


def table(results: dict[str, Any]) -> str:
    """The whole report as aligned text."""
    env, memory = results["environment"], results["memory"]
    idle = memory["idle_after_start"]
    lines = [
        f"provisioner GET /v1/workspaces: {env['database']}, {env['workspaces']} workspaces "
        f"of {env['owners']} owners (seeded in {env['seeded_in_s']:.2f} s, bypassing the API), "
        f"limit={env['page']}, {env['cpus']} CPUs, {env['http_processes']} HTTP process(es), "
        f"Python {env['python']}",
        f"load: {env['client']} ({env['client_threads']} thread), {env['connections']} "
        f"connections, {env['duration_s']:g} s per scenario after {env['warmup_s']:g} s warm-up",
        f"serve RSS: idle {idle['rss_mb']:.1f} MB (settled after {idle['settled_after_s']:g} s); "
        f"after the load {memory['after_load_rss_mb']} MB, peak {memory['peak_rss_mb']} MB"
        + (
            f"; all {memory['processes']} processes after the load "
            f"{memory['all_processes_after_load_rss_mb']} MB"
            if memory["processes"] > 1
            else ""
        ),
        "",
        f"  {'scenario':31}{'req/s':>6}{'p50':>7}{'p90':>7}{'p99':>7}{'max':>7}{'errors':>7}"
        f"{'serve':>7}{'loop':>7}{'PG':>7}{'loop':>6}{'new':>6}{'noise':>7}{'spin':>8}",
        f"  {'':31}{'':>6}{'ms':>7}{'ms':>7}{'ms':>7}{'ms':>7}{'':>7}"
        f"{'ms/req':>7}{'ms/req':>7}{'ms/req':>7}{'busy':>6}{'conns':>6}{'cores':>7}{'ms':>8}",
    ]
    for name, load in results["scenarios"].items():
        lat = load["latency_ms"]
        serve_cpu = _shown(load["serve_cpu_ms_per_request"], "{:.2f}")
        pg_cpu = _shown(load["postgres_cpu_ms_per_request"] or None, "{:.2f}")
        loop_cpu = _shown(load["event_loop_cpu_ms_per_request"], "{:.2f}")
        loop = _shown(load["event_loop_busy_percent"], "{:.0f}%")
        noise = _shown(load["others_cpu_cores"], "{:.2f}")
        conns = _shown(load["new_db_connections"], "{:d}")
        spin = "/".join(f"{ms:.0f}" for ms in load["spin_ms_before_after"])
        lines.append(
            f"  {name:31}{load['requests_per_s']:6.0f}{lat['p50']:7.1f}{lat['p90']:7.1f}"
            f"{lat['p99']:7.1f}{lat['max']:7.1f}{load['errors']:7d}"
            f"{serve_cpu:>7}{loop_cpu:>7}{pg_cpu:>7}{loop:>6}{conns:>6}{noise:>7}{spin:>8}"
        )
    client = max(load["client_cpu_s"] for load in results["scenarios"].values())
    lines += [
        "  ms/req: CPU time per request of all of serve (its HTTP processes too), of its first",
        "    process's event-loop thread alone (one thread: one process cannot pass 1000 / that",
        "    req/s; with N processes it serves ~1/N of them) and of PostgreSQL's backends;",
        "    loop busy: that thread's share of the wall time; new conns: database connections",
        "    opened during the run (pool churn); noise: cores busy with other processes (> 0.2:",
        "    suspect run);",
        "    spin: ms of a fixed Python loop before/after, the host's speed (other tenants of a",
        "    VM host can double it unseen; compare runs only at similar spin);",
        f"    the load generator used at most {client:.2f} s of CPU per scenario",
        "",
        "targets:",
    ]
    return "\n".join(lines + target_lines(results))


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.list_workspaces",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--database-url", help="postgresql+asyncpg://… server to create a scratch database on")
    add("--workspaces", type=int, default=10_000, metavar="N", help="rows to seed (10000)")
    add("--owners", type=int, default=100, metavar="N", help="owners they spread over (100)")
    add("--page", type=int, default=50, metavar="N", help="the limit= of every request (50)")
    add("--connections", type=int, default=16, metavar="N", help="concurrent requests (16)")
    add("--threads", type=int, default=1, metavar="N", help="wrk threads (1)")
    add("--duration", type=float, default=10.0, help="seconds per scenario (10)")
    add("--warmup", type=float, default=2.0, help="unreported seconds before each (2)")
    add("--client", choices=("auto", "wrk", "aiohttp"), default="auto",
        help="load generator; auto takes wrk when it is on PATH")  # fmt: skip
    add("--serve-log-level", help="PROVISIONER_LOG_LEVEL for serve (default: serve's own)")
    add("--http-processes", type=int, default=1, metavar="N",
        help="PROVISIONER_HTTP_PROCESSES for serve (1)")  # fmt: skip
    add("--serve-command", help="run this instead of `provisioner serve`, e.g. a patched copy")
    add("--json", action="store_true", help="print one JSON document instead of a table")
    add("--check", action="store_true", help="exit 1 when a target is missed")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 on a missed target with --check, 2 on failure."""
    args = _parser().parse_args(argv)
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "aiohttp"
    elif client == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk), or --client aiohttp")
    opts = Options(
        database_url=args.database_url,
        workspaces=max(args.workspaces, 1),
        owners=max(args.owners, 1),
        page=args.page,
        connections=max(args.connections, 1),
        threads=max(min(args.threads, args.connections), 1),
        duration=args.duration,
        warmup=args.warmup,
        client=client,
        serve_log_level=args.serve_log_level,
        serve_command=shlex.split(args.serve_command) if args.serve_command else None,
        http_processes=max(args.http_processes, 1),
    )
    signal.signal(signal.SIGTERM, interrupted)
    try:
        with serve(
            opts.database_url,
            log_level=opts.serve_log_level,
            command=opts.serve_command,
            http_processes=opts.http_processes,
        ) as srv:
            try:
                results = asyncio.run(measure(srv, opts))
            except (BenchError, aiohttp.ClientError, TimeoutError, OSError) as error:
                print(f"bench: {type(error).__name__}: {error}", file=sys.stderr)
                print(f"--- end of the serve log ---\n{srv.log_tail()}", file=sys.stderr)
                return 2
    except KeyboardInterrupt:
        print("bench: interrupted; server stopped and scratch data removed", file=sys.stderr)
        return 130
    results["targets"] = targets(results)
    print(json.dumps(results, indent=2) if args.json else table(results))
    missed = not all(target["met"] for target in results["targets"])
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
