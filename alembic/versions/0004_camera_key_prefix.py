"""Cameras keep the first characters of their API key, so `camera list` can tell keys apart.

The key itself is still never stored (only its sha256); the prefix holds 36 of its 256 random bits.
Cameras created before this revision have no prefix (NULL) until their key is rotated.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cameras", sa.Column("api_key_prefix", sa.String(16), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table, PostgreSQL drops the column in place.
    with op.batch_alter_table("cameras") as batch:
        batch.drop_column("api_key_prefix")
