"""Chat messages kept in sync with operations and approvals; users' SSH keys; TTL reminders."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    """Add chat_messages, ssh_keys and workspaces.reminded_at."""
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("chat_user", sa.String(64), nullable=False),
        sa.Column("posted_steps", sa.JSON, nullable=False),
        sa.Column("synced_at", sa.DateTime),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("subject_kind", "subject_id", name="uq_chat_messages_subject"),
    )
    op.create_index("ix_chat_messages_open", "chat_messages", ["done"])
    op.create_table(
        "ssh_keys",
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(128), primary_key=True),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("reminded_at", sa.DateTime))


def downgrade() -> None:
    """Drop what upgrade added."""
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("reminded_at")
    op.drop_table("ssh_keys")
    op.drop_index("ix_chat_messages_open", "chat_messages")
    op.drop_table("chat_messages")
