"""Replicas: the API processes sharing this database, each with its heartbeat (the poller
spreads the containers over the live ones).

Revision ID: 0010_replicas
Revises: 0009_throttle
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_replicas"
down_revision = "0009_throttle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replicas")
