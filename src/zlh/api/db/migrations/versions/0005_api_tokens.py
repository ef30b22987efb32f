"""API tokens, and the credential (``via``) on audit entries made with one.

Revision ID: 0005_api_tokens
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zlh.api.db.models import UTCDateTime

revision = "0005_api_tokens"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    live = sa.text("revoked_at IS NULL")
    op.create_index(
        "uq_api_tokens_live_name",
        "api_tokens",
        ["user_id", "name"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
    )
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("via", sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("via")
    op.drop_index("uq_api_tokens_live_name", table_name="api_tokens")
    op.drop_index("ix_api_tokens_user_id", table_name="api_tokens")
    op.drop_table("api_tokens")
