"""Initial schema: cameras, lines, model versions, inspections, regions, users, reviews, sessions.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Migrations are frozen history: plain SQLAlchemy types, never the ORM's classes.
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cameras",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("line", sa.String(64), nullable=True),
        sa.Column("api_key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "lines",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("pixel_threshold", sa.Float(), nullable=True),
        sa.Column("image_threshold", sa.Float(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("bundle_path", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("backbone", sa.String(128), nullable=False),
        sa.Column("input_size", sa.Integer(), nullable=False),
        sa.Column("pixel_threshold", sa.Float(), nullable=False),
        sa.Column("image_threshold", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("bundle_created_at", TIMESTAMP, nullable=False),
        sa.Column("registered_at", TIMESTAMP, nullable=False),
        sa.Column("activated_at", TIMESTAMP, nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
    )
    _create_inspections()
    op.create_table(
        "defect_regions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "inspection_id",
            sa.String(36),
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("area", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("polygon", sa.JSON(), nullable=False),
    )
    op.create_index("ix_defect_regions_inspection_id", "defect_regions", ["inspection_id"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "inspection_id",
            sa.String(36),
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("reviewer_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("mask_key", sa.String(128), nullable=True),
        sa.Column("comment", sa.String(1000), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_reviews_inspection_created", "reviews", ["inspection_id", "created_at"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])


def _create_inspections() -> None:
    op.create_table(
        "inspections",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("frame_id", sa.String(128), nullable=False),
        sa.Column("line", sa.String(64), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("pixel_threshold", sa.Float(), nullable=False),
        sa.Column("image_threshold", sa.Float(), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("defect_area", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("decode_ms", sa.Float(), nullable=False),
        sa.Column("queue_ms", sa.Float(), nullable=False),
        sa.Column("inference_ms", sa.Float(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("image_key", sa.String(128), nullable=False),
        sa.Column("image_media_type", sa.String(32), nullable=False),
        sa.Column("map_key", sa.String(128), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        # The idempotency key: a camera's retried frame must never become a second row.
        sa.UniqueConstraint("camera_id", "frame_id", name="uq_inspections_camera_frame"),
    )
    # The review queue filters by verdict or line and pages by time; the triage view sorts by score.
    op.create_index("ix_inspections_verdict_created", "inspections", ["verdict", "created_at"])
    op.create_index("ix_inspections_line_created", "inspections", ["line", "created_at"])
    op.create_index("ix_inspections_created", "inspections", ["created_at"])
    op.create_index("ix_inspections_score", "inspections", ["score"])
    op.create_index("ix_inspections_model_version", "inspections", ["model_version"])


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("reviews")
    op.drop_table("users")
    op.drop_table("defect_regions")
    op.drop_table("inspections")
    op.drop_table("model_versions")
    op.drop_table("lines")
    op.drop_table("cameras")
