"""SeedMaker on pycdlib and asyncssh: cloud-init NoCloud seed images built in memory."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from provisioner.errors import InvalidInput
from provisioner.ports import SeedSpec

TAILSCALE_KEY_PATH = "/etc/provisioner/tailscale-authkey"
# Without a timeout `tailscale up` may wait forever, and the key file would never be removed.
TAILSCALE_UP_TIMEOUT = "5m"
SUDO_ALL = "ALL=(ALL) NOPASSWD:ALL"
# netplan honours the glob; cloud-init's own renderers (ENI, networkd) take the key as the
# interface's name, so the key is the name a guest booted with net.ifnames=0 gives its first NIC.
NETWORK_CONFIG: dict[str, Any] = {
    "version": 2,
    "ethernets": {"eth0": {"match": {"name": "e*"}, "dhcp4": True}},
}

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A key blob opens with the type name's 32-bit length, under 2**24, hence "AAAA".
_PUBLIC_KEY = re.compile(r"[a-z0-9@.-]+ AAAA[A-Za-z0-9+/]+={0,2}( .*)?")
_AUTH_KEY = re.compile(r"[\x21-\x7e]{1,512}")
_PRIVATE_KEY_HEADER = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
_PRIVATE_KEY_RULE = "the host private key must be an unencrypted OpenSSH private key"

_SECTOR = 2048
_FIXED_VOLUME_DATE = b"2000010100000000\x00"  # ECMA-119 8.4.26.1, in UTC
_UNSET_VOLUME_DATE = b"0" * 16 + b"\x00"
_FIXED_RECORD_DATE = bytes([100, 1, 1, 0, 0, 0, 0])  # ECMA-119 9.1.5: 2000-01-01 00:00 UTC


class CloudInitSeeds:
    """Builds NoCloud seeds (ISO 9660, label `cidata`) and the guest host keys they carry."""

    def host_keypair(self) -> tuple[str, str]:
        """A fresh ed25519 host key: (OpenSSH private key, OpenSSH public key line)."""
        import asyncssh  # ~30 MB: loaded at the first create, not at start

        key = asyncssh.generate_private_key("ssh-ed25519")
        private = key.export_private_key("openssh").decode()
        return private, key.export_public_key("openssh").decode().strip()

    def build(self, spec: SeedSpec) -> bytes:
        """The seed image for `spec`; the same spec always gives the same bytes."""
        _validate(spec)
        meta = {"instance-id": spec.instance_id, "local-hostname": spec.hostname}
        return _iso(
            {
                "meta-data": _json(meta),
                "user-data": "#cloud-config\n" + _json(_user_data(spec)),
                "network-config": _json(NETWORK_CONFIG),
            }
        )


def _user_data(spec: SeedSpec) -> dict[str, Any]:
    """The cloud-config: hostname, two sudo users, our host key, and Tailscale if asked for."""
    private = spec.host_key_private
    config: dict[str, Any] = {
        "hostname": spec.hostname,
        "fqdn": spec.hostname,
        "preserve_hostname": False,
        "users": [_user(spec.user, spec.user_keys), _user(spec.admin_user, (spec.admin_key,))],
        # No ssh_pwauth: setting it makes cloud-init restart sshd just after the first logins
        # work. Passwords are locked anyway (lock_passwd), so password logins cannot succeed.
        "disable_root": True,
        # The guest must present exactly the key we pinned, never one it made up itself: with
        # ssh_keys given cloud-init generates none, and `ssh_genkeytypes: []` fails its schema.
        "ssh_deletekeys": True,
        "ssh_keys": {
            "ed25519_private": private if private.endswith("\n") else private + "\n",
            "ed25519_public": spec.host_key_public,
        },
    }
    if spec.tailscale_auth_key is not None:
        config |= _tailscale(spec.tailscale_auth_key, spec.tailscale_hostname or spec.hostname)
    return config


def _tailscale(key: str, hostname: str) -> dict[str, Any]:
    """Join the tailnet with `key`, read from a root-only file that is deleted right after."""
    # By file, not argv, so the key never shows in `ps` or in the runcmd script cloud-init keeps.
    up = ["tailscale", "up", f"--auth-key=file:{TAILSCALE_KEY_PATH}", f"--hostname={hostname}"]
    return {
        "write_files": [{"path": TAILSCALE_KEY_PATH, "content": key, "permissions": "0600"}],
        # runcmd's script goes on after a failure, so the key is deleted even if `up` failed.
        "runcmd": [[*up, f"--timeout={TAILSCALE_UP_TIMEOUT}"], ["rm", "-f", TAILSCALE_KEY_PATH]],
    }


def _user(name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """A cloud-init user who logs in by key only and may sudo without a password."""
    return {
        "name": name,
        "shell": "/bin/bash",
        "groups": ["sudo"],
        "sudo": SUDO_ALL,
        "lock_passwd": True,
        "ssh_authorized_keys": list(keys),
    }


def _json(document: dict[str, Any]) -> str:
    """`document` as JSON, which is also YAML, so the runtime needs no YAML library."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _validate(spec: SeedSpec) -> None:
    """Raise InvalidInput unless everything that reaches the guest is well formed."""
    _check(_INSTANCE_ID, spec.instance_id, "instance id", "letters, digits, '.', '_' or '-'")
    label_rule = "1-63 of a-z, 0-9 and '-', not starting or ending with '-'"
    _check(_LABEL, spec.hostname, "hostname", label_rule)
    if spec.tailscale_hostname is not None:
        _check(_LABEL, spec.tailscale_hostname, "Tailscale hostname", label_rule)
    user_rule = "a-z or '_' first, then up to 31 of a-z, 0-9, '_' or '-'"
    for what, name in (("user name", spec.user), ("admin user name", spec.admin_user)):
        _check(_USER, name, what, user_rule)
        if name == "root":
            raise InvalidInput(f"the {what} may not be root")
    if spec.user == spec.admin_user:
        raise InvalidInput("the user and the admin user must be different accounts")
    for what, key in [("SSH key", k) for k in spec.user_keys] + [("admin key", spec.admin_key)]:
        _check_public_key(key, what)
    _check_host_key(spec.host_key_private, spec.host_key_public)
    if spec.tailscale_auth_key is not None and not _AUTH_KEY.fullmatch(spec.tailscale_auth_key):
        raise InvalidInput("the Tailscale auth key must be one word of printable ASCII")


def _check(pattern: re.Pattern[str], value: str, what: str, rule: str) -> None:
    """Raise InvalidInput naming `what` and its rule unless `value` matches `pattern`."""
    if not pattern.fullmatch(value):
        raise InvalidInput(f"invalid {what} {value!r}: use {rule}")


def _check_public_key(key: str, what: str) -> None:
    """Raise InvalidInput unless `key` is one printable line shaped 'type base64 [comment]'."""
    if not key.isprintable() or not _PUBLIC_KEY.fullmatch(key):
        raise InvalidInput(f"the {what} must be one OpenSSH public key line (type base64 comment)")


def _check_host_key(private: str, public: str) -> None:
    """Raise InvalidInput unless the host keys are one ed25519 pair (never echoing the secret)."""
    _check_public_key(public, "host public key")
    if not private.startswith(_PRIVATE_KEY_HEADER) or "\x00" in private:
        raise InvalidInput(_PRIVATE_KEY_RULE)
    import asyncssh  # lazily, see host_keypair

    try:
        derived = asyncssh.import_private_key(private).export_public_key("openssh").decode()
    except (asyncssh.KeyImportError, ValueError):
        raise InvalidInput(_PRIVATE_KEY_RULE) from None
    if not derived.startswith("ssh-ed25519 ") or derived.split()[:2] != public.split()[:2]:
        raise InvalidInput("the host keys must be one ed25519 pair: the public key does not match")


def _iso(files: dict[str, str]) -> bytes:
    """An ISO 9660 image labelled `cidata` holding `files`, with Joliet and Rock Ridge names."""
    import pycdlib  # loaded at the first create, not at start

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident="cidata", joliet=3, rock_ridge="1.09")
    for name, text in files.items():
        data = text.encode()
        # Plain ISO 9660 allows only 8.3 upper-case names; the guest reads the Rock Ridge ones.
        short = name.replace("-", "").upper()[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), f"/{short}", rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    image = bytearray(out.getvalue())
    _pin_dates(image)
    return bytes(image)


def _pin_dates(image: bytearray) -> None:
    """Overwrite the clock times pycdlib stamps everywhere, so equal specs give equal bytes."""
    at = 16 * _SECTOR  # ECMA-119 8: volume descriptors from sector 16 until a terminator
    while at < len(image) and image[at] != 255:
        if image[at] in (1, 2):  # the primary descriptor, and Joliet's supplementary one
            dates = (_FIXED_VOLUME_DATE, _FIXED_VOLUME_DATE, _UNSET_VOLUME_DATE, _UNSET_VOLUME_DATE)
            for offset, date in zip((813, 830, 847, 864), dates, strict=True):
                image[at + offset : at + offset + 17] = date
            _pin_root(image, at + 156)
        at += _SECTOR


def _pin_root(image: bytearray, root: int) -> None:
    """Pin the root's record and every record in the root (a seed has no subdirectories)."""
    _pin_record(image, root)
    at = _u32(image, root + 2) * _SECTOR
    end = at + _u32(image, root + 10)
    while at < end:
        if image[at] == 0:  # records never straddle sectors: the rest of this one is padding
            at = (at // _SECTOR + 1) * _SECTOR
            continue
        _pin_record(image, at)
        at += image[at]


def _pin_record(image: bytearray, at: int) -> None:
    """Pin a directory record's date and the Rock Ridge times in its System Use area."""
    image[at + 18 : at + 25] = _FIXED_RECORD_DATE
    name_length = image[at + 32]
    _pin_system_use(image, at + 33 + name_length + (1 - name_length % 2), at + image[at])


def _pin_system_use(image: bytearray, at: int, end: int) -> None:
    """Pin every TF (timestamp) entry between `at` and `end`, following continuation areas."""
    while at + 4 <= end and image[at + 2] >= 4:
        signature, length = bytes(image[at : at + 2]), image[at + 2]
        if signature == b"TF":  # RRIP 4.1.6: a flag byte, then one stamp per flag bit set
            flags = image[at + 4]
            stamp = _FIXED_VOLUME_DATE if flags & 0x80 else _FIXED_RECORD_DATE
            for index in range((flags & 0x7F).bit_count()):
                start = at + 5 + index * len(stamp)
                image[start : start + len(stamp)] = stamp
        elif signature == b"CE":  # SUSP 5.1: the entries go on in another sector
            start = _u32(image, at + 4) * _SECTOR + _u32(image, at + 12)
            _pin_system_use(image, start, start + _u32(image, at + 20))
        elif signature == b"ST":
            return
        at += length


def _u32(image: bytearray, at: int) -> int:
    """The little-endian half of an ECMA-119 both-endian 32-bit number."""
    return int.from_bytes(image[at : at + 4], "little")
