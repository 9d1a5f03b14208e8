"""Existing-host onboarding: requests, their logs, and host keys ops approved per host."""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    """Create onboard_requests, onboard_log and onboard_host_keys with their indexes."""
    op.create_table(
        "onboard_requests",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("login_user", sa.String(64), nullable=False),
        sa.Column("desired_user", sa.String(32), nullable=False),
        sa.Column("sudo", sa.Boolean, nullable=False),
        sa.Column("generated_key", sa.Boolean, nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("key_fingerprint", sa.String(128), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("lease_until", sa.DateTime, nullable=False),
        sa.Column("presented_key", sa.Text),
        sa.Column("presented_fingerprint", sa.String(128)),
        sa.Column("pinned_fingerprint", sa.String(128)),
        sa.Column("approved_key", sa.Text),
        sa.Column("decided_by", sa.String(255)),
        sa.Column("reason", sa.Text),
        sa.Column("private_key_path", sa.String(1024)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    for name, columns in (
        ("requested_by", ["requested_by", "created_at"]),
        ("host", ["host", "created_at"]),
        ("holder", ["holder", "state"]),
    ):
        op.create_index(f"ix_onboard_requests_{name}", "onboard_requests", columns)
    op.create_table(
        "onboard_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
    )
    op.create_index("ix_onboard_log_request_id", "onboard_log", ["request_id", "id"])
    op.create_table(
        "onboard_host_keys",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("port", sa.Integer, primary_key=True),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("approved_by", sa.String(255), nullable=False),
        sa.Column("approved_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop what upgrade made."""
    op.drop_table("onboard_host_keys")
    op.drop_index("ix_onboard_log_request_id", table_name="onboard_log")
    op.drop_table("onboard_log")
    for name in ("holder", "host", "requested_by"):
        op.drop_index(f"ix_onboard_requests_{name}", table_name="onboard_requests")
    op.drop_table("onboard_requests")
