"""Nodes remember where they came from: the configuration or the API."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Add nodes.source; existing rows came from the configuration."""
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("source", sa.String(16), nullable=False, server_default="config")
        )


def downgrade() -> None:
    """Drop nodes.source."""
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("source")
