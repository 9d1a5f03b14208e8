"""Control-plane overhead of a create on libvirt's test driver: latency and throughput.

Starts a real `provisioner serve` on a fresh database (SQLite by default), then measures
(a) N creates one after another, each from sending POST /v1/workspaces until GET says
`running`, and (b) M creates fired at once, until every one of them runs.

    python -m bench.create_overhead [--database-url postgresql+asyncpg://...] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench import report
from bench.client import Api, BenchError, connected, server_latency, wait_ready
from bench.serve import Serve, serve
from bench.stats import Summary

VERIFY_CONCURRENCY = 16


@dataclass
class Options:
    """What to run, from the command line."""

    database_url: str | None
    sequential: int
    concurrent: int
    warmup: int
    poll: float
    watch: float
    timeout: float
    workers: int | None
    serve_log_level: str | None
    serve_command: list[str] | None


@dataclass
class Phase:
    """Raw timings of one phase, in seconds."""

    post: list[float] = field(default_factory=list)
    client: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    wall: float = 0.0
    all_accepted: float = 0.0
    serve_cpu: float | None = None
    bench_cpu: float = 0.0

    def as_dict(self, creates: int) -> dict[str, Any]:
        """Summaries for the report and for --json."""
        per_create = (
            None if self.serve_cpu is None else round(self.serve_cpu * 1000 / max(creates, 1), 2)
        )
        return {
            "creates": creates,
            "wall_s": round(self.wall, 3),
            "creates_per_s": round(creates / self.wall, 1) if self.wall else None,
            "all_accepted_s": round(self.all_accepted, 3),
            "post_ms": Summary.of(self.post).as_dict(),
            "accept_to_running_client_ms": Summary.of(self.client).as_dict(),
            "accept_to_running_server_ms": Summary.of(self.server).as_dict(),
            "serve_cpu_s": None if self.serve_cpu is None else round(self.serve_cpu, 3),
            "serve_cpu_ms_per_create": per_create,
            "bench_cpu_s": round(self.bench_cpu, 3),
        }


class Meter:
    """CPU used by the server and by this process between `start` and `stop`."""

    def __init__(self, server: Serve) -> None:
        self._server = server
        self._serve0 = server.cpu_seconds()
        self._bench0 = time.process_time()

    def stop(self, phase: Phase) -> None:
        """Store the CPU seconds spent since the meter was made."""
        serve1 = self._server.cpu_seconds()
        if self._serve0 is not None and serve1 is not None:
            phase.serve_cpu = serve1 - self._serve0
        phase.bench_cpu = time.process_time() - self._bench0


def _alive(server: Serve) -> None:
    """BenchError if the server process has exited."""
    if server.process.poll() is not None:
        raise BenchError(f"serve exited with {server.process.returncode}")


async def one_by_one(api: Api, server: Serve, prefix: str, n: int, opts: Options) -> Phase:
    """N creates in a row; each polled every `opts.poll` s until it runs."""
    phase, meter, began = Phase(), Meter(server), time.perf_counter()
    for i in range(n):
        start = time.perf_counter()
        ws_id = await api.create(f"{prefix}{i}")
        phase.post.append(time.perf_counter() - start)
        while True:
            ws = await api.workspace(ws_id)
            if ws["state"] == "running":
                phase.client.append(time.perf_counter() - start)
                phase.server.append(server_latency(ws))
                break
            if ws["state"] != "provisioning":
                raise BenchError(f"workspace {ws['name']} became {ws['state']}: {ws['error']}")
            if time.perf_counter() - start > opts.timeout:
                raise BenchError(f"workspace {ws['name']} not running after {opts.timeout:g} s")
            _alive(server)
            await asyncio.sleep(opts.poll)
    phase.wall = phase.all_accepted = time.perf_counter() - began
    meter.stop(phase)
    return phase


async def all_at_once(api: Api, server: Serve, n: int, after: str | None, opts: Options) -> Phase:
    """N creates fired together; one watcher lists what still provisions until none does."""
    phase, meter = Phase(), Meter(server)
    sent: dict[str, float] = {}
    accepted: dict[str, float] = {}
    seen: dict[str, float] = {}
    began = time.perf_counter()

    async def create(i: int) -> None:
        start = time.perf_counter()
        ws_id = await api.create(f"b-t{i}")
        sent[ws_id], accepted[ws_id] = start, time.perf_counter()

    posts = asyncio.gather(*(create(i) for i in range(n)))
    try:
        while len(seen) < n:
            if posts.done() and posts.exception() is not None:
                await posts
            if time.perf_counter() - began > opts.timeout:
                raise BenchError(f"only {len(seen)} of {n} running after {opts.timeout:g} s")
            _alive(server)
            # Only ids accepted before the listing was asked for can be judged by it.
            judged = [ws_id for ws_id in accepted if ws_id not in seen]
            if judged:
                provisioning = await api.ids_in_state("provisioning", after)
                now = time.perf_counter()
                seen.update((ws_id, now) for ws_id in judged if ws_id not in provisioning)
            await asyncio.sleep(opts.watch)
    finally:
        posts.cancel()
        await asyncio.gather(posts, return_exceptions=True)
    meter.stop(phase)
    phase.wall = max(seen.values()) - began
    phase.all_accepted = max(accepted.values()) - began
    phase.post = [accepted[i] - sent[i] for i in sent]
    phase.client = [seen[i] - sent[i] for i in sent]
    phase.server = await _verified(api, list(sent))
    return phase


async def _verified(api: Api, ids: list[str]) -> list[float]:
    """Server-side latencies of workspaces that must all be running (BenchError if not)."""
    gate = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def check(ws_id: str) -> float:
        async with gate:
            ws = await api.workspace(ws_id)
        if ws["state"] != "running":
            raise BenchError(f"workspace {ws['name']} is {ws['state']}: {ws['error']}")
        return server_latency(ws)

    return list(await asyncio.gather(*(check(i) for i in ids)))


async def measure(server: Serve, opts: Options) -> dict[str, Any]:
    """Warm up, then run both phases against a ready server."""
    await wait_ready(server)
    async with connected(server, opts.concurrent + 8) as api:
        warm = await one_by_one(api, server, "b-w", opts.warmup, opts)
        seq = await one_by_one(api, server, "b-s", opts.sequential, opts)
        # Ids sort by creation time, so the newest earlier id bounds the burst's listing.
        listed = await api.ids_in_state("running", None)
        after = max(listed) if listed else None
        burst = await all_at_once(api, server, opts.concurrent, after, opts)
    return {
        "environment": _environment(server, opts),
        "warmup": {"creates": opts.warmup, "wall_s": round(warm.wall, 3)},
        "sequential": seq.as_dict(opts.sequential),
        "throughput": burst.as_dict(opts.concurrent),
    }


def _environment(server: Serve, opts: Options) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "database": server.database,
        "libvirt_uri": "test:///default",
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": sys.version.split()[0],
        "serve_workers": opts.workers,
        "serve_command": opts.serve_command,
        "sequential_poll_ms": opts.poll * 1000,
        "throughput_watch_ms": opts.watch * 1000,
    }


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.create_overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--database-url", help="postgresql+asyncpg://… server to create a scratch database on")
    add("--sequential", type=int, default=50, metavar="N", help="creates in a row (50)")
    add("--concurrent", type=int, default=200, metavar="N", help="creates at once (200)")
    add("--warmup", type=int, default=3, metavar="N", help="unmeasured creates first (3)")
    add("--poll-ms", type=float, default=5.0, help="GET interval in the sequential phase (5)")
    add("--watch-ms", type=float, default=20.0, help="listing interval under the burst (20)")
    add("--timeout", type=float, default=120.0, help="seconds a phase may take (120)")
    add("--workers", type=int, help="PROVISIONER_WORKERS for serve (default: serve's own)")
    add("--serve-log-level", help="PROVISIONER_LOG_LEVEL for serve (default: serve's own)")
    add("--serve-command", help="run this instead of `provisioner serve`, e.g. another checkout's")
    add("--json", action="store_true", help="print one JSON document instead of a table")
    add("--check", action="store_true", help="exit 1 when a target is missed")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 on a missed target with --check, 2 on failure."""
    args = _parser().parse_args(argv)
    opts = Options(
        database_url=args.database_url,
        sequential=max(args.sequential, 1),
        concurrent=max(args.concurrent, 1),
        warmup=max(args.warmup, 0),
        poll=args.poll_ms / 1000,
        watch=args.watch_ms / 1000,
        timeout=args.timeout,
        workers=args.workers,
        serve_log_level=args.serve_log_level,
        serve_command=shlex.split(args.serve_command) if args.serve_command else None,
    )
    signal.signal(signal.SIGTERM, report.interrupted)
    try:
        with serve(
            opts.database_url,
            workers=opts.workers,
            log_level=opts.serve_log_level,
            command=opts.serve_command,
        ) as srv:
            try:
                results = asyncio.run(measure(srv, opts))
            except (BenchError, aiohttp.ClientError, TimeoutError) as error:
                print(f"bench: {type(error).__name__}: {error}", file=sys.stderr)
                print(f"--- end of the serve log ---\n{srv.log_tail()}", file=sys.stderr)
                return 2
    except KeyboardInterrupt:
        print("bench: interrupted; server stopped and scratch data removed", file=sys.stderr)
        return 130
    results["targets"] = report.targets(results)
    print(json.dumps(results, indent=2) if args.json else report.table(results))
    missed = not all(target["met"] for target in results["targets"])
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
