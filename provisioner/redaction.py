"""The one redaction mechanism: secrets never reach a log, an operation log, Slack or the API.

`redact(text)` removes what is known to be secret (passwords registered at run time with
`SECRETS.add`) and what looks secret (private key blocks, Tailscale/Headscale keys, our API
tokens, Slack tokens, Authorization values, `password=`-style values). `LineRedactor` does the
same for a stream of lines, where a private key spans several lines. `RedactingFilter` applies it
to every log record a handler emits.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

MASK = "[REDACTED]"
# Shorter "secrets" would blank out ordinary words all over the output.
MIN_SECRET_LENGTH = 4

# Names whose value is secret: in a query string or form (`name=`), and as a JSON/YAML field.
_FORM_NAMES = (
    "password|passwd|pass|pwd|token|access_token|refresh_token|secret|client_secret|key|api_key"
)
# Not "key" here: "host key: ssh-ed25519 AAAA…" is public and ops need to read it.
_FIELD_NAMES = "password|passwd|token|access_token|refresh_token|secret|client_secret|api_key"


def _rule(markers: tuple[str, ...], pattern: str, replacement: str, flags: int = 0) -> _Rule:
    return markers, re.compile(pattern, flags), replacement


_Rule = tuple[tuple[str, ...], re.Pattern[str], str]
# Each rule runs only when one of its markers (lower case) is in the lower-cased text: a regex
# costs microseconds per line, a substring check tens of nanoseconds.
_RULES: tuple[_Rule, ...] = (
    # A whole key block; unterminated (the end is cut off): everything after BEGIN.
    _rule(
        ("private key",),
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",
        f"-----{MASK} PRIVATE KEY-----",
        re.DOTALL,
    ),
    # The same block base64-encoded (SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED).
    _rule(("ls0tls1crudj",), r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]*", MASK),
    _rule(("tskey-", "hskey-"), r"\b(tskey|hskey)-[A-Za-z0-9._-]+", rf"\1-{MASK}"),
    _rule(("prov_",), r"\bprov_[A-Za-z0-9_-]+", f"prov_{MASK}"),
    _rule(("xox", "xapp-"), r"\b(xox[abposre](?:\.xox[a-z])?|xapp)-[A-Za-z0-9-]+", rf"\1-{MASK}"),
    # "Authorization: Bearer abc", "authorization=Basic abc", '"Authorization": "abc"'.
    _rule(
        ("authoriz",),
        r"""(authorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|token|digest)\s+)?)[^\s"',;]+""",
        rf"\1{MASK}",
        re.IGNORECASE,
    ),
    _rule(("bearer",), r"\b(bearer\s+)[A-Za-z0-9._~+/=-]{12,}", rf"\1{MASK}", re.IGNORECASE),
    # Query strings and forms: password=..., &token=... (not "mykey=", but "my_key=").
    _rule(
        ("pass", "pwd=", "token=", "secret=", "key="),
        rf"(?<![A-Za-z0-9])((?:{_FORM_NAMES})=)[^&\s\"',;]+",
        rf"\1{MASK}",
        re.IGNORECASE,
    ),
    # JSON and YAML: "password": "...", secret: ... (an empty value stays as it is).
    _rule(
        ("passw", 'token"', "token'", "token:", 'secret"', "secret'", "secret:", "api_key"),
        rf"""(?<![A-Za-z0-9])((?:{_FIELD_NAMES})["']?\s*:\s*)"""
        r"""(?:"[^"]+"|'[^']+'|[^\s"',{}\[\]][^\s,}]*)""",
        rf"\1{MASK}",
        re.IGNORECASE,
    ),
)
# Every rule's markers in one place: a line containing none of them skips all the rules.
_MARKERS = (
    "key",
    "xox",
    "xapp-",
    "prov_",
    "bearer",
    "authoriz",
    "pass",
    "pwd=",
    "token",
    "secret",
    "ls0tls1crudj",
)
_BEGIN_KEY = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----")
_END_KEY = re.compile(r"-----END[A-Z0-9 ]*PRIVATE KEY-----")


class SecretRegistry:
    """Secrets known at run time (one-time passwords, generated keys): thread-safe, process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        # Replaced whole under the lock; readers use whichever tuple they see, without locking.
        self._ordered: tuple[str, ...] = ()

    def add(self, secret: str) -> None:
        """Redact `secret` wherever it appears from now on (too short ones are ignored)."""
        if len(secret) >= MIN_SECRET_LENGTH:
            self._change(lambda secrets: secrets | {secret})

    def discard(self, secret: str) -> None:
        """Stop redacting `secret` (it is no longer valid anywhere)."""
        self._change(lambda secrets: secrets - {secret})

    def _change(self, change: Callable[[frozenset[str]], frozenset[str]]) -> None:
        with self._lock:
            self._secrets = change(self._secrets)
            # Longest first: a secret containing another is masked whole.
            self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    def mask(self, text: str) -> str:
        """`text` with every registered secret replaced by the mask."""
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


SECRETS = SecretRegistry()


def redact(text: str) -> str:
    """`text` without registered secrets and without anything that looks like a secret."""
    text = SECRETS.mask(text)
    lowered = text.lower()
    for marker in _MARKERS:
        if marker in lowered:
            break
    else:
        return text
    for markers, pattern, replacement in _RULES:
        for marker in markers:
            if marker in lowered:
                text = pattern.sub(replacement, text)
                break
    return text


class LineRedactor:
    """Redacts a stream line by line, masking every line of a private key block in between."""

    def __init__(self) -> None:
        self._in_key = False

    def __call__(self, line: str) -> str:
        """The redacted line (a line inside a key block becomes the mask)."""
        if self._in_key:
            end = _END_KEY.search(line)
            if end is None:
                return MASK
            self._in_key = False
            return MASK + redact(line[end.end() :])
        begin = _BEGIN_KEY.search(line)
        if begin is not None and _END_KEY.search(line, begin.end()) is None:
            self._in_key = True
        return redact(line)


class RedactingFilter(logging.Filter):
    """Redacts a record's final message, exception and stack text; install it on handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
