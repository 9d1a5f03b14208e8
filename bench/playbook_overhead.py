"""The playbook runner's overhead: AnsiblePlaybookRunner against a bare ansible-playbook.

    .venv/bin/python -m bench.playbook_overhead [--rounds 7] [--json]

Both run the same three-task playbook on the same target: a private OpenSSH sshd on loopback
(scripts/e2e/start-sshd.sh, needs root), reached through itself as the jump host, its host key
pinned. The bare run is what an operator would type: ansible-playbook, an inventory file, the
same ssh options, a fresh ControlPersist directory each round (a warm master left by the
previous round would skip the handshakes ours always pays). Rounds alternate bare and ours;
one warm-up of each is not counted. Also printed: redact()'s cost per access-log line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

from bench.stats import Summary
from provisioner.adapters.ansible import AnsiblePlaybookRunner
from provisioner.ports.playbooks import PlaybookTarget
from provisioner.redaction import redact
from tests.test_ssh_link import Sshd, keygen, start_sshd, stop_sshd

ANSIBLE = Path("/usr/bin/ansible-playbook")
TARGET_DIFF_MS = 1000.0
PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy: {dest: "/tmp/bench-playbook-overhead.txt", content: "hello\\n"}
    - ansible.builtin.command: "true"
    - ansible.builtin.debug: {msg: done}
"""
ACCESS_LINE = (
    '127.0.0.1 [3f9a8c1e] "GET /v1/workspaces?owner=alice&state=running HTTP/1.1" 200 1534 '
    '"-" "python-httpx/0.28.1" 0.004s'
)


def bare_setup(work: Path, sshd: Sshd, key: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a hand-made run with the same pins and jump."""
    known = work / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
    pinned = f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known} -o IdentitiesOnly=yes"
    jump = f"ssh {pinned} -i {key} -p {sshd.port} -W %h:%p root@127.0.0.1"
    inventory = work / "hosts"
    inventory.write_text(
        f"127.0.0.1 ansible_port={sshd.port} ansible_user=root ansible_ssh_private_key_file={key}\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_SSH_ARGS": f"-C -o ControlMaster=auto -o ControlPersist=60s {pinned} "
        f"-o ProxyCommand={shlex.quote(jump)}",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_PIPELINING": "1",
    }
    return [str(ANSIBLE), "-i", str(inventory), str(work / "pb" / "site.yml")], env


def bare_round(command: list[str], env: dict[str, str], work: Path) -> float:
    """One bare run with a fresh control directory; its masters are stopped afterwards."""
    control = Path(tempfile.mkdtemp(prefix="cp-", dir=work))
    started = time.perf_counter()
    done = subprocess.run(
        command,
        env={**env, "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control)},
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bare ansible-playbook failed:\n{done.stdout.decode()}{done.stderr.decode()}")
    for socket in control.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "x"],
            capture_output=True,
            check=False,
        )
    return elapsed


async def our_round(runner: AnsiblePlaybookRunner, work: Path, target: PlaybookTarget) -> float:
    """One run through our runner, every line passed to a sink as the operation log gets it."""
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    started = time.perf_counter()
    recap = await runner.run(
        work / "pb", "site.yml", target, extra_vars={}, timeout=120, on_line=sink
    )
    elapsed = time.perf_counter() - started
    if not recap.succeeded:
        sys.exit("our run failed:\n" + "\n".join(lines))
    return elapsed


async def measure(rounds: int) -> dict[str, object]:
    """Warm-up, then `rounds` alternating bare and our runs; their summaries."""
    work = Path(tempfile.mkdtemp(prefix="pbo-"))
    key = keygen(work / "client")
    sshd = start_sshd(work / "sshd", Path(f"{key}.pub"))
    try:
        (work / "pb").mkdir()
        (work / "pb" / "site.yml").write_text(PLAYBOOK)
        command, env = bare_setup(work, sshd, key)
        target = PlaybookTarget(
            "127.0.0.1", sshd.port, "root", sshd.host_key, key,
            "127.0.0.1", sshd.port, "root", sshd.host_key,
        )  # fmt: skip
        runner = AnsiblePlaybookRunner(ANSIBLE, work_root=work)
        bare, ours = [], []
        for index in range(rounds + 1):
            b = await asyncio.to_thread(bare_round, command, env, work)
            o = await our_round(runner, work, target)
            if index:  # the first of each is the warm-up
                bare.append(b)
                ours.append(o)
    finally:
        stop_sshd(sshd)
        shutil.rmtree(work, ignore_errors=True)
    per_line = timeit.timeit(lambda: redact(ACCESS_LINE), number=100_000) / 100_000
    return {"bare": Summary.of(bare), "ours": Summary.of(ours), "redact_ns": per_line * 1e9}


def main() -> None:
    """Run and print the report (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it starts a private sshd and logs in as root")
    result = asyncio.run(measure(args.rounds))
    bare, ours = result["bare"], result["ours"]
    assert isinstance(bare, Summary) and isinstance(ours, Summary)
    difference = ours.p50 - bare.p50
    if args.json:
        print(json.dumps({
            "bare_ms": bare.as_dict(), "ours_ms": ours.as_dict(),
            "p50_difference_ms": round(difference, 1), "redact_ns_per_line": result["redact_ns"],
        }))  # fmt: skip
        return
    print(f"{'':24}{'p50':>9}{'p90':>9}{'max':>9}   (ms, {bare.n} rounds each)")
    for label, summary in (("bare ansible-playbook", bare), ("AnsiblePlaybookRunner", ours)):
        print(f"{label:24}{summary.p50:9.1f}{summary.p90:9.1f}{summary.max:9.1f}")
    verdict = "ok" if difference <= TARGET_DIFF_MS else "MISSED"
    print(f"p50 difference: {difference:+.1f} ms (goal ≤ {TARGET_DIFF_MS:.0f} ms: {verdict})")
    print(f"redact(): {result['redact_ns']:.0f} ns per access-log line")


if __name__ == "__main__":
    main()
