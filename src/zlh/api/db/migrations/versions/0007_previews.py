"""Public port previews: the (container, port) pairs anyone may open.

Revision ID: 0007_previews
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zlh.api.db.models import UTCDateTime

revision = "0007_previews"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "public_previews",
        sa.Column(
            "vmid",
            sa.BigInteger(),
            sa.ForeignKey("containers.vmid", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("port", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("made_public_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("public_previews")
