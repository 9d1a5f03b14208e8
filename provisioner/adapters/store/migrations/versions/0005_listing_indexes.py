"""Listing indexes: workspaces by owner or state come back in id order without a sort."""

from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    """Replace the one-column owner and state indexes with (owner, id) and (state, id)."""
    op.drop_index("ix_workspaces_owner", table_name="workspaces")
    op.drop_index("ix_workspaces_state", table_name="workspaces")
    op.create_index("ix_workspaces_owner_id", "workspaces", ["owner", "id"])
    op.create_index("ix_workspaces_state_id", "workspaces", ["state", "id"])


def downgrade() -> None:
    """Back to the one-column indexes."""
    op.drop_index("ix_workspaces_state_id", table_name="workspaces")
    op.drop_index("ix_workspaces_owner_id", table_name="workspaces")
    op.create_index("ix_workspaces_state", "workspaces", ["state"])
    op.create_index("ix_workspaces_owner", "workspaces", ["owner"])
