"""The warm pool: a container provisioned ahead of demand (``pool``), and the agent nonce a
hand-out is rotating to (``next_nonce``, until the agent accepted it).

Revision ID: 0008_pool
Revises: 0007_previews
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_pool"
down_revision = "0007_previews"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a table in place (PostgreSQL does it directly).
    with op.batch_alter_table("containers") as batch:
        batch.add_column(sa.Column("pool", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("next_nonce", sa.String(64), nullable=True))
        batch.create_index("ix_containers_pool", ["pool"])


def downgrade() -> None:
    with op.batch_alter_table("containers") as batch:
        batch.drop_index("ix_containers_pool")
        batch.drop_column("next_nonce")
        batch.drop_column("pool")
