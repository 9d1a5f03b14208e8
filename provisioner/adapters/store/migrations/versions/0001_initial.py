"""Initial schema: workspaces, operations and steps, catalog, approvals, tokens, audit."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

LIVE = sa.text("state NOT IN ('deleted', 'failed', 'denied')")


def upgrade() -> None:
    """Create every table of the first release."""
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("plan", sa.String(63), nullable=False),
        sa.Column("image", sa.String(63), nullable=False),
        sa.Column("node", sa.String(63), nullable=False),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("domain_name", sa.String(120), nullable=False),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("disk_gib", sa.Integer, nullable=False),
        sa.Column("tailscale_hostname", sa.String(255)),
        sa.Column("tailscale_ip", sa.String(64)),
        sa.Column("tailscale_tags", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
    )
    op.create_index(
        "uq_workspaces_live_name",
        "workspaces",
        ["name"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False, index=True),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("fence", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(64)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_operations_state_created", "operations", ["state", "created_at"])
    op.create_table(
        "operation_steps",
        sa.Column("operation_id", sa.String(40), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
    )
    _create_catalog()
    _create_access_tables()


def _create_catalog() -> None:
    """Nodes, plans and images, synchronised from the configuration."""
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("libvirt_uri", sa.String(255), nullable=False),
        sa.Column("ssh_host", sa.String(255)),
        sa.Column("ssh_port", sa.Integer, nullable=False),
        sa.Column("ssh_user", sa.String(64), nullable=False),
        sa.Column("ssh_key", sa.String(1024)),
        sa.Column("host_key", sa.Text),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("network", sa.String(63), nullable=False),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("disk_gib", sa.Integer, nullable=False),
    )
    op.create_table(
        "plans",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("disk_gib", sa.Integer, nullable=False),
        sa.Column("ttl_hours", sa.Integer, nullable=False),
        sa.Column("max_ttl_hours", sa.Integer, nullable=False),
        sa.Column("requires_approval", sa.Boolean, nullable=False),
    )
    op.create_table(
        "images",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("base_volume", sa.String(255), nullable=False),
        sa.Column("os", sa.String(63), nullable=False),
        sa.Column("kernel", sa.String(255)),
        sa.Column("initrd", sa.String(255)),
        sa.Column("cmdline", sa.Text),
    )


def _create_access_tables() -> None:
    """Approvals, API tokens, the audit trail and idempotency keys."""
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("operation_id", sa.String(40), nullable=False, index=True),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(255)),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("decided_at", sa.DateTime),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("last_used_at", sa.DateTime),
        sa.Column("revoked_at", sa.DateTime),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False, index=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("operation_id", sa.String(40)),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop every table."""
    for table in (
        "idempotency_keys",
        "audit_events",
        "api_tokens",
        "approvals",
        "images",
        "plans",
        "nodes",
        "operation_steps",
        "operations",
        "workspaces",
    ):
        op.drop_table(table)
