"""Model bundles in the blob store: `model_versions.bundle_key` names the bundle's archive there.

With several replicas (and an S3 blob store) a bundle registered through one replica must be loadable
by every other, including one started later on a fresh machine. The key is content-addressed (the
archive's sha256), so a replica that fetches it checks what it got against the key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("bundle_key", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("bundle_key")
