"""ORM tables (SQLAlchemy 2). Rows never leave `storage/`: repositories convert them to schemas.

Every change here needs an Alembic migration in `alembic/versions/`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from inspect_svc.bundle import utc_now


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a UTC-aware datetime")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class CameraDB(Base):
    """A line camera and the hash of its API key (the key itself is shown once and never stored)."""

    __tablename__ = "cameras"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[str | None] = mapped_column(String(64))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_prefix: Mapped[str | None] = mapped_column(String(16))  # NULL for keys made before 0003
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class LineDB(Base):
    """A production line's threshold overrides; NULL means "use the model bundle's threshold"."""

    __tablename__ = "lines"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    pixel_threshold: Mapped[float | None] = mapped_column(Float)
    image_threshold: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, onupdate=utc_now)


class ModelVersionDB(Base):
    """A registered model bundle; at most one row is active."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    bundle_path: Mapped[str] = mapped_column(String(1024))
    # The bundle's archive in the blob store, so every replica can fetch it (migration 0003).
    bundle_key: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    backbone: Mapped[str] = mapped_column(String(128))
    input_size: Mapped[int] = mapped_column(Integer)
    pixel_threshold: Mapped[float] = mapped_column(Float)
    image_threshold: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    bundle_created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)


class InspectionDB(Base):
    """One inspected frame: verdict, the thresholds and model that produced it, and its blob keys."""

    __tablename__ = "inspections"
    __table_args__ = (
        UniqueConstraint("camera_id", "frame_id", name="uq_inspections_camera_frame"),
        # The review queue: each (filter, sort) pair it offers, with `id` as the keyset tie-breaker.
        Index("ix_inspections_score_id", "score", "id"),
        Index("ix_inspections_created_id", "created_at", "id"),
        Index("ix_inspections_verdict_score_id", "verdict", "score", "id"),
        Index("ix_inspections_verdict_created_id", "verdict", "created_at", "id"),
        Index("ix_inspections_line_score_id", "line", "score", "id"),
        Index("ix_inspections_line_created_id", "line", "created_at", "id"),
        Index("ix_inspections_camera_score_id", "camera_id", "score", "id"),
        Index("ix_inspections_camera_created_id", "camera_id", "created_at", "id"),
        Index("ix_inspections_model_score_id", "model_version", "score", "id"),
        Index("ix_inspections_model_created_id", "model_version", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(64))
    frame_id: Mapped[str] = mapped_column(String(128))
    line: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    pixel_threshold: Mapped[float] = mapped_column(Float)
    image_threshold: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(16))  # ok | defect | invalid_image (migration 0005)
    score: Mapped[float] = mapped_column(Float)
    defect_area: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    decode_ms: Mapped[float] = mapped_column(Float)
    queue_ms: Mapped[float] = mapped_column(Float)
    inference_ms: Mapped[float] = mapped_column(Float)
    total_ms: Mapped[float] = mapped_column(Float)
    image_key: Mapped[str] = mapped_column(String(128))
    image_media_type: Mapped[str] = mapped_column(String(32))
    map_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    regions: Mapped[list[DefectRegionDB]] = relationship(
        back_populates="inspection",
        cascade="all, delete-orphan",
        order_by="DefectRegionDB.id",
        lazy="selectin",
    )
    reviews: Mapped[list[ReviewDB]] = relationship(
        back_populates="inspection", cascade="all, delete-orphan", order_by="ReviewDB.id"
    )


class DefectRegionDB(Base):
    """A connected region of the thresholded defect map."""

    __tablename__ = "defect_regions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), index=True)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    area: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    polygon: Mapped[list[list[int]]] = mapped_column(JSON, default=list)

    inspection: Mapped[InspectionDB] = relationship(back_populates="regions")


class UserDB(Base):
    """An operator of the dashboard."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))  # viewer | reviewer | admin
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class ReviewDB(Base):
    """An operator's judgement of an inspection, optionally with a corrected mask."""

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_inspection_created", "inspection_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    verdict: Mapped[str] = mapped_column(String(16))  # confirm | reject | missed
    mask_key: Mapped[str | None] = mapped_column(String(128))
    comment: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    inspection: Mapped[InspectionDB] = relationship(back_populates="reviews")


class SessionDB(Base):
    """A server-side dashboard session, so a session can be revoked; `id` is the token's sha256."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
