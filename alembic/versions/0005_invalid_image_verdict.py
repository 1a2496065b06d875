"""Inspections may have the verdict `invalid_image` (13 characters): the column widens from 8 to 16.

A damaged frame recorded with INSPECT_DAMAGED_FRAMES=flag is stored unscored with this verdict.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the table (it cannot alter a column), PostgreSQL alters it in place.
    with op.batch_alter_table("inspections") as batch:
        batch.alter_column(
            "verdict", existing_type=sa.String(8), type_=sa.String(16), existing_nullable=False
        )


def downgrade() -> None:
    # The narrower column cannot hold invalid_image; deleting those rows here would lose data silently.
    flagged = op.get_bind().execute(
        sa.text("SELECT count(*) FROM inspections WHERE verdict = 'invalid_image'")
    )
    count = flagged.scalar_one()
    if count:
        raise RuntimeError(
            f"{count} inspections have the verdict invalid_image; remove them before downgrading"
        )
    with op.batch_alter_table("inspections") as batch:
        batch.alter_column(
            "verdict", existing_type=sa.String(16), type_=sa.String(8), existing_nullable=False
        )
