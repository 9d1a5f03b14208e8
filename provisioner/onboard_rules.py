"""What an onboarding request may ask for: a reachable host, POSIX user names, one key source."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from provisioner.errors import InvalidInput
from provisioner.keys import parse_public_key
from provisioner.onboard_models import OnboardInput

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
# useradd's own rule (NAME_REGEX of Debian's adduser, without the trailing $ of Samba machines).
DESIRED_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A login user already exists on the host; allow what common distributions allow.
LOGIN_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
MAX_PASSWORD = 1024
# Accounts distributions create for services: taking one over would hand its files to the new key.
_SYSTEM = """root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc
gnats nobody nogroup _apt messagebus sshd syslog polkitd tss uuidd dnsmasq avahi postfix postgres
mysql redis admin adm operator halt shutdown ftp tcpdump libvirt-qemu libvirt-dnsmasq statd rpc
ntp chrony"""
SYSTEM_ACCOUNTS = frozenset(_SYSTEM.split())


@dataclass(frozen=True)
class CheckedInput:
    """A request that passed every rule: normalised host, the key line to install (if given)."""

    spec: OnboardInput
    host: str
    public_key: str | None
    fingerprint: str | None


def check(spec: OnboardInput) -> CheckedInput:
    """The request normalised, or InvalidInput naming the field and the rule."""
    host = _host(spec.host)
    if isinstance(spec.port, bool) or not isinstance(spec.port, int) or not 0 < spec.port < 65536:
        raise InvalidInput("port must be a number from 1 to 65535", field="port")
    if not isinstance(spec.login_user, str) or not LOGIN_USER_RE.match(spec.login_user):
        raise InvalidInput("login_user must be an account name on the host", field="login_user")
    _password(spec.login_password)
    _desired_user(spec.desired_user)
    if spec.generate_key == (spec.public_key is not None):
        raise InvalidInput(
            'give either "generate_key": true or a "public_key", not both, not neither',
            field="public_key",
        )
    if spec.public_key is None:
        return CheckedInput(spec, host, None, None)
    try:
        line, fingerprint = parse_public_key(str(spec.public_key))
    except InvalidInput as error:
        raise InvalidInput(error.message, code=error.code, field="public_key") from None
    return CheckedInput(spec, host, line, fingerprint)


def _host(host: object) -> str:
    """A host name or an IP address, lower-cased."""
    text = host.strip().lower() if isinstance(host, str) else ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if len(text) > 253 or not HOSTNAME_RE.match(text):
        raise InvalidInput("host must be a host name or an IP address", field="host")
    return text.rstrip(".")


def _password(password: object) -> None:
    """A password that can be typed once; the message never repeats it."""
    if not isinstance(password, str) or not password:
        raise InvalidInput("login_password is required", field="login_password")
    if len(password) > MAX_PASSWORD or any(c in password for c in "\0\r\n"):
        raise InvalidInput(
            f"login_password must be one line of at most {MAX_PASSWORD} characters",
            field="login_password",
        )


def _desired_user(name: object) -> None:
    """A POSIX user name that is not root nor a system account."""
    if not isinstance(name, str) or not DESIRED_USER_RE.match(name):
        raise InvalidInput(
            "desired_user must start with a lower-case letter or _, then up to 31 lower-case "
            "letters, digits, _ or -",
            field="desired_user",
        )
    if name in SYSTEM_ACCOUNTS or name.startswith("systemd-"):
        raise InvalidInput(
            f"desired_user {name!r} is root or a system account; choose a personal account name",
            field="desired_user",
        )
