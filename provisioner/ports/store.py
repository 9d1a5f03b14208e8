"""The store seam: a database handing out transactions, each use case typing only the rows it uses.

`Database[T]` is generic over what its transactions offer, so a use case asks for, say,
`Database[TokenTx]` (token and audit rows) and a unit test passes a few dicts; `Transaction`
combines every row protocol and `Store` is the whole database the SQL adapter implements.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

from provisioner.ports.approvals import ApprovalRows
from provisioner.ports.audit import AuditRows
from provisioner.ports.chat import ChatRows
from provisioner.ports.idempotency import IdempotencyRows
from provisioner.ports.images import ImageRows
from provisioner.ports.nodes import NodeRows
from provisioner.ports.onboarding import OnboardRows
from provisioner.ports.operations import OperationRows, OutputRows
from provisioner.ports.ssh_keys import SshKeyRows
from provisioner.ports.tokens import TokenRows
from provisioner.ports.workspaces import WorkspaceRows

TxT_co = TypeVar("TxT_co", covariant=True)


class Locks(Protocol):
    """Named locks held until the transaction ends."""

    async def lock(self, name: str) -> None:
        """Serialise transactions that take the same named lock until commit."""
        ...


class Database(Protocol[TxT_co]):
    """Transactions that offer `TxT_co`: one that may write, one that only reads."""

    def transaction(self) -> AbstractAsyncContextManager[TxT_co]:
        """A transaction that commits on success and rolls back on error."""
        ...

    def read(self) -> AbstractAsyncContextManager[TxT_co]:
        """A transaction that only reads; cheaper, never waits for writers."""
        ...


class Transaction(
    WorkspaceRows,
    OperationRows,
    OutputRows,
    ApprovalRows,
    AuditRows,
    TokenRows,
    IdempotencyRows,
    ImageRows,
    NodeRows,
    ChatRows,
    SshKeyRows,
    OnboardRows,
    Locks,
    Protocol,
):
    """Reads and writes inside one database transaction: every row protocol at once."""


class Store(Database[Transaction], Protocol):
    """Durable state: everything the provisioner knows lives here."""

    async def ping(self) -> None:
        """Raise InfrastructureError unless the database answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
