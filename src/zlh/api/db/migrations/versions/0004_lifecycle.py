"""A container's lifecycle: why and when its state last changed, its last activity, the
template its system came from, and a user's own idle limit.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zlh.api.db.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a table in place (PostgreSQL does it directly).
    with op.batch_alter_table("containers") as batch:
        batch.add_column(sa.Column("state_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("state_changed_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_activity_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_activity_kind", sa.String(32), nullable=True))
        batch.add_column(sa.Column("template", sa.String(64), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("idle_stop_after", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("idle_stop_after")
    with op.batch_alter_table("containers") as batch:
        columns = (
            "template",
            "last_activity_kind",
            "last_activity_at",
            "state_changed_at",
            "state_reason",
        )
        for column in columns:
            batch.drop_column(column)
