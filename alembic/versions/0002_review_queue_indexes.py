"""Review-queue indexes: one composite index per (filter, sort) pair the queue offers.

The queue (`inspect_svc.storage.review_queue`) sorts by (score, id) or (created_at, id), descending, and
pages by keyset; an operator may narrow it by verdict, line, camera or model version. An index on
(filter column, sort column, id) hands the planner each page as a short range scan, whatever the
page's depth. Date ranges ride on the created_at indexes. The single-column indexes of 0001 are
prefixes of the new ones, so they go: every index is paid for on each inserted frame.

On PostgreSQL the indexes are built CONCURRENTLY, so a line keeps writing while a large table is
indexed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "inspections"

QUEUE_INDEXES: dict[str, list[str]] = {
    "ix_inspections_score_id": ["score", "id"],
    "ix_inspections_created_id": ["created_at", "id"],
    "ix_inspections_verdict_score_id": ["verdict", "score", "id"],
    "ix_inspections_verdict_created_id": ["verdict", "created_at", "id"],
    "ix_inspections_line_score_id": ["line", "score", "id"],
    "ix_inspections_line_created_id": ["line", "created_at", "id"],
    "ix_inspections_camera_score_id": ["camera_id", "score", "id"],
    "ix_inspections_camera_created_id": ["camera_id", "created_at", "id"],
    "ix_inspections_model_score_id": ["model_version", "score", "id"],
    "ix_inspections_model_created_id": ["model_version", "created_at", "id"],
}

# 0001's indexes, each a prefix of one above; recreated on downgrade.
SUPERSEDED_INDEXES: dict[str, list[str]] = {
    "ix_inspections_verdict_created": ["verdict", "created_at"],
    "ix_inspections_line_created": ["line", "created_at"],
    "ix_inspections_created": ["created_at"],
    "ix_inspections_score": ["score"],
    "ix_inspections_model_version": ["model_version"],
}


def _create(indexes: dict[str, list[str]]) -> None:
    for name, columns in indexes.items():
        op.create_index(name, TABLE, columns, postgresql_concurrently=True)


def _drop(indexes: dict[str, list[str]]) -> None:
    for name in indexes:
        op.drop_index(name, table_name=TABLE, postgresql_concurrently=True)


def upgrade() -> None:
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        _create(QUEUE_INDEXES)
        _drop(SUPERSEDED_INDEXES)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        _create(SUPERSEDED_INDEXES)
        _drop(QUEUE_INDEXES)
