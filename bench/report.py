"""The human-readable table of a create_overhead run, and the targets from the issue."""

from __future__ import annotations

from types import FrameType
from typing import Any

TARGET_P50_MS = 100.0  # sequential create, API accept to `running`
TARGET_CREATES_PER_S = 20.0  # 200 concurrent creates within 10 s
ROWS = (
    ("POST → 202", "post_ms"),
    ("POST sent → seen running", "accept_to_running_client_ms"),
    ("accept → running (server clock)", "accept_to_running_server_ms"),
)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, the measured value and whether it was met."""
    seq = results["sequential"]["accept_to_running_client_ms"]["p50"]
    burst = results["throughput"]
    budget = burst["creates"] / TARGET_CREATES_PER_S
    return [
        {
            "name": "sequential create p50 (POST sent → running)",
            "limit": f"≤ {TARGET_P50_MS:g} ms",
            "value": f"{seq:.1f} ms",
            "met": seq <= TARGET_P50_MS,
        },
        {
            "name": f"{burst['creates']} concurrent creates all running",
            "limit": f"≤ {budget:g} s",
            "value": f"{burst['wall_s']:.2f} s",
            "met": burst["wall_s"] <= budget,
        },
    ]


def _latency_block(phase: dict[str, Any]) -> list[str]:
    """Percentile rows of one phase."""
    lines = [f"  {'':34}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}   (ms)"]
    for label, key in ROWS:
        s = phase[key]
        lines.append(f"  {label:34}{s['p50']:9.1f}{s['p90']:9.1f}{s['p99']:9.1f}{s['max']:9.1f}")
    return lines


def _cpu_line(phase: dict[str, Any]) -> str:
    """CPU spent by the server and by the benchmark client during a phase."""
    serve = phase["serve_cpu_s"]
    if serve is None:
        return f"  CPU: bench {phase['bench_cpu_s']:.2f} s"
    return (
        f"  CPU: serve {serve:.2f} s ({phase['serve_cpu_ms_per_create']:.1f} ms per create), "
        f"bench client {phase['bench_cpu_s']:.2f} s"
    )


def table(results: dict[str, Any]) -> str:
    """The whole report as aligned text."""
    env, seq, burst = results["environment"], results["sequential"], results["throughput"]
    workers = env["serve_workers"] or "default"
    lines = [
        f"provisioner create overhead: {env['database']}, libvirt {env['libvirt_uri']}, "
        f"{env['cpus']} CPUs, Python {env['python']}, serve workers {workers}",
        "",
        f"sequential: {seq['creates']} creates one after another "
        f"(GET every {env['sequential_poll_ms']:g} ms), {seq['wall_s']:.2f} s in all",
        *_latency_block(seq),
        _cpu_line(seq),
        "",
        f"throughput: {burst['creates']} creates at once "
        f"(list of provisioning ones every {env['throughput_watch_ms']:g} ms)",
        f"  all running after {burst['wall_s']:.2f} s = {burst['creates_per_s']:.1f} creates/s; "
        f"all accepted (202) after {burst['all_accepted_s']:.2f} s",
        *_latency_block(burst),
        _cpu_line(burst),
        "",
        "targets:",
    ]
    return "\n".join(lines + target_lines(results))


def target_lines(results: dict[str, Any]) -> list[str]:
    """One line per target: met or MISS, the value and the limit."""
    return [
        f"  {'ok  ' if t['met'] else 'MISS'} {t['name']}: {t['value']} (target {t['limit']})"
        for t in results["targets"]
    ]


def interrupted(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM behaves like Ctrl-C, so every clean-up step runs."""
    raise KeyboardInterrupt
