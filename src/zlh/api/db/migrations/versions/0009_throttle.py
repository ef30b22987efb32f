"""Failed logins counted in the database, so replicas sharing it throttle together.

Revision ID: 0009_throttle
Revises: 0008_pool
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_throttle"
down_revision = "0008_pool"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_s", sa.Float(), nullable=False),
        sa.Column("wait_s", sa.Float(), nullable=False),
        sa.Column("forget_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_login_failures_forget_at", "login_failures", ["forget_at"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_forget_at", "login_failures")
    op.drop_table("login_failures")
