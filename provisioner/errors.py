"""Exceptions of the provisioner; adapters translate foreign errors into these.

ProvisionerError                 code: snake_case, message: a sentence for humans, field?
├── InvalidInput                 the request is malformed or breaks a rule (400/422)
│   ├── UnknownReference         names a plan, image or node that does not exist
│   └── PayloadTooLarge          a body or upload over its size limit (413)
├── Unauthenticated              no or bad credentials (401)
├── PermissionDenied             credentials lack the permission (403)
├── NotFound                     no such resource, or not visible to the caller (404)
├── Conflict                     the resource is not in a state that allows this (409)
├── CapacityExhausted            no node has room for the request (409)
├── RateLimited                  too many requests; retry_after seconds (429)
├── ConfigError                  a setting is missing or wrong; stops start-up
├── NodeUntrusted                a node's SSH host key is not the pinned one (409)
├── TimedOut                     a step waited longer than allowed (a guest never came up)
├── TailnetRefused               the tailnet API refused our credentials or request (not retried)
├── PlaybookFailed               a playbook ran and failed, or was refused before it ran
├── OnboardingFailed             a guest came up without the owner's account, groups or keys
├── Cancelled                    the operation was cancelled on request (between or inside steps)
└── InfrastructureError          a node, hypervisor or store failed (503)
    ├── NodeUnavailable          the node could not be reached
    ├── GuestUnreachable         a workspace's guest did not answer over SSH (yet)
    ├── HypervisorError          libvirt refused or failed an action
    ├── TailnetUnavailable       the tailnet API failed, timed out or kept rate-limiting us
    └── LeaseLost                this worker no longer owns the operation it runs
"""

from __future__ import annotations


class ProvisionerError(Exception):
    """Base of every error the core raises: a stable code, a message, the field it is about."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class InvalidInput(ProvisionerError):
    """The request is malformed or breaks a validation rule."""

    code = "invalid_input"


class UnknownReference(InvalidInput):
    """The request names a plan, image or node that does not exist."""

    code = "unknown_reference"


class PayloadTooLarge(InvalidInput):
    """A body or an upload is larger than its limit."""

    code = "payload_too_large"


class Unauthenticated(ProvisionerError):
    """No credentials, or credentials that are not valid."""

    code = "unauthenticated"


class PermissionDenied(ProvisionerError):
    """Valid credentials without the needed permission."""

    code = "permission_denied"


class NotFound(ProvisionerError):
    """The resource does not exist or the caller may not see it."""

    code = "not_found"


class Conflict(ProvisionerError):
    """The resource's current state forbids the action."""

    code = "conflict"


class CapacityExhausted(ProvisionerError):
    """No node has room for the requested plan."""

    code = "capacity_exhausted"


class RateLimited(ProvisionerError):
    """Too many requests from one caller."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(ProvisionerError):
    """A setting is missing or invalid."""

    code = "config_error"


class NodeUntrusted(ProvisionerError):
    """A node presented an SSH host key we have not pinned: unknown, or changed."""

    code = "node_untrusted"


class TimedOut(ProvisionerError):
    """A step waited longer than it may; retrying at once would only wait again."""

    code = "timed_out"


class TailnetRefused(ProvisionerError):
    """The tailnet API refused the credentials (401/403) or the request (400/404)."""

    code = "tailnet_refused"


class PlaybookFailed(ProvisionerError):
    """A playbook ran and failed, timed out, or could not be started."""

    code = "playbook_failed"


class OnboardingFailed(ProvisionerError):
    """A guest answered SSH but cloud-init failed or the owner's account is not in place."""

    code = "onboarding_failed"


class Cancelled(ProvisionerError):
    """The operation was cancelled on request; a long step may raise it from inside."""

    code = "cancelled"


class InfrastructureError(ProvisionerError):
    """Something outside the provisioner failed; the action may succeed later."""

    code = "infrastructure_error"


class NodeUnavailable(InfrastructureError):
    """The node could not be reached."""

    code = "node_unavailable"


class GuestUnreachable(InfrastructureError):
    """A workspace's guest could not be reached over SSH, or answered with an unknown outcome."""

    code = "guest_unreachable"


class HypervisorError(InfrastructureError):
    """libvirt refused or failed an action."""

    code = "hypervisor_error"


class LeaseLost(InfrastructureError):
    """Another worker took over the operation; this one must stop touching it."""

    code = "lease_lost"


class TailnetUnavailable(InfrastructureError):
    """The tailnet API failed (5xx), timed out, or kept answering 429 past our retries."""

    code = "tailnet_unavailable"
