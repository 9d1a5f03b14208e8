"""What callers ask of the core, and the rules a request must meet before anything is stored."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from provisioner.catalog import Catalog
from provisioner.errors import InvalidInput, PermissionDenied, UnknownReference
from provisioner.models import Actor, Image, Node, Plan

NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
OWNER_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,255}$")


@dataclass(frozen=True)
class CreateRequest:
    """What a caller asks for when creating a workspace; no plan or image: the defaults."""

    plan: str | None = None
    image: str | None = None
    name: str | None = None
    owner: str | None = None
    ttl_hours: int | None = None
    playbooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Defaults:
    """What a create that names no plan or image gets (settings: `[defaults]`)."""

    plan: str = "small"
    image: str = "debian-12"


def plan_for(catalog: Catalog, requested: str | None, defaults: Defaults) -> Plan:
    """The requested plan, else the default; UnknownReference (field `plan`) if there is none."""
    try:
        return catalog.plan(requested or defaults.plan)
    except UnknownReference as error:
        raise UnknownReference(error.message, field="plan") from None


def image_for(catalog: Catalog, requested: str | None, defaults: Defaults) -> Image:
    """The requested image, else the default; UnknownReference (field `image`) if there is none."""
    try:
        return catalog.image(requested or defaults.image)
    except UnknownReference as error:
        raise UnknownReference(error.message, field="image") from None


@dataclass(frozen=True)
class Idempotency:
    """A caller's idempotency key and the hash of the request it came with."""

    key: str
    request_hash: str


def owner_for(actor: Actor, requested: str | None) -> str:
    """The owner of a new workspace: the caller, or whom an operator names."""
    owner = requested or actor.owner_scope or actor.name
    if not OWNER_RE.fullmatch(owner):
        raise InvalidInput(
            "owner may hold letters, digits and . _ @ + - (at most 255)", field="owner"
        )
    if actor.owner_scope is not None and owner != actor.owner_scope:
        raise PermissionDenied("you may only create workspaces for yourself", field="owner")
    return owner


def ttl_hours(plan: Plan, requested: int | None) -> int:
    """The lifetime in hours: the plan's default, or a requested one within its maximum."""
    if requested is None:
        return plan.ttl_hours
    if not 1 <= requested <= plan.max_ttl_hours:
        raise InvalidInput(
            f"ttl_hours must be between 1 and {plan.max_ttl_hours} for plan {plan.name}",
            field="ttl_hours",
        )
    return requested


def workspace_name(requested: str | None, owner: str) -> str:
    """A valid workspace name: the requested one, or one made from the owner's name."""
    if requested is not None:
        if not NAME_RE.fullmatch(requested):
            raise InvalidInput(
                f"invalid name {requested!r}: use 1-40 lower-case letters, digits and '-', "
                "starting with a letter and not ending with '-'",
                field="name",
            )
        return requested
    stem = (
        re.sub(r"[^a-z0-9-]+", "-", owner.split("@", maxsplit=1)[0].lower()).strip("-")[:30] or "ws"
    )
    if not stem[0].isalpha():
        stem = f"ws-{stem}"[:30]
    return f"{stem.rstrip('-')}-{secrets.token_hex(2)}"


MAX_INT32 = 2**31 - 1
LIBVIRT_URI_RE = re.compile(r"^(test|qemu|qemu\+(ssh|unix|tcp|tls))://[^\s]*$")


def check_node(node: Node) -> None:
    """InvalidInput unless the node entry is well formed."""
    if not NAME_RE.fullmatch(node.name):
        raise InvalidInput(
            "node name: use 1-40 lower-case letters, digits and '-', starting with a letter"
        )
    if not LIBVIRT_URI_RE.fullmatch(node.libvirt_uri):
        raise InvalidInput("libvirt_uri must look like qemu:///system or test:///default")
    if not 1 <= node.ssh_port <= 65535:
        raise InvalidInput("ssh_port must be between 1 and 65535")
    cap = node.capacity
    if min(cap.vcpus, cap.memory_mib, cap.disk_gib) < 1:
        raise InvalidInput("capacity must give at least 1 vCPU, 1 MiB and 1 GiB")
    if max(cap.vcpus, cap.memory_mib, cap.disk_gib) > MAX_INT32:
        raise InvalidInput(f"capacity values must be at most {MAX_INT32}")


RESERVED_LOGINS = frozenset(
    {"root", "provisioner", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news"}
    | {"uucp", "proxy", "www-data", "backup", "list", "irc", "nobody", "sshd", "systemd-network"}
)


def login_name(owner: str) -> str:
    """The owner's user name inside their workspaces: the e-mail's local part, made POSIX-safe."""
    name = re.sub(r"[^a-z0-9_-]", "-", owner.split("@", 1)[0].lower()).strip("-")[:32]
    name = name if name[:1].isalpha() else f"u{name}"[:32]
    # System accounts (and ours) are never handed to an owner.
    return f"{name[:27]}-user" if name in RESERVED_LOGINS else name


# tailcfg.CheckTag: a letter first, then ASCII letters, digits and '-'.
_TAG_NAME = re.compile(r"[a-z][a-z0-9-]*")


def owner_tag(owner: str) -> str:
    """The owner's Tailscale tag: `tag:` and the e-mail's local part, lower-case, [^a-z0-9-] → -.

    InvalidInput (code invalid_owner_tag) when that cannot be a tag: it must start with a letter.
    """
    name = re.sub(r"[^a-z0-9-]", "-", owner.split("@", 1)[0].lower())
    if not _TAG_NAME.fullmatch(name):
        raise InvalidInput(
            f"the owner {owner!r} cannot have a Tailscale tag: tag:{name} must start with a "
            "letter (a-z); ask an operator to create the workspace for an owner whose e-mail "
            "starts with a letter",
            code="invalid_owner_tag",
            field="owner",
        )
    return f"tag:{name}"
