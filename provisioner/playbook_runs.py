"""Which playbooks a request runs: names resolved to content digests when it is accepted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from provisioner.errors import InvalidInput, UnknownReference
from provisioner.playbook_store import ResolvedPlaybook

MAX_PLAYBOOKS = 20
MAX_EXTRA_VARS_CHARS = 16384


class PlaybookResolver(Protocol):
    """Fixes what a run of a named playbook uses (the catalogue)."""

    async def resolve(self, name: str) -> ResolvedPlaybook:
        """The playbook's content as of now (UnknownReference if there is none)."""
        ...


async def resolve_runs(
    catalog: PlaybookResolver | None,
    names: Sequence[str],
    extra_vars: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The operation params for running `names` in order, each fixed to its digest."""
    if not names:
        return []
    if catalog is None:
        raise UnknownReference(
            f"unknown playbook {names[0]!r}: no playbooks are configured", field="playbooks"
        )
    if len(names) > MAX_PLAYBOOKS:
        raise InvalidInput(f"at most {MAX_PLAYBOOKS} playbooks per request", field="playbooks")
    check_extra_vars(extra_vars or {})
    runs = []
    for name in names:
        try:
            resolved = await catalog.resolve(name)
        except UnknownReference as error:
            raise UnknownReference(error.message, field="playbooks") from None
        runs.append(
            {"name": resolved.name, "digest": resolved.digest, "extra_vars": dict(extra_vars or {})}
        )
    return runs


def check_extra_vars(extra_vars: Mapping[str, Any]) -> None:
    """InvalidInput unless extra_vars is a small object with plain variable names.

    ansible_* names are refused: `ansible_connection: local` would run the play on the
    provisioner. (Values reach ansible tagged !unsafe, so they are never templated.)
    """
    if not isinstance(extra_vars, Mapping):
        raise InvalidInput("extra_vars must be an object", field="extra_vars")
    for key in extra_vars:
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("ansible_"):
            raise InvalidInput(
                f"extra_vars key {key!r}: use a plain variable name (not ansible_…)",
                field="extra_vars",
            )
    if len(repr(extra_vars)) > MAX_EXTRA_VARS_CHARS:
        raise InvalidInput(
            f"extra_vars is larger than {MAX_EXTRA_VARS_CHARS} characters", field="extra_vars"
        )
