"""The two policy dialects (Tailscale, Headscale) as one table, and the tag syntax both share."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from provisioner.errors import InvalidInput

# tailcfg.CheckTag: `tag:`, then an ASCII letter, then ASCII letters, digits and dashes.
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def tag_problem(tag: str) -> str | None:
    """Why `tag` is not a valid tag (tailcfg.CheckTag), or None when it is."""
    if not tag.startswith("tag:"):
        return f"{tag!r}: tags must start with 'tag:'"
    if not _TAG_NAME.fullmatch(tag[4:]):
        return f"{tag!r}: after 'tag:' a letter, then only letters, digits or dashes"
    return None


def is_email(text: str) -> bool:
    """Whether `text` looks like a login e-mail (one @, something on both sides)."""
    return _EMAIL.fullmatch(text) is not None


def _tailscale_user(email: str) -> str:
    return email.strip().lower()


def _headscale_user(email: str) -> str:
    # Headscale names users by their user name: the e-mail's local part, then `@`.
    return email.strip().lower().split("@", 1)[0] + "@"


@dataclass(frozen=True)
class Dialect:
    """How one control server spells users and which autogroups it knows."""

    name: str
    user: Callable[[str], str]  # an owner's e-mail as this server names the user
    admins: tuple[str, ...]  # who owns the tags when no ops group has members
    autogroups: frozenset[str]

    def is_user(self, text: str) -> bool:
        """Whether `text` names a user in this dialect."""
        return is_email(text) or (
            self.name == "headscale" and text.endswith("@") and "@" not in text[:-1]
        )


_HEADSCALE_AUTOGROUPS = frozenset({"internet", "member", "nonroot", "tagged", "self", "danger-all"})
_TAILSCALE_AUTOGROUPS = _HEADSCALE_AUTOGROUPS | {
    "members",  # the legacy spelling old default policies carry
    "admin",
    "owner",
    "it-admin",
    "network-admin",
    "billing-admin",
    "auditor",
    "shared",
}

DIALECTS = {
    "tailscale": Dialect(
        "tailscale",
        _tailscale_user,
        ("autogroup:admin",),
        frozenset(f"autogroup:{n}" for n in _TAILSCALE_AUTOGROUPS),
    ),
    # Headscale has no roles: no autogroup:admin (it refuses the policy), users as `name@`.
    "headscale": Dialect(
        "headscale",
        _headscale_user,
        (),
        frozenset(f"autogroup:{n}" for n in _HEADSCALE_AUTOGROUPS),
    ),
}


def dialect(name: str) -> Dialect:
    """The dialect called `name`; InvalidInput for another name."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise InvalidInput(
            f"unknown policy dialect {name!r}; use one of {', '.join(sorted(DIALECTS))}"
        ) from None
