"""Slack request → ready DM with a working `ssh` line, on a real guest, against bare virsh → SSH.

Runs only inside the e2e tier's private namespace, with the image of scripts/e2e/build-image.sh:

    scripts/e2e/cached-image.sh        # once, outside: builds or finds the image
    scripts/e2e/netns-run.sh .venv/bin/python -m bench.guest_slack [--runs 3] [--json]

Rounds alternate: a bare boot (bench.bare_guest: `virsh start` → first `ssh -J` login), then
ours (bench.slack_guest: a signed `/workspace create NAME` to serve → the fake Slack got the
ready DM → the DM's `ssh USER@HOST` line logs in through the node). Goal: ours ≤ bare + 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import report
from bench.bare_guest import BenchError, BootRun, boot_once, imported, setup_host, versions
from bench.guest_boot import image_or_exit, log
from bench.guest_ours import tail
from bench.slack_guest import SlackWorld, create_once, slack_world
from bench.stats import percentile
from tests.e2e.guest import GuestImage, SshNode, keypair, start_node, stop_node

TARGET_GAP_S = 5.0
GUEST_EVENTS = (
    ("kernel_start", "guest kernel starts"),
    ("init-local_done", "cloud-init init-local done"),
    ("init_done", "cloud-init init (network) done"),
    ("sshd_active", "sshd active"),
    ("modules-config_done", "cloud-init modules-config done"),
    ("modules-final_done", "cloud-init modules-final done"),
)


def p50(values: list[float | None]) -> float | None:
    """The median of the values that are known, rounded to 10 ms."""
    known = [v for v in values if v is not None]
    return round(percentile(known, 50), 2) if known else None


def rounds(node: SshNode, image: GuestImage, runs: int, timeout: float) -> dict[str, Any]:
    """`runs` rounds of a bare boot then one Slack create; the raw results of both."""
    bare: list[BootRun] = []
    ours: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp:
        work = Path(tmp)
        key = keypair(work / "guest_key", "bench-guest-login")
        with imported(image, "bench-slack") as volumes, slack_world(node, image, log) as world:
            for i in range(runs):
                bare.append(boot_once(node, volumes, image.cmdline, key, timeout, work))
                log(f"round {i + 1}/{runs}: bare start → SSH {bare[-1].ssh:.1f} s")
                ours.append(_ours_once(world, timeout))
                run = ours[-1]
                log(
                    f"round {i + 1}/{runs}: ours request → DM {run['dm']:.1f} s, "
                    f"→ `{run['ssh_line']}` logged in {run['ssh']:.1f} s"
                )
    return {"bare": bare, "ours": ours}


def _ours_once(world: SlackWorld, timeout: float) -> dict[str, Any]:
    """One Slack create; on failure the end of serve's log goes with the error."""
    try:
        return create_once(world, timeout)
    except BenchError as error:
        raise BenchError(
            f"{error}\n--- end of the serve log ---\n{tail(world.serve_log)}"
        ) from None


def summary(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians of both sides, the per-step times and the guest's own timeline."""
    bare: list[BootRun] = raw["bare"]
    ours: list[dict[str, Any]] = raw["ours"]
    steps: dict[str, Any] = {}
    for name in ours[-1]["steps"]:  # the operation's own order
        times = [r["steps"][name] for r in ours if name in r["steps"]]
        if times:
            steps[name] = {
                "took": p50([_took(t) for t in times]),
                "end": p50([t["end"] for t in times]),
                "detail": times[-1]["detail"],
            }
    guest = [r["guest"] for r in ours]
    out = {
        "runs": len(ours),
        "bare_start_to_lease_s": p50([r.lease for r in bare]),
        "bare_start_to_ssh_s": p50([r.ssh for r in bare]),
        "each_bare_start_to_ssh_s": [round(r.ssh, 2) for r in bare],
        "ours_ack_ms": p50([r["ack"] * 1000 for r in ours]),
        "ours_accepted_s": p50([r["accepted"] for r in ours]),
        "ours_request_to_dm_s": p50([r["dm"] for r in ours]),
        "ours_request_to_ssh_s": p50([r["ssh"] for r in ours]),
        "each_ours_request_to_ssh_s": [round(r["ssh"], 2) for r in ours],
        "ours_last_step_to_dm_s": p50([r["dm"] - _last_end(r) for r in ours]),
        "ours_dm_to_ssh_s": p50([r["ssh"] - r["dm"] for r in ours]),
        "ssh_line": ours[-1]["ssh_line"],
        "steps": steps,
        "guest": {key: p50([g.get(key) for g in guest]) for key, _ in GUEST_EVENTS},
        "status_cli_s": p50([g.get("status_cli_s") for g in guest]),
        "clock_offset_s": p50([g.get("clock_offset") for g in guest]),
    }
    out["gap_s"] = round(out["ours_request_to_ssh_s"] - out["bare_start_to_ssh_s"], 2)
    return out


def _took(step: dict[str, Any]) -> float | None:
    """A step's duration, if it has both ends."""
    return None if step["start"] is None or step["end"] is None else step["end"] - step["start"]


def _last_end(run: dict[str, Any]) -> float:
    """When the last step of a create finished, after the request."""
    return float(max(s["end"] for s in run["steps"].values() if s["end"] is not None))


def table(results: dict[str, Any]) -> str:
    """The report as text."""
    env, s = results["environment"], results["summary"]

    def row(label: str, value: float | None, unit: str = "s") -> str:
        return f"  {label:52}{'—' if value is None else f'{value:8.2f}'} {unit}"

    lines = [
        f"guest slack: libvirt {env.get('libvirt')}, QEMU {env.get('qemu')}, {env['cpus']} CPUs; "
        f"TCG, 1 vCPU, 1024 MiB, plan small; {s['runs']} rounds (bare, ours), p50 of each",
        "",
        row("bare: virsh start → DHCP lease", s["bare_start_to_lease_s"]),
        row("bare: virsh start → first SSH login", s["bare_start_to_ssh_s"]),
        row("ours: slash command → 200 (ack)", s["ours_ack_ms"], "ms"),
        row("ours: slash command → create accepted (server clock)", s["ours_accepted_s"]),
        row("ours: slash command → ready DM at the fake Slack", s["ours_request_to_dm_s"]),
        row("ours: slash command → the DM's ssh line logged in", s["ours_request_to_ssh_s"]),
        f"  each bare: {s['each_bare_start_to_ssh_s']}; "
        f"each ours: {s['each_ours_request_to_ssh_s']}",
        "",
        "  our create's steps (server clock, p50):  took   ends at (s after the request)",
    ]
    for name, step in s["steps"].items():
        took = "—" if step["took"] is None else f"{step['took']:6.2f}"
        lines.append(
            f"    {name:34}{took:>8}{step['end'] or 0:9.2f}   {step['detail'] or ''}"[:150]
        )
    lines += [
        row("last step → DM at the fake (Slack sync)", s["ours_last_step_to_dm_s"]),
        row("DM → its ssh line logged in (a fresh ssh -J)", s["ours_dm_to_ssh_s"]),
        "",
        f"  the guest's own records (s after the request; clock offset {s['clock_offset_s']} s):",
        *(row(f"  {label}", s["guest"][key]) for key, label in GUEST_EVENTS),
        row("`cloud-init status --wait` once cloud-init is done", s["status_cli_s"]),
        "",
        f"  {'ok  ' if s['gap_s'] <= TARGET_GAP_S else 'MISS'} ours - bare, p50: "
        f"{s['gap_s']:+.2f} s (target ≤ +{TARGET_GAP_S:g} s)",
    ]
    return "\n".join(lines)


def measure(args: argparse.Namespace, image: GuestImage) -> dict[str, Any]:
    """The namespace's libvirt, the node, then the alternating rounds."""
    results: dict[str, Any] = {"setup_host_s": round(setup_host(), 2)}
    results["environment"] = {**versions(), "cpus": len(os.sched_getaffinity(0))}
    results["environment"]["image"] = str(image.directory)
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        node = start_node(Path(tmp))
        log(f"node: sshd on 127.0.0.1:{node.port}")
        try:
            raw = rounds(node, image, args.runs, args.timeout)
        finally:
            stop_node(node)
    results["summary"] = summary(raw)
    results["ours_runs"] = raw["ours"]
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.guest_slack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, metavar="N", help="rounds (3)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per boot (300)")
    parser.add_argument("--image-dir", help="the image (default: the cached build)")
    parser.add_argument("--json", action="store_true", help="one JSON document, runs included")
    args = parser.parse_args(argv)
    if not os.environ.get("PROVISIONER_E2E_NETNS"):
        print("bench: run me in scripts/e2e/netns-run.sh", file=sys.stderr)
        return 2
    args.runs = max(args.runs, 1)
    image = image_or_exit(args.image_dir)
    signal.signal(signal.SIGTERM, report.interrupted)
    try:
        results = measure(args, image)
    except (BenchError, TimeoutError, subprocess.CalledProcessError) as error:
        print(f"bench: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; guests and volumes removed", file=sys.stderr)
        return 130
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
