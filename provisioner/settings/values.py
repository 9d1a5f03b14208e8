"""Kinds of setting values: each turns one raw value (env text or TOML) into a typed one."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from provisioner.errors import ConfigError, InvalidInput
from provisioner.tokens import parse_duration


class Kind(Protocol):
    """How one setting's value is read and what it allows (the README's "allowed" column)."""

    @property
    def allowed(self) -> str:
        """What values this kind accepts, in a few words of Markdown."""
        ...

    def parse(self, value: Any, where: str) -> Any:
        """The typed value, or ConfigError naming `where` and what is allowed."""
        ...


def _scalar(value: Any, where: str) -> str:
    """A TOML scalar or env text as text; tables and lists are refused."""
    if isinstance(value, dict | list):
        raise ConfigError(f"{where} must be a single value, not a table or list")
    return str(value)


@dataclass(frozen=True)
class Text:
    """Text, optionally starting with `prefix` (then `what` names it); `secret` hides it in docs."""

    prefix: str = ""
    what: str = ""
    secret: bool = False

    @property
    def allowed(self) -> str:
        """Text, a prefixed token, or a secret."""
        shape = f"`{self.prefix}…`" if self.prefix else "text"
        return f"secret, {shape}" if self.secret else shape

    def parse(self, value: Any, where: str) -> str:
        """The text, checked for its prefix."""
        text = _scalar(value, where)
        if not text.startswith(self.prefix):
            raise ConfigError(f"{where} must be {self.what} ({self.prefix}…)")
        return text


@dataclass(frozen=True)
class Base64:
    """A secret given base64-encoded (the GlueOps-style node key)."""

    allowed = "secret, base64"

    def parse(self, value: Any, where: str) -> str:
        """The encoded text, once it is known to decode."""
        text = _scalar(value, where)
        try:
            base64.b64decode(text, validate=True)
        except binascii.Error:
            raise ConfigError(f"{where} is not valid base64") from None
        return text


@dataclass(frozen=True)
class Url:
    """An http(s) base URL."""

    allowed = "`http(s)://…` URL"

    def parse(self, value: Any, where: str) -> str:
        """The URL, if it is one."""
        text = _scalar(value, where)
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
            raise ConfigError(f"{where} must be an http:// or https:// URL, got {text!r}")
        return text


@dataclass(frozen=True)
class Whole:
    """A whole number within bounds; `cast=float` for settings the code reads as seconds."""

    low: int
    high: int
    cast: Callable[[int], Any] = int

    @property
    def allowed(self) -> str:
        """The bounds."""
        return f"{self.low} to {self.high}"

    def parse(self, value: Any, where: str) -> Any:
        """The number, within bounds."""
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a whole number, got {value!r}") from None
        if not self.low <= number <= self.high:
            raise ConfigError(f"{where} must be between {self.low} and {self.high}, got {number}")
        return self.cast(number)


@dataclass(frozen=True)
class Choice:
    """One of a few words; `fold` makes it case-insensitive (log levels)."""

    choices: tuple[str, ...]
    fold: bool = False

    @property
    def allowed(self) -> str:
        """The words."""
        return ", ".join(f"`{c}`" for c in self.choices)

    def parse(self, value: Any, where: str) -> str:
        """The word, if it is one of the choices."""
        text = _scalar(value, where)
        text = text.upper() if self.fold else text
        if text not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(self.choices)}, not {value!r}")
        return text


@dataclass(frozen=True)
class File:
    """A path."""

    allowed = "path"

    def parse(self, value: Any, where: str) -> Path:
        """The path (not read here)."""
        return Path(_scalar(value, where))


# The unit suffixes parse_duration does not know yet (see /work/notes/requests-settings-api.md);
# once it does, this table and its branch in parse_seconds go.
_SHORT_UNITS = {"s": 1, "m": 60}
_SHORT_RE = re.compile(r"([0-9]{1,7})([sm])")


def parse_seconds(value: Any, where: str) -> timedelta:
    """A duration: a number of seconds, or text like 90s, 15m, 24h, 2d, 1w."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    text = _scalar(value, where).strip()
    if text.isdecimal():
        return timedelta(seconds=int(text))
    short = _SHORT_RE.fullmatch(text)
    if short:
        return timedelta(seconds=int(short.group(1)) * _SHORT_UNITS[short.group(2)])
    try:
        return parse_duration(text)
    except InvalidInput:
        raise ConfigError(
            f"{where} must be a duration like 90s, 15m, 24h, 2d or 1w, got {value!r}"
        ) from None


def _shown(span: timedelta) -> str:
    """A duration the way a setting writes it (24h rather than 86400)."""
    seconds = int(span.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Duration:
    """A duration within bounds; with `many`, a comma-separated list (largest first)."""

    low: timedelta
    high: timedelta
    many: bool = False

    @property
    def allowed(self) -> str:
        """The syntax and the bounds."""
        one = f"duration `s`/`m`/`h`/`d`/`w`, {_shown(self.low)} to {_shown(self.high)}"
        return f"comma-separated, each a {one}" if self.many else one

    def parse(self, value: Any, where: str) -> Any:
        """A timedelta, or a tuple of them."""
        items = _items(value, where) if self.many else [value]
        spans = [self._one(item, where) for item in items]
        return tuple(sorted(set(spans), reverse=True)) if self.many else spans[0]

    def _one(self, value: Any, where: str) -> timedelta:
        span = parse_seconds(value, where)
        if not self.low <= span <= self.high:
            raise ConfigError(
                f"{where} must be between {_shown(self.low)} and {_shown(self.high)}, got {value!r}"
            )
        return span


def _items(value: Any, where: str) -> list[Any]:
    """A comma-separated string or a TOML list, as its non-empty items."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{where} must be a comma-separated list")
    return [item.strip() if isinstance(item, str) else item for item in items if str(item).strip()]


@dataclass(frozen=True)
class Words:
    """A comma-separated list (or TOML list) of words, as a frozenset."""

    allowed = "comma-separated"

    def parse(self, value: Any, where: str) -> frozenset[str]:
        """The words."""
        return frozenset(_scalar(item, where) for item in _items(value, where))


# tailcfg.CheckTag: `tag:`, a letter, then ASCII letters, digits and '-'.
TAG_RE = re.compile(r"tag:[A-Za-z][A-Za-z0-9-]*")


@dataclass(frozen=True)
class Tags:
    """Tailscale tags; with `many`, a comma-separated list of them (a tuple)."""

    many: bool = True

    @property
    def allowed(self) -> str:
        """The tag syntax."""
        return "comma-separated tags `tag:name`" if self.many else "a tag `tag:name`"

    def parse(self, value: Any, where: str) -> Any:
        """The tag or tags, each checked."""
        tags = [_scalar(t, where) for t in (_items(value, where) if self.many else [value])]
        for tag in tags:
            if not TAG_RE.fullmatch(tag):
                raise ConfigError(
                    f"{where}: {tag!r} is not a tag; write tag:NAME, NAME a letter "
                    "then letters, digits or '-'"
                )
        return tuple(dict.fromkeys(tags)) if self.many else tags[0]


@dataclass(frozen=True)
class Origins:
    """CORS origins; empty means CORS stays off."""

    allowed = "comma-separated `https://host` origins or `*`"

    def parse(self, value: Any, where: str) -> frozenset[str]:
        """The origins, without trailing slashes."""
        origins = frozenset(str(o).rstrip("/") for o in _items(value, where))
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(f"{where}: {origin!r} is not an origin like https://host")
        return origins
