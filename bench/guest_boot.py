"""Boot to SSH of a real Debian guest under TCG: bare virsh (baseline) against the provisioner.

Runs only inside the e2e tier's private namespace (its own libvirtd, network e2e-net, pool
`default`, nothing shared with the host), with the image of scripts/e2e/build-image.sh:

    scripts/e2e/cached-image.sh        # once, outside: builds or finds the image
    scripts/e2e/netns-run.sh .venv/bin/python -m bench.guest_boot [--runs 3] [--json]
        --baseline-only    only the bare virsh boots (part A)
        --ours-only        only the provisioner's creates (part B)
        --disk-prep        only overlay creation over a small and a large base

The node is an OpenSSH sshd on 127.0.0.1 (scripts/e2e/start-sshd.sh); guests are reached by
`ssh -J` through it, as the provisioner reaches them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.bare_guest import BenchError, BootRun, baseline, setup_host, spread, versions
from tests.e2e.guest import IMAGE_ENV, REPO, GuestImage, find_image, start_node, stop_node

TARGET_RATIO = 1.1  # ours / baseline, median boot → SSH
TARGET_DISK_DIFF_MS = 100.0


def log(line: str) -> None:
    """Progress on stderr, so that stdout stays the report (or the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def image_or_exit(explicit: str | None) -> GuestImage:
    """The image: --image-dir, else PROVISIONER_E2E_IMAGE_DIR, else the cached build."""
    if explicit:
        os.environ[IMAGE_ENV] = explicit
    elif not os.environ.get(IMAGE_ENV):
        cached = subprocess.run(
            [str(REPO / "scripts" / "e2e" / "cached-image.sh"), "--dir"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        os.environ[IMAGE_ENV] = cached
    found = find_image()
    if isinstance(found, str):
        raise SystemExit(f"bench: no guest image: {found}; build it: scripts/e2e/cached-image.sh")
    return found


def baseline_results(raw: dict[str, Any]) -> dict[str, Any]:
    """Summaries of part A."""
    runs: list[BootRun] = raw["runs"]
    imported = raw["import"]
    return {
        "import_s": round(imported.seconds, 2),
        "import_mb": round(imported.bytes / 1e6, 1),
        "runs": len(runs),
        "prepare_s": spread([r.prepare for r in runs]),
        "virsh_start_s": spread([r.start for r in runs]),
        "start_to_lease_s": spread([r.lease for r in runs]),
        "start_to_ssh_s": spread([r.ssh for r in runs]),
        "each_start_to_ssh_s": [round(r.ssh, 2) for r in runs],
        "leases": raw["leases"],
    }


def measure(args: argparse.Namespace, image: GuestImage) -> dict[str, Any]:
    """Set up the namespace's libvirt and the node, then run the parts asked for."""
    results: dict[str, Any] = {"setup_host_s": round(setup_host(), 2)}
    results["environment"] = {
        **versions(),
        "cpus": len(os.sched_getaffinity(0)),
        "image": str(image.directory),
        "image_base_mb": round(image.base.stat().st_size / 1e6, 1),
        "cmdline": image.cmdline,
        "domain": "TCG (type qemu), 1 vCPU, 1024 MiB, 10 GiB overlay",
    }
    if args.disk_prep:
        from bench.disk_prep import disk_prep

        results["disk_prep"] = disk_prep(image, args.disk_reps, log)
        return results
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        node = start_node(Path(tmp))
        log(f"node: sshd on 127.0.0.1:{node.port}")
        try:
            if not args.ours_only:
                raw = baseline(node, image, args.runs, args.timeout, log)
                results["baseline"] = baseline_results(raw)
            if not args.baseline_only:
                from bench.guest_ours import ours

                results["ours"] = ours(node, image, args.runs, args.timeout, log)
        finally:
            stop_node(node)
    if "baseline" in results and "ours" in results:
        base = results["baseline"]["start_to_ssh_s"]["median"]
        mine = results["ours"]["post_to_ssh_s"]["median"]
        results["ratio"] = round(mine / base, 3)
    return results


def table(results: dict[str, Any]) -> str:
    """The report as text."""
    env = results["environment"]
    lines = [
        f"guest boot: libvirt {env.get('libvirt')}, QEMU {env.get('qemu')}, {env['cpus']} CPUs; "
        f"{env['domain']}",
        f"image {env['image']} (base.qcow2 {env['image_base_mb']} MB), cmdline {env['cmdline']!r}",
        f"setup-host.sh daemons: {results['setup_host_s']} s",
    ]
    header = f"  {'':40}{'median':>8}{'min':>8}{'max':>8}   (s)"

    def row(label: str, s: dict[str, float]) -> str:
        return f"  {label:40}{s['median']:8.2f}{s['min']:8.2f}{s['max']:8.2f}"

    if "baseline" in results:
        b = results["baseline"]
        lines += [
            "",
            f"baseline, bare virsh: {b['runs']} boots one after another "
            f"(image import: vol-create-as + vol-upload, {b['import_mb']} MB in {b['import_s']} s)",
            header,
            row("prepare (overlay, seed, define)", b["prepare_s"]),
            row("virsh start", b["virsh_start_s"]),
            row("start → DHCP lease", b["start_to_lease_s"]),
            row("start → first SSH login", b["start_to_ssh_s"]),
        ]
    if "ours" in results:
        o = results["ours"]
        lines += [
            "",
            f"ours, provisioner serve: {o['runs']} creates one after another "
            f"(provisioner image import: {o['import_s']} s)",
            header,
            row("POST → operation succeeded", o["post_to_succeeded_s"]),
            row("POST → first SSH login (ours)", o["post_to_ssh_s"]),
            "  steps (server clock):",
            *(row(f"  {name}", took) for name, took in o["step_s"].items()),
        ]
    if "ratio" in results:
        ok = "ok  " if results["ratio"] <= TARGET_RATIO else "MISS"
        lines += [
            "",
            f"{ok} ours / baseline, median to SSH: {results['ratio']:.3f} "
            f"(target ≤ {TARGET_RATIO})",
        ]
    if "disk_prep" in results:
        from bench.disk_prep import table as disk_table

        lines += ["", *disk_table(results["disk_prep"], TARGET_DISK_DIFF_MS)]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.guest_boot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--runs", type=int, default=3, metavar="N", help="boots of each kind (3)")
    add("--timeout", type=float, default=300.0, help="seconds one boot may take to SSH (300)")
    add("--image-dir", help=f"the image (default: ${IMAGE_ENV}, else the cached build)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--baseline-only", action="store_true", help="only bare virsh boots")
    only.add_argument("--ours-only", action="store_true", help="only provisioner creates")
    only.add_argument("--disk-prep", action="store_true", help="only overlay creation times")
    add("--disk-reps", type=int, default=10, metavar="N", help="overlays per base (10)")
    add("--json", action="store_true", help="print one JSON document instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on failure."""
    args = _parser().parse_args(argv)
    if not os.environ.get("PROVISIONER_E2E_NETNS"):
        print(
            "bench: run me in the e2e namespace: "
            "scripts/e2e/netns-run.sh .venv/bin/python -m bench.guest_boot",
            file=sys.stderr,
        )
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
