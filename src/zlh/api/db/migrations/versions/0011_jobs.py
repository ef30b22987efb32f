"""Jobs: a container's background work with a lease, so another replica finishes it when the
one driving it dies (``zlh.api.jobs``).

Revision ID: 0011_jobs
Revises: 0010_replicas
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zlh.api.db.models import UTCDateTime

revision = "0011_jobs"
down_revision = "0010_replicas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column(
            "vmid",
            sa.BigInteger(),
            sa.ForeignKey("containers.vmid", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("lease_holder", sa.String(100), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_jobs_lease_expires_at", "jobs", ["lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_lease_expires_at", table_name="jobs")
    op.drop_table("jobs")
