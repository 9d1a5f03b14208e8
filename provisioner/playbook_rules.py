"""What an uploaded playbook may not contain: rules on member paths and on member text.

Nothing an upload brings may run on the provisioner itself (CONTRACT §6). PyYAML is not a
runtime dependency, so the text rules are a careful scan of the raw text, written to refuse
what they cannot read (a templated or aliased value) rather than to guess. Each rule has the
error code an API client sees and a reason that names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from provisioner.errors import InvalidInput

PLUGIN_DIRS = frozenset({"library", "module_utils", "plugins"})
LOCAL_NAME = re.compile(r"^(localhost(\.localdomain)?|127(\.\d+){3}|0\.0\.0\.0|::1?)$", re.I)


def refuse(member: str, code: str, reason: str) -> InvalidInput:
    """The error refusing an upload because of `member` (the archive's own spelling)."""
    return InvalidInput(f"playbook upload refused: member {member!r}: {reason}", code=code)


def check_path(member: str) -> PurePosixPath:
    """The member's relative path; refused if absolute, climbing, or a forbidden name."""
    if not member or "\x00" in member or "\\" in member:
        raise refuse(member, "upload_bad_name", "empty names, NUL and backslashes are refused")
    if member.startswith("/") or re.match(r"^[A-Za-z]:", member):
        raise refuse(member, "upload_absolute_path", "absolute paths are refused")
    path = PurePosixPath(member)
    if ".." in path.parts:
        raise refuse(member, "upload_parent_path", "paths with '..' are refused")
    for part in path.parts:
        if part in PLUGIN_DIRS or part.endswith("_plugins"):
            raise refuse(
                member,
                "upload_plugin_dir",
                f"plugin and module directories ({part}/) would run code on the provisioner",
            )
        if part.lower() in ("ansible.cfg", ".ansible.cfg"):
            raise refuse(member, "upload_ansible_cfg", "an ansible.cfg would reconfigure ansible")
    return path


@dataclass(frozen=True)
class TextRule:
    """A rule on a text member: `find` returns the offending snippet, or None."""

    code: str
    reason: str
    find: Callable[[str], str | None]


def _pattern(regex: str, flags: int = 0) -> Callable[[str], str | None]:
    compiled = re.compile(regex, flags)

    def find(text: str) -> str | None:
        found = compiled.search(text)
        return found.group(0) if found else None

    return find


def _key(name: str) -> str:
    """A YAML or JSON mapping key `name` (optionally quoted), followed by its colon."""
    return rf"""(?<![\w.-])["']?{name}["']?[ \t]*:(?![^\s])"""


def _values_of(key: str, allowed: Callable[[str], bool]) -> Callable[[str], str | None]:
    """Find a `key:` whose value (the rest of the line, else its indented block) is not allowed."""
    compiled = re.compile(_key(key))

    def find(text: str) -> str | None:
        for found in compiled.finditer(text):
            value = _value_after(text, found.end())
            if not allowed(value):
                return f"{found.group(0)} {value.strip()}"[:120]
        return None

    return find


def _value_after(text: str, start: int) -> str:
    """The scalar on the rest of the line, or the block of more-indented lines below it."""
    line_end = text.find("\n", start)
    rest = text[start : line_end if line_end >= 0 else len(text)].split(" #", maxsplit=1)[0].strip()
    if rest or line_end < 0:
        return rest
    block = []
    for line in text[line_end + 1 :].splitlines():
        if line.strip() and not line[:1].isspace() and not line.lstrip().startswith("-"):
            break
        block.append(line.split(" #")[0])
        if len(block) > 50:
            break
    return " ".join(block)


def _plain_hosts(value: str) -> bool:
    """Literal host names or patterns, none of them the provisioner itself, nothing templated."""
    if re.search(r"\{[{%]|(?:^|[\s\[,])[*&!][A-Za-z]|!!", value):
        return False  # templated, an alias or a tag: cannot be read without evaluating it
    names = re.split(r"[\s,:&!\[\]'\"-]+", value)
    return not any(LOCAL_NAME.match(name) for name in names if name)


def _relative_paths(value: str) -> bool:
    """Only relative, non-climbing, untemplated paths (a `with_file:` list or scalar)."""
    items = [item.strip(" -'\"") for item in re.split(r"[\n,\[\]]|\s-\s", value)]
    return not re.search(r"\{[{%]|\*[A-Za-z]", value) and not any(
        item.startswith(("/", "~")) or ".." in item for item in items if item
    )


def _remote_connection(value: str) -> bool:
    return value.strip("'\" ") in ("ssh", "smart", "paramiko")


# Lookups run on the controller: these run commands, make requests or write files there.
RUNNING_LOOKUPS = "pipe|lines|url|password|passwordstore"
# These read the controller's files: only a relative literal path inside the upload is allowed.
READING_LOOKUPS = "file|fileglob|template|first_found|ini|csvfile|unvault"
# A quoted literal that is relative, does not climb and is not templated.
RELATIVE_LITERAL = r"""["'](?![/~])(?:(?!\.\.)[^"'{}])*["']"""
CONTROLLER_FILE_KEYS = "src|file|include_vars|include_tasks|import_tasks|import_playbook|script|dir"

TEXT_RULES: tuple[TextRule, ...] = (
    TextRule(
        "upload_local_action",
        "local_action runs on the provisioner",
        _pattern(_key("local_action")),
    ),
    TextRule(
        "upload_delegate_localhost",
        "delegate_to must name the host literally, and never the provisioner itself",
        _values_of("delegate_to", _plain_hosts),
    ),
    TextRule(
        "upload_local_hosts",
        "a play's hosts must not be (or be templated into) the provisioner itself",
        _values_of("hosts", _plain_hosts),
    ),
    TextRule(
        "upload_local_connection",
        "only ssh connections are allowed (a local connection runs on the provisioner)",
        _values_of("connection", _remote_connection),
    ),
    TextRule(
        "upload_connection_vars",
        "connection variables would change how, and where, ansible connects",
        _pattern(
            r"\bansible_(?:connection|ssh_\w+|scp_\w+|sftp_\w+|host_key_checking|control_path\w*"
            r"|private_key_file|\w+_executable)\b"
        ),
    ),
    TextRule(
        "upload_controller_write",
        "fetch writes files on the provisioner",
        _pattern(_key(r"(?:ansible\.builtin\.)?fetch")),
    ),
    TextRule(
        "upload_controller_lookup",
        "this lookup runs commands, requests or writes on the provisioner",
        _pattern(
            rf"""\b(?:lookup|query|q)\s*\(\s*["'](?:ansible\.builtin\.)?(?:{RUNNING_LOOKUPS})["']"""
            rf"""|\bwith_(?:{RUNNING_LOOKUPS})\b"""
        ),
    ),
    TextRule(
        "upload_controller_path",
        "a lookup reading the provisioner's files needs a relative literal path in the upload",
        _pattern(
            rf"""\b(?:lookup|query|q)\s*\(\s*["'](?:ansible\.builtin\.)?(?:{READING_LOOKUPS})["']"""
            rf"""\s*(?!,\s*{RELATIVE_LITERAL}\s*[,)])"""
        ),
    ),
    TextRule(
        "upload_controller_path",
        "a lookup loop reading the provisioner's files needs relative literal paths",
        _values_of(f"with_(?:{READING_LOOKUPS})", _relative_paths),
    ),
    TextRule(
        "upload_controller_path",
        "a controller-side path must stay inside the upload (no absolute path, ~ or ..)",
        _pattern(
            rf"""(?<![\w.-])["']?(?:{CONTROLLER_FILE_KEYS})["']?\s*[:=]\s*["']?(?:/|~|\.\./)"""
            r"""|\{%-?\s*(?:include|import|from|extends)\s+["'](?:/|~|\.\./)"""
        ),
    ),
    TextRule(
        "upload_template_escape",
        "templates may not reach Python internals (__…__ or attr())",
        _pattern(r"\{[{%](?:(?![}%]\}).)*?(?:__|\battr\s*\()", re.DOTALL),
    ),
    TextRule(
        "upload_escaped_text",
        "escape sequences in quoted text (\\x, \\u, \\U, \\N) could hide a refused keyword",
        _pattern(r"\\[xuUN][0-9A-Fa-f{]"),
    ),
)


def check_text(member: str, text: str) -> None:
    """Refuse `member` if its text breaks a rule, naming the rule and what was found."""
    for rule in TEXT_RULES:
        found = rule.find(text)
        if found is not None:
            raise refuse(member, rule.code, f"{rule.reason} (found {found.strip()!r})")
