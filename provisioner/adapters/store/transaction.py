"""One database transaction exposing every query the core uses (the Transaction port)."""

from __future__ import annotations

from provisioner.adapters.store.access_queries import AccessQueries
from provisioner.adapters.store.approval_queries import ApprovalQueries
from provisioner.adapters.store.chat_queries import ChatQueries
from provisioner.adapters.store.node_queries import NodeQueries
from provisioner.adapters.store.onboard_queries import OnboardQueries
from provisioner.adapters.store.operation_queries import OperationQueries
from provisioner.adapters.store.output_queries import OutputQueries
from provisioner.adapters.store.workspace_queries import WorkspaceQueries


class SqlTransaction(
    WorkspaceQueries,
    OperationQueries,
    OutputQueries,
    ApprovalQueries,
    AccessQueries,
    ChatQueries,
    NodeQueries,
    OnboardQueries,
):
    """All queries, bound to one open connection inside a transaction."""
