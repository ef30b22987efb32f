"""IDE tickets taken, in the database: a ticket is taken once among the front processes of
every replica, whatever host they run on (``zlh.proxy.ticket_db.DbLedger``).

Revision ID: 0012_tickets
Revises: 0011_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_tickets"
down_revision = "0011_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "used_tickets",
        sa.Column("jti_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_used_tickets_expires_at", "used_tickets", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_used_tickets_expires_at", "used_tickets")
    op.drop_table("used_tickets")
