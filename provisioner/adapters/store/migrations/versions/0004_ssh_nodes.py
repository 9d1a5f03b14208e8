"""SSH nodes: host-key decisions, virt type, imported images, workspace address and guest key."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    """Add node_host_keys, nodes.virt_type, images.source, workspaces.address, .guest_host_key."""
    op.create_table(
        "node_host_keys",
        sa.Column("node", sa.String(63), primary_key=True),
        sa.Column("trusted_key", sa.Text),
        sa.Column("presented_key", sa.Text),
        sa.Column("presented_fingerprint", sa.String(128)),
        sa.Column("untrusted", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("virt_type", sa.String(8), nullable=False, server_default="auto")
        )
    with op.batch_alter_table("images") as batch:
        batch.add_column(
            sa.Column("source", sa.String(16), nullable=False, server_default="config")
        )
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("address", sa.String(64)))
        batch.add_column(sa.Column("guest_host_key", sa.Text))


def downgrade() -> None:
    """Drop what upgrade added."""
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("guest_host_key")
        batch.drop_column("address")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("virt_type")
    op.drop_table("node_host_keys")
