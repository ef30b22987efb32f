"""Containers shared with other users (``use`` or ``view``).

Revision ID: 0006
Revises: 0005_api_tokens
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zlh.api.db.models import UTCDateTime

revision = "0006"
down_revision = "0005_api_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shares",
        sa.Column(
            "vmid",
            sa.BigInteger(),
            sa.ForeignKey("containers.vmid", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_shares_user_id", "shares", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_shares_user_id", table_name="shares")
    op.drop_table("shares")
