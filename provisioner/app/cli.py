"""The `provisioner` command line: serve, tokens, nodes, images, workspaces."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from api.errors import CURRENT_REQUEST_ID
from provisioner import settings as settings_module
from provisioner.adapters.store.engine import SqlStore
from provisioner.app import cli_client
from provisioner.app.acl_cli import add_acl_parser, run_acl
from provisioner.app.composition import (  # noqa: F401 (System, built, ensure_admin: used by tests as main.*)
    CLI_TOKEN_FILE,
    DRAIN_SECONDS,
    System,
    built,
    ensure_admin,
    now,
    serve,
)
from provisioner.app.tailnet import build_tailnet, policy_publisher
from provisioner.errors import ProvisionerError
from provisioner.images import ImageFiles
from provisioner.models import SYSTEM_ACTOR, Capacity, Node, Role
from provisioner.redaction import RedactingFilter
from provisioner.settings import Settings
from provisioner.tokens import parse_duration

NODE_OPTIONS = frozenset(
    {"ssh_host", "ssh_port", "ssh_user", "ssh_key", "host_key", "libvirt_uri", "pool", "network"}
    | {"virt_type"}
)


async def token_create(settings: Settings, args: argparse.Namespace) -> None:
    """Create an API token directly in the database and print it once."""
    expires = parse_duration(args.expires) if args.expires else None
    async with built(settings) as system:
        token, secret = await system.tokens.create(
            SYSTEM_ACTOR, Role(args.role), args.owner, expires
        )
    print(f"token {token.id} ({token.role.value} for {token.owner}); the secret, shown once:")
    print(secret)


async def node_list(settings: Settings, _args: argparse.Namespace) -> None:
    """Print the nodes with their host-key state, as the database knows them."""
    async with built(settings) as system:
        listed = await system.core.nodes.list()
    for node, used in listed:
        where = f"{node.ssh_user}@{node.ssh_host}:{node.ssh_port}" if node.ssh_host else "local"
        cap = node.capacity
        trust = node.trust.value
        if node.presented_fingerprint:
            trust += f" (presents {node.presented_fingerprint})"
        print(
            f"{node.name:16} {where:28} {node.libvirt_uri:24} "
            f"{used.vcpus}/{cap.vcpus} vCPU {used.memory_mib}/{cap.memory_mib} MiB  {trust}"
        )


async def node_check(settings: Settings, _args: argparse.Namespace) -> None:
    """Check every node answers (SSH, libvirt, pool space); exit 1 if one does not."""
    async with built(settings) as system:
        health = await system.fleet.check(timeout=10.0)
    for name, problem in health.items():
        print(f"{name:16} {'ok' if problem is None else 'FAIL: ' + problem}")
    if any(health.values()):
        raise SystemExit(1)


async def node_add(settings: Settings, args: argparse.Namespace) -> None:
    """Register a node (kept in the database); an unknown host key is fetched and shown."""
    fields = {
        key: value for key, value in vars(args).items() if key in NODE_OPTIONS and value is not None
    }
    capacity = Capacity(args.vcpus, args.memory_mib, args.disk_gib)
    async with built(settings) as system:
        node = await system.core.nodes.add(
            SYSTEM_ACTOR, Node(args.name, capacity=capacity, **fields)
        )
    print(f"node {node.name} added ({node.trust.value})")
    if node.presented_fingerprint:
        print(
            f"it presents host key {node.presented_fingerprint}; compare it with "
            "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the node, then:\n"
            f"  provisioner node approve {node.name} --fingerprint {node.presented_fingerprint}"
        )


async def node_approve(settings: Settings, args: argparse.Namespace) -> None:
    """Trust the host key a node presents, after checking its fingerprint out of band."""
    async with built(settings) as system:
        await system.core.nodes.probe(args.name)
        node = await system.core.nodes.approve_host_key(SYSTEM_ACTOR, args.name, args.fingerprint)
    print(f"node {node.name}: host key {args.fingerprint} trusted")


async def image_import(settings: Settings, args: argparse.Namespace) -> None:
    """Upload an image (and kernel boot files) into each node's pool, printing progress."""
    files = ImageFiles(
        Path(args.file),
        Path(args.kernel) if args.kernel else None,
        Path(args.initrd) if args.initrd else None,
        args.cmdline,
    )
    async with built(settings) as system:
        image = await system.images.import_image(
            SYSTEM_ACTOR, args.name, files, args.node or [], lambda line: print(line, flush=True)
        )
    boot = f", kernel boot ({image.kernel})" if image.kernel else ""
    print(f"image {image.name}: base volume {image.base_volume}{boot}")


def _tag_request_id(record: logging.LogRecord) -> bool:
    """Give every log line the id of the HTTP request it was written for ('-' if none)."""
    record.request_id = CURRENT_REQUEST_ID.get()
    return True


def _parser() -> argparse.ArgumentParser:
    """The command line: serve, token, node, workspace."""
    parser = argparse.ArgumentParser(prog="provisioner", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (or PROVISIONER_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the API, workers and scheduler in one process")
    token = commands.add_parser("token", help="manage API tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="create a token and print its secret once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--owner", required=True, help="who the token acts as, e.g. ci-bot")
    create.add_argument("--expires", help="lifetime such as 12h, 30d or 2w (default: never)")
    node = commands.add_parser("node", help="inspect nodes").add_subparsers(
        dest="action", required=True
    )
    add = node.add_parser("add", help="register a node (kept in the database)")
    add.add_argument("name", help="the node's name")
    add.add_argument("--ssh-host", help="where to reach it over SSH (omit for a local libvirt)")
    add.add_argument("--ssh-port", type=int, help="default 2222")
    add.add_argument("--ssh-user", help="default root")
    add.add_argument("--ssh-key", help="private key file (default: the data dir's keys/id_ed25519)")
    add.add_argument("--host-key", help="the node's host key line or SHA256 fingerprint, to pin")
    add.add_argument("--libvirt-uri", help="on the node; default qemu:///system")
    add.add_argument("--pool", help="storage pool; default `default`")
    add.add_argument("--network", help="libvirt network; default `default`")
    add.add_argument("--virt-type", choices=("auto", "kvm", "qemu"), help="default auto")
    add.add_argument("--vcpus", type=int, default=64)
    add.add_argument("--memory-mib", type=int, default=262144)
    add.add_argument("--disk-gib", type=int, default=4096)
    node.add_parser("list", help="list nodes with their host-key state")
    node.add_parser("check", help="check every node answers (SSH, libvirt, pool)")
    approve = node.add_parser("approve", help="trust the SSH host key a node presents")
    approve.add_argument("name", help="the node's name")
    approve.add_argument(
        "--fingerprint", required=True, help="SHA256:… as shown by `node list`, checked by you"
    )
    image = commands.add_parser("image", help="manage base images").add_subparsers(
        dest="action", required=True
    )
    imp = image.add_parser("import", help="upload an image into each node's pool once")
    imp.add_argument("name", help="image name, e.g. debian-12")
    imp.add_argument("file", metavar="QCOW2", help="the base disk image")
    imp.add_argument("--kernel", help="kernel for direct kernel boot")
    imp.add_argument("--initrd", help="initrd for direct kernel boot")
    imp.add_argument("--cmdline", help="kernel command line, e.g. 'root=/dev/vda1 console=ttyS0'")
    imp.add_argument("--node", action="append", help="only this node (repeatable)")
    cli_client.add_workspace_parser(commands)
    add_acl_parser(commands)
    return parser


async def acl_command(settings: Settings, args: argparse.Namespace) -> None:
    """`acl render|diff|push` against the configured tailnet (render works without one)."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = await SqlStore.open(settings.database_url)
    tailnet = build_tailnet(settings.tailnet)
    try:
        status = await run_acl(args, policy_publisher(settings, store, tailnet, now))
    finally:
        if tailnet is not None:
            await tailnet.close()
        await store.close()
    sys.exit(status)


COMMANDS: dict[
    tuple[str, str | None], Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, None]]
] = {
    ("token", "create"): token_create,
    ("node", "list"): node_list,
    ("node", "check"): node_check,
    ("node", "add"): node_add,
    ("node", "approve"): node_approve,
    ("image", "import"): image_import,
    **{("acl", action): acl_command for action in ("render", "diff", "push")},
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `provisioner` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = settings_module.load(args.config)
        # Only the server logs at the configured level; CLI commands print what matters.
        logging.basicConfig(
            level=settings.log_level if args.command == "serve" else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
        )
        for handler in logging.getLogger().handlers:
            handler.addFilter(_tag_request_id)
            # One redaction for every line the server logs (aiohttp's access and parser logs too).
            handler.addFilter(RedactingFilter())
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        if args.command == "serve":
            asyncio.run(serve(settings))
        elif args.command == "workspace":
            token_file = settings.data_dir / CLI_TOKEN_FILE
            sys.exit(cli_client.run(args, settings.url, token_file))
        else:
            asyncio.run(COMMANDS[(args.command, getattr(args, "action", None))](settings, args))
    except ProvisionerError as error:
        print(f"provisioner: {error.message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
