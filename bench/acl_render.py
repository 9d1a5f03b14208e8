"""`python -m bench.acl_render`: time rendering the tailnet policy for thousands of owners.

Renders (generate + merge into an operator base file) for --owners owners and a --members
strong developers group, several times, and prints p50 and max; also the local checks
(`check_policy`, what every push runs first, the policy's own tests included) and a re-render
of the output (the idempotence path). Target: render p50 ≤ 1 s for 5 000 owners.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from acl.policy import PolicyConfig, render
from acl.policy_checks import check_policy

BASE = """// The operator's own policy.
{
  "groups": {"group:db-admins": ["dba@example.com"]},
  "hosts": {"db": "10.1.2.3", "lab": "10.9.0.0/16"},
  "tagOwners": {"tag:db": ["group:db-admins"]},
  "acls": [
    // the database, for its admins
    {"action": "accept", "src": ["group:db-admins"], "dst": ["db:5432"]},
  ],
  "nodeAttrs": [{"target": ["autogroup:member"], "attr": ["funnel"]}],
}
"""
TARGET_SECONDS = 1.0


def timed(runs: int, work: Callable[[], object]) -> list[float]:
    """Wall-clock seconds of each of `runs` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Run and print the numbers."""
    parser = argparse.ArgumentParser(prog="python -m bench.acl_render", description=__doc__)
    parser.add_argument("--owners", type=int, default=5000)
    parser.add_argument("--members", type=int, default=500, help="members of group:developers")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dialect", default="tailscale", choices=("tailscale", "headscale"))
    parser.add_argument("--json", action="store_true", help="one JSON document")
    args = parser.parse_args()
    owners = [f"user{n:05d}@example.com" for n in range(args.owners)]
    config = PolicyConfig(
        workspace_tags=("tag:provisioner-workspace",),
        api_tag="tag:provisioner-api",
        groups={"ops": ["ops@example.com"], "developers": owners[: args.members]},
    )
    first = render(config, owners, dialect=args.dialect, base=BASE)
    results = {
        "render": timed(args.runs, lambda: render(config, owners, dialect=args.dialect, base=BASE)),
        "check_policy": timed(args.runs, lambda: check_policy(first.text, args.dialect)),
        "re-render": timed(
            args.runs, lambda: render(config, owners, dialect=args.dialect, base=first.text)
        ),
    }
    problems = check_policy(first.text, args.dialect)
    summary = {
        name: {"p50_s": statistics.median(t), "max_s": max(t)} for name, t in results.items()
    }
    facts = {"owners": args.owners, "members": args.members, "runs": args.runs}
    facts |= {"bytes": len(first.text), "problems": len(problems), "dialect": args.dialect}
    if args.json:
        print(json.dumps({"facts": facts, "seconds": summary}, indent=2))
        return
    print(", ".join(f"{k}={v}" for k, v in facts.items()))
    for name, numbers in summary.items():
        p50, worst = numbers["p50_s"] * 1000, numbers["max_s"] * 1000
        print(f"{name:13} p50 {p50:8.1f} ms   max {worst:8.1f} ms")
    verdict = "ok" if summary["render"]["p50_s"] <= TARGET_SECONDS else "MISSED"
    print(f"target: render p50 <= {TARGET_SECONDS:.0f} s: {verdict}")


if __name__ == "__main__":
    main()
