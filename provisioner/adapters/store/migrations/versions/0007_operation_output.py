"""Operation output: the lines long steps print (playbook runs), kept in order."""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    """Create operation_output with an (operation_id, id) index."""
    op.create_table(
        "operation_output",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("operation_id", sa.String(40), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
    )
    op.create_index("ix_operation_output_operation_id", "operation_output", ["operation_id", "id"])


def downgrade() -> None:
    """Drop operation_output."""
    op.drop_index("ix_operation_output_operation_id", table_name="operation_output")
    op.drop_table("operation_output")
