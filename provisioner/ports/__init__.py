"""Small protocols the core needs from the outside world, one module per seam.

Adapters implement them. Every name is re-exported here, so `from provisioner.ports import Store`
keeps working.
"""

from __future__ import annotations

from provisioner.ports.approvals import ApprovalRows
from provisioner.ports.audit import AuditRows
from provisioner.ports.chat import ChatRows
from provisioner.ports.hypervisor import DomainInfo, DomainSpec, Hypervisor, PoolSpace, VolumeInfo
from provisioner.ports.idempotency import IdempotencyRows
from provisioner.ports.images import ImageRows
from provisioner.ports.node_link import CommandResult, HostKeyReporter, HostKeySighting, NodeLink
from provisioner.ports.nodes import NodeRows
from provisioner.ports.onboarding import OnboardRows
from provisioner.ports.operations import OperationRows, OutputRows
from provisioner.ports.playbooks import LineSink, PlaybookRecap, PlaybookRunner, PlaybookTarget
from provisioner.ports.seeds import SeedMaker, SeedSpec
from provisioner.ports.ssh_keys import SshKeyRows
from provisioner.ports.store import Database, Locks, Store, Transaction
from provisioner.ports.tailnet import AuthKey, PolicyDocument, TagPolicy, Tailnet, TailnetDevice
from provisioner.ports.tokens import TokenRows
from provisioner.ports.workspaces import WorkspaceRows

__all__ = [
    "ApprovalRows",
    "AuditRows",
    "AuthKey",
    "ChatRows",
    "CommandResult",
    "Database",
    "DomainInfo",
    "DomainSpec",
    "HostKeyReporter",
    "HostKeySighting",
    "Hypervisor",
    "IdempotencyRows",
    "ImageRows",
    "LineSink",
    "Locks",
    "NodeLink",
    "NodeRows",
    "OnboardRows",
    "OperationRows",
    "OutputRows",
    "PlaybookRecap",
    "PlaybookRunner",
    "PlaybookTarget",
    "PolicyDocument",
    "PoolSpace",
    "SeedMaker",
    "SeedSpec",
    "SshKeyRows",
    "Store",
    "TagPolicy",
    "Tailnet",
    "TailnetDevice",
    "TokenRows",
    "Transaction",
    "VolumeInfo",
    "WorkspaceRows",
]
