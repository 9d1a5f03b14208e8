"""The private working directory of one ansible-playbook run, and the environment it runs in."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.errors import InvalidInput, PlaybookFailed
from provisioner.ports.playbooks import PlaybookTarget

HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]*$")  # a DNS name, IPv4 or IPv6 address
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
HOST_KEY_RE = re.compile(r"^((?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+) ([A-Za-z0-9+/]+={0,3})(?: .*)?$")
EXTRA_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Host keys are looked up under these names, not under address and port: a target and a jump
# host on the same address (or a guest address someone else uses) never share a pin.
TARGET_ALIAS, JUMP_ALIAS = "provisioner-target", "provisioner-jump"


@dataclass(frozen=True)
class Prepared:
    """What the command line and the child's environment point at, inside the work dir."""

    inventory: Path
    extra_vars: Path
    entry: Path
    environment: dict[str, str]


def prepare_workdir(
    work: Path,
    playbook_dir: Path,
    entry: str,
    target: PlaybookTarget,
    extra_vars: Mapping[str, Any],
) -> Prepared:
    """Fill the (empty, 0700) `work` for one run; blocking, so run it in a thread."""
    _check_target(target)
    os.chmod(work, 0o700)
    for name in ("tmp", "cp", "keys"):
        (work / name).mkdir(mode=0o700)
    copy = work / "playbook"
    _copy_playbook(playbook_dir, copy)
    entry_path = _entry(copy, entry)
    key = _copy_key(target.private_key, work / "keys" / "target")
    jump_key = key
    if target.jump_private_key is not None and target.jump_private_key != target.private_key:
        jump_key = _copy_key(target.jump_private_key, work / "keys" / "jump")
    known_hosts = work / "known_hosts"
    known_hosts.write_text(_known_hosts(target))
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps(_inventory(target, key)))
    extra = work / "extra_vars.yml"
    extra.write_text(_unsafe_yaml(_checked_extra_vars(extra_vars)) + "\n")
    config = work / "ansible.cfg"
    config.write_text("# generated: every setting comes from the environment\n")
    env = _environment(work, config, _ssh_args(target, known_hosts, jump_key))
    return Prepared(inventory, extra, entry_path, env)


def _check_target(target: PlaybookTarget) -> None:
    """Refuse values that could smuggle options into the ssh command line or known_hosts."""
    hosts = [target.address] + ([target.jump_host] if target.jump_host else [])
    users = [target.user] + ([target.jump_user] if target.jump_host else [])
    if not all(HOST_RE.match(host) for host in hosts):
        raise InvalidInput("a playbook target address must be a host name or an IP address")
    if not all(USER_RE.match(user) for user in users):
        raise InvalidInput("a playbook target user must be a plain user name")
    if target.jump_host and target.jump_host_key is None:
        raise PlaybookFailed("the jump host's key is not pinned; refusing to run the playbook")


def _copy_playbook(source: Path, copy: Path) -> None:
    """Copy without links: a file link must point inside, a directory link is refused."""
    if not source.is_dir():
        raise PlaybookFailed(f"the playbook directory {source.name!r} does not exist")
    root = source.resolve()
    for directory, subdirs, files in os.walk(source):
        for name in subdirs + files:
            path = Path(directory) / name
            if not path.is_symlink():
                continue
            inside = path.resolve().is_relative_to(root)
            if name in subdirs or not inside or not path.is_file():
                rel = path.relative_to(source)
                raise PlaybookFailed(f"playbook member {rel}: a link out of the playbook")
    shutil.copytree(source, copy, symlinks=False)


def _entry(copy: Path, entry: str) -> Path:
    """The entry point inside the copy; never a path out of it."""
    relative = Path(entry)
    if relative.is_absolute() or ".." in relative.parts or not (copy / relative).is_file():
        raise PlaybookFailed(f"the playbook has no entry point {entry!r}")
    return copy / relative


def _copy_key(source: Path, copy: Path) -> Path:
    """A 0600 copy of a private key (its content never appears in a message)."""
    try:
        data = source.read_bytes()
    except OSError as error:
        raise PlaybookFailed(f"cannot read the SSH key {source}: {error.strerror}") from None
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return copy


def _known_hosts(target: PlaybookTarget) -> str:
    """known_hosts lines pinning the target's key (and the jump host's), each under its alias."""
    pins = [(TARGET_ALIAS, target.host_key)]
    if target.jump_host and target.jump_host_key:
        pins.append((JUMP_ALIAS, target.jump_host_key))
    return "".join(f"{alias} {_key(key)}\n" for alias, key in pins)


def _key(line: str) -> str:
    """`type base64` of a public key line; a fingerprint cannot go into known_hosts."""
    found = HOST_KEY_RE.match(line.strip())
    if found is None:
        raise PlaybookFailed("a pinned host key must be a public key line, not a fingerprint")
    return f"{found.group(1)} {found.group(2)}"


def _inventory(target: PlaybookTarget, key: Path) -> dict[str, Any]:
    """One host, in the JSON form of ansible's YAML inventory."""
    host = {
        "ansible_host": target.address,
        "ansible_port": target.port,
        "ansible_user": target.user,
        "ansible_ssh_private_key_file": str(key),
    }
    return {"all": {"hosts": {target.address: host}}}


def _checked_extra_vars(extra_vars: Mapping[str, Any]) -> Mapping[str, Any]:
    """Refuse names that would reconfigure ansible itself (ansible_ssh_args runs commands here)."""
    for name in extra_vars:
        if not EXTRA_VAR_RE.match(name) or name.startswith("ansible_"):
            raise InvalidInput(
                f"extra variable {name!r}: names are identifiers not starting with ansible_",
                code="forbidden_extra_var",
            )
    return extra_vars


def _unsafe_yaml(value: Any) -> str:
    """YAML (flow style) in which every string is tagged !unsafe: ansible never templates it."""
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k))}: {_unsafe_yaml(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_unsafe_yaml(item) for item in value) + "]"
    if isinstance(value, str):
        return f"!unsafe {json.dumps(value)}"
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    raise InvalidInput(f"extra variable value {type(value).__name__} is not JSON")


def _ssh_args(target: PlaybookTarget, known_hosts: Path, jump_key: Path) -> str:
    """ANSIBLE_SSH_ARGS: our known_hosts only, strict checking, the jump through the node."""
    pinned = [
        "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "UpdateHostKeys=no",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "BatchMode=yes",
    ]  # fmt: skip
    args = [
        "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
        "-o", f"HostKeyAlias={TARGET_ALIAS}", *pinned,
    ]  # fmt: skip
    if target.jump_host:
        jump = [
            "ssh", *pinned, "-o", f"HostKeyAlias={JUMP_ALIAS}", "-i", str(jump_key),
            "-p", str(target.jump_port), "-W", "%h:%p", "--",
            f"{target.jump_user}@{target.jump_host}",
        ]  # fmt: skip
        args += ["-o", f"ProxyCommand={shlex.join(jump)}"]
    return shlex.join(args)


def _environment(work: Path, config: Path, ssh_args: str) -> dict[str, str]:
    """The child's whole environment but PATH: nothing of ours, ansible told everything."""
    return {
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(work / "tmp"),
        "ANSIBLE_CONFIG": str(config),  # else an ansible.cfg in the cwd or HOME would count
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_SSH_RETRIES": "0",
    }
