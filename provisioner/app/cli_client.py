"""`provisioner workspace …`: a small client of a running `serve`, with progress while it waits."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}
POLL_SECONDS = 0.3
MARKS = {"succeeded": "ok", "failed": "FAILED", "running": "..", "skipped": "--"}


class CliError(Exception):
    """A failure to explain to the user in one line."""


def add_workspace_parser(commands: Any) -> None:
    """Register `workspace create|list|delete|start|stop`."""
    workspace = commands.add_parser("workspace", help="create, list and manage workspaces")
    workspace.add_argument("--url", help="base URL of serve (default: from settings)")
    actions = workspace.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a workspace and wait until it runs")
    create.add_argument("name", nargs="?", help="name (default: made from your owner name)")
    create.add_argument("--plan", default="small")
    create.add_argument("--image", default="debian-12")
    create.add_argument("--ttl", type=int, help="hours until it is deleted")
    create.add_argument("--owner", help="owner (operators and admins only)")
    list_ = actions.add_parser("list", help="list workspaces")
    list_.add_argument("--owner")
    list_.add_argument("--state")
    for action in ("delete", "start", "stop"):
        sub = actions.add_parser(action, help=f"{action} a workspace")
        sub.add_argument("workspace", help="name or id")
    for sub in actions.choices.values():
        if sub.prog.split()[-1] != "list":
            sub.add_argument("--no-wait", action="store_true", help="return once accepted")


def run(args: argparse.Namespace, default_url: str, token_file: Path) -> int:
    """Run one workspace command; the exit status."""
    try:
        with httpx.Client(
            base_url=args.url or default_url,
            headers={"Authorization": f"Bearer {_token(token_file)}"},
            timeout=30.0,
        ) as client:
            return ACTIONS[args.action](client, args)
    except CliError as error:
        print(f"provisioner: {error}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(
            f"provisioner: cannot reach the server ({error}); is `provisioner serve` running?",
            file=sys.stderr,
        )
        return 1


def _token(token_file: Path) -> str:
    """The API token: PROVISIONER_TOKEN, else the one `serve` saved at first start."""
    token = os.environ.get("PROVISIONER_TOKEN")
    if token:
        return token
    try:
        return token_file.read_text().strip()
    except OSError:
        raise CliError(
            "no token: set PROVISIONER_TOKEN, or run `provisioner serve` once "
            f"to create {token_file}"
        ) from None


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One API call; the decoded JSON, or CliError with the server's message."""
    response = client.request(method, path, **kwargs)
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise CliError(f"{message} (HTTP {response.status_code})")
    return response.json()


def _create(client: httpx.Client, args: argparse.Namespace) -> int:
    """Create a workspace and follow its operation."""
    body: dict[str, Any] = {"plan": args.plan, "image": args.image}
    for key, value in (("name", args.name), ("ttl_hours", args.ttl), ("owner", args.owner)):
        if value is not None:
            body[key] = value
    answer = _call(client, "POST", "/v1/workspaces", json=body)
    ws = answer["workspace"]
    print(f"workspace {ws['name']} ({ws['id']}) accepted on node {ws['node']}, plan {ws['plan']}")
    if ws["state"] == "awaiting_approval":
        print("it needs an operator's approval before it is built")
        return 0
    return _follow(client, answer["operation"], args.no_wait)


def _list(client: httpx.Client, args: argparse.Namespace) -> int:
    """Print workspaces as a table, all pages."""
    params = {k: v for k, v in (("owner", args.owner), ("state", args.state)) if v}
    print(f"{'NAME':24} {'STATE':18} {'PLAN':8} {'NODE':12} {'OWNER':20} EXPIRES")
    cursor = None
    while True:
        page = _call(
            client,
            "GET",
            "/v1/workspaces",
            params={**params, **({"cursor": cursor} if cursor else {})},
        )
        for ws in page["workspaces"]:
            print(
                f"{ws['name']:24} {ws['state']:18} {ws['plan']:8} {ws['node']:12} "
                f"{ws['owner']:20} {ws['expires_at'] or '-'}"
            )
        cursor = page["next_cursor"]
        if not cursor:
            return 0


def _act(client: httpx.Client, args: argparse.Namespace) -> int:
    """Delete, start or stop a workspace named by name or id."""
    ws_id = _resolve(client, args.workspace)
    method, path = ("DELETE", f"/v1/workspaces/{ws_id}")
    if args.action != "delete":
        method, path = "POST", f"/v1/workspaces/{ws_id}/{args.action}"
    return _follow(client, _call(client, method, path), args.no_wait)


def _resolve(client: httpx.Client, name_or_id: str) -> str:
    """The id of the live workspace with this name (or the id itself)."""
    if name_or_id.startswith("ws_"):
        return name_or_id
    page = _call(client, "GET", "/v1/workspaces", params={"name": name_or_id, "limit": 200})
    matches = [
        ws for ws in page["workspaces"] if ws["state"] not in ("deleted", "failed", "denied")
    ]
    if not matches:
        raise CliError(f"no live workspace named {name_or_id!r}; see `provisioner workspace list`")
    return str(matches[-1]["id"])


def _follow(client: httpx.Client, op: dict[str, Any], no_wait: bool) -> int:
    """Print each step as it completes until the operation ends; 0 if it succeeded."""
    print(f"operation {op['id']} ({op['kind']}) {op['state']}")
    if no_wait:
        return 0
    shown: dict[str, str] = {}
    started = time.monotonic()
    while True:
        for step in op["steps"]:
            if shown.get(step["name"]) != step["state"]:
                shown[step["name"]] = step["state"]
                elapsed = time.monotonic() - started
                mark = MARKS.get(step["state"], step["state"])
                print(
                    f"  [{elapsed:5.1f}s] {mark:6} {step['name']}: {step['detail'] or ''}".rstrip()
                )
        if op["state"] in TERMINAL:
            break
        time.sleep(POLL_SECONDS)
        op = _call(client, "GET", f"/v1/operations/{op['id']}")
    ws = _call(client, "GET", f"/v1/workspaces/{op['workspace_id']}")
    if op["state"] != "succeeded":
        print(f"{op['kind']} {op['state']}: {op['error']}", file=sys.stderr)
        return 1
    print(f"done: workspace {ws['name']} is {ws['state']} (domain {ws['domain']} on {ws['node']})")
    return 0


ACTIONS = {"create": _create, "list": _list, "delete": _act, "start": _act, "stop": _act}
