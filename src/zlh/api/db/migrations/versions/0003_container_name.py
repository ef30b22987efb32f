"""A container's optional name, unique among its owner's containers.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a table in place (PostgreSQL does it directly).
    with op.batch_alter_table("containers") as batch:
        batch.add_column(sa.Column("name", sa.String(40), nullable=True))
        batch.create_unique_constraint("uq_containers_owner_name", ["owner_id", "name"])


def downgrade() -> None:
    with op.batch_alter_table("containers") as batch:
        batch.drop_constraint("uq_containers_owner_name", type_="unique")
        batch.drop_column("name")
