"""`provisioner acl render|diff|push`: the generated tailnet policy from the command line."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO

from acl.policy_checks import check_policy
from acl.publisher import PolicyChanged, PolicyInvalid, PolicyPublisher
from provisioner.errors import ProvisionerError
from provisioner.models import Actor, Role

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


def add_acl_parser(commands: Any) -> None:
    """Register `acl render|diff|push` on the top-level subparsers."""
    acl = commands.add_parser(
        "acl",
        help="the generated tailnet policy: render, diff, push",
        description="The tailnet policy generated from owners, PROVISIONER_GROUPS and our tags, "
        "merged into PROVISIONER_ACL_BASE (else into the live policy, when a tailnet is set).",
    )
    actions = acl.add_subparsers(dest="action", required=True)
    render = actions.add_parser("render", help="print the policy that push would write")
    render.add_argument(
        "--check", action="store_true", help="also run the local checks; exit 1 on a problem"
    )
    diff = actions.add_parser("diff", help="unified diff from the live policy to the rendered one")
    diff.add_argument(
        "--exit-code", action="store_true", help="exit 1 when they differ (as `git diff` does)"
    )
    actions.add_parser(
        "push",
        help="check, validate, then write with If-Match",
        description="Checks the rendered policy locally and on the server, then writes it only "
        "if the live policy is still the one diffed; if someone changed it meanwhile, nothing is "
        "written, the new diff is shown and the exit status is 1.",
    )


def cli_actor() -> Actor:
    """Who a CLI push is audited as: the operator's login on this machine."""
    return Actor(name=f"cli:{getpass.getuser()}", role=Role.ADMIN, source="cli")


async def run_acl(
    args: argparse.Namespace,
    publisher: PolicyPublisher,
    *,
    actor: Actor | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Run `acl <action>`; the exit status (0 done, 1 refused or different, 2 error)."""
    try:
        return await _ACTIONS[args.action](args, publisher, actor or cli_actor(), out, err)
    except PolicyInvalid as error:
        print("provisioner: the policy is not valid, nothing was pushed:", file=err)
        for problem in error.problems:
            print(f"  {problem}", file=err)
        return EXIT_REFUSED
    except PolicyChanged as error:
        print(f"provisioner: {error.message}. The diff against the new live policy:", file=err)
        out.write(error.diff)
        return EXIT_REFUSED
    except ProvisionerError as error:
        print(f"provisioner: {error.message}", file=err)
        return EXIT_ERROR


def _warn(warnings: tuple[str, ...], err: TextIO) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=err)


async def _render(
    args: argparse.Namespace, publisher: PolicyPublisher, _actor: Actor, out: TextIO, err: TextIO
) -> int:
    rendered = await publisher.preview()
    out.write(rendered.text)
    _warn(rendered.warnings, err)
    if args.check:
        problems = check_policy(rendered.text, publisher.dialect)
        for problem in problems:
            print(f"problem: {problem}", file=err)
        return EXIT_REFUSED if problems else EXIT_OK
    return EXIT_OK


async def _diff(
    args: argparse.Namespace, publisher: PolicyPublisher, _actor: Actor, out: TextIO, err: TextIO
) -> int:
    diff, rendered = await publisher.diff()
    out.write(diff)
    _warn(rendered.warnings, err)
    if not diff:
        print("the live policy is already the rendered one", file=err)
    return EXIT_REFUSED if diff and args.exit_code else EXIT_OK


async def _push(
    _args: argparse.Namespace, publisher: PolicyPublisher, actor: Actor, out: TextIO, err: TextIO
) -> int:
    result = await publisher.push(actor)
    out.write(result.diff)
    _warn(result.warnings, err)
    print("pushed" if result.changed else "nothing to push: the live policy is current", file=err)
    return EXIT_OK


_ACTIONS = {"render": _render, "diff": _diff, "push": _push}
