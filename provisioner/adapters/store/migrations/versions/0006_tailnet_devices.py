"""Tailnet devices: the workspace's device id, IPv6 address, pending auth key and reach."""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    """Add the tailscale_device_id, _ipv6, _key_id, _key_created_at and _reach columns."""
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("tailscale_device_id", sa.String(64)))
        batch.add_column(sa.Column("tailscale_ipv6", sa.String(64)))
        batch.add_column(sa.Column("tailscale_key_id", sa.String(64)))
        batch.add_column(sa.Column("tailscale_key_created_at", sa.DateTime))
        batch.add_column(sa.Column("tailscale_reach", sa.String(16)))


def downgrade() -> None:
    """Drop what upgrade added."""
    with op.batch_alter_table("workspaces") as batch:
        for column in ("reach", "key_created_at", "key_id", "ipv6", "device_id"):
            batch.drop_column(f"tailscale_{column}")
