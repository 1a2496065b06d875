"""Repository functions: the only code that touches ORM rows. They take a session and return schemas.

Callers own the transaction (see `storage.db.session_scope`); functions here only add, query and flush.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import ColumnElement, Select, and_, delete, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from inspect_svc.bundle import Bundle, utc_now
from inspect_svc.schemas import (
    CameraCreate,
    CameraPublic,
    InspectionCreate,
    InspectionFilter,
    InspectionLinks,
    InspectionPage,
    InspectionPublic,
    LineThresholds,
    ModelVersionPublic,
    Region,
    ReviewCreate,
    ReviewPublic,
    SessionPublic,
    ThresholdsUsed,
    Timings,
    UserCreate,
    UserPublic,
)
from inspect_svc.security import hash_password, new_token, token_digest, verify_password
from inspect_svc.storage.models import (
    CameraDB,
    DefectRegionDB,
    InspectionDB,
    LineDB,
    ModelVersionDB,
    ReviewDB,
    SessionDB,
    UserDB,
)


class InvalidCursor(ValueError):
    """A paging cursor that this service did not issue."""


# --- inspections -------------------------------------------------------------------------------------


def insert_inspection(session: Session, *, inspection: InspectionCreate) -> bool:
    """Store an inspection unless its (camera_id, frame_id) or id is already stored.

    Returns:
        True when a row was inserted, False when an earlier result for the frame already existed.
    """
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(InspectionDB)
        .values(**_inspection_columns(inspection))
        .on_conflict_do_nothing()
        .returning(InspectionDB.id)
    )
    # RETURNING yields the id only when the row went in: rowcount is unreliable across drivers here.
    if session.execute(statement).scalar_one_or_none() is None:
        return False
    session.add_all(
        DefectRegionDB(
            inspection_id=inspection.id,
            x=region.bbox[0],
            y=region.bbox[1],
            width=region.bbox[2],
            height=region.bbox[3],
            area=region.area,
            score=region.score,
            polygon=[list(point) for point in region.polygon],
        )
        for region in inspection.regions
    )
    session.flush()
    return True


def get_inspection(session: Session, *, inspection_id: str) -> InspectionPublic | None:
    row = session.execute(_inspections_query().where(InspectionDB.id == inspection_id)).first()
    return _inspection_public(*row) if row else None


def find_inspection(session: Session, *, camera_id: str, frame_id: str) -> InspectionCreate | None:
    """The full stored record of a camera's frame, if any (the idempotency lookup: one query)."""
    query = select(InspectionDB).where(InspectionDB.camera_id == camera_id, InspectionDB.frame_id == frame_id)
    row = session.scalars(query).first()
    return _inspection_record(row) if row else None


def get_inspection_record(session: Session, *, inspection_id: str) -> InspectionCreate | None:
    """The full stored record, blob keys included (for serving the image and map files)."""
    row = session.get(InspectionDB, inspection_id)
    return _inspection_record(row) if row else None


def list_inspections(
    session: Session, *, filters: InspectionFilter, limit: int = 50, cursor: str | None = None
) -> InspectionPage:
    """Newest first, keyset-paged on (created_at, id) so deep pages cost the same as the first.

    Raises:
        InvalidCursor: `cursor` was not produced by this function.
    """
    query = _inspections_query().where(*_filter_conditions(filters))
    if cursor is not None:
        after_time, after_id = decode_cursor(cursor)
        query = query.where(
            or_(
                InspectionDB.created_at < after_time,
                and_(InspectionDB.created_at == after_time, InspectionDB.id < after_id),
            )
        )
    query = query.order_by(InspectionDB.created_at.desc(), InspectionDB.id.desc()).limit(limit + 1)
    rows = session.execute(query).all()
    items = [_inspection_public(*row) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return InspectionPage(items=items, next_cursor=next_cursor)


def count_inspections(session: Session, *, filters: InspectionFilter) -> int:
    query = select(func.count()).select_from(InspectionDB).where(*_filter_conditions(filters))
    return int(session.execute(query).scalar_one())


def encode_cursor(created_at: datetime, inspection_id: str) -> str:
    payload = json.dumps([created_at.isoformat(), inspection_id]).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, inspection_id = json.loads(raw)
        moment = datetime.fromisoformat(created_at)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidCursor(f"invalid cursor {cursor[:40]!r}") from error
    if moment.tzinfo is None or not isinstance(inspection_id, str):
        raise InvalidCursor(f"invalid cursor {cursor[:40]!r}")
    return moment, inspection_id


def inspection_links(inspection_id: str) -> InspectionLinks:
    base = f"/inspections/{inspection_id}"
    return InspectionLinks(
        image=f"{base}/image", map=f"{base}/map.png", mask=f"{base}/mask.png", overlay=f"{base}/overlay.png"
    )


def public_from_record(inspection: InspectionCreate, *, reviewed: bool = False) -> InspectionPublic:
    """The API view of a record that may not be in the database yet (a spooled result)."""
    return InspectionPublic(
        **inspection.model_dump(
            include={
                "id",
                "camera_id",
                "frame_id",
                "line",
                "model_version",
                "verdict",
                "score",
                "threshold",
                "defect_area",
                "width",
                "height",
                "regions",
                "timings",
                "created_at",
            }
        ),
        reviewed=reviewed,
        links=inspection_links(inspection.id),
    )


def _inspections_query() -> Select[InspectionDB, bool]:
    reviewed = exists().where(ReviewDB.inspection_id == InspectionDB.id).label("reviewed")
    return select(InspectionDB, reviewed)


def _filter_conditions(filters: InspectionFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.camera_id is not None:
        conditions.append(InspectionDB.camera_id == filters.camera_id)
    if filters.line is not None:
        conditions.append(InspectionDB.line == filters.line)
    if filters.verdict is not None:
        conditions.append(InspectionDB.verdict == filters.verdict)
    if filters.model_version is not None:
        conditions.append(InspectionDB.model_version == filters.model_version)
    if filters.since is not None:
        conditions.append(InspectionDB.created_at >= _as_utc(filters.since))
    if filters.until is not None:
        conditions.append(InspectionDB.created_at < _as_utc(filters.until))
    if filters.reviewed is not None:
        has_review = exists().where(ReviewDB.inspection_id == InspectionDB.id)
        conditions.append(has_review if filters.reviewed else ~has_review)
    return conditions


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _inspection_columns(inspection: InspectionCreate) -> dict[str, object]:
    return {
        "id": inspection.id,
        "camera_id": inspection.camera_id,
        "frame_id": inspection.frame_id,
        "line": inspection.line,
        "model_version": inspection.model_version,
        "pixel_threshold": inspection.threshold.pixel,
        "image_threshold": inspection.threshold.image,
        "verdict": inspection.verdict,
        "score": inspection.score,
        "defect_area": inspection.defect_area,
        "width": inspection.width,
        "height": inspection.height,
        "decode_ms": inspection.timings.decode_ms,
        "queue_ms": inspection.timings.queue_ms,
        "inference_ms": inspection.timings.inference_ms,
        "total_ms": inspection.timings.total_ms,
        "image_key": inspection.image_key,
        "image_media_type": inspection.image_media_type,
        "map_key": inspection.map_key,
        "created_at": _as_utc(inspection.created_at),
    }


def _inspection_record(row: InspectionDB) -> InspectionCreate:
    return InspectionCreate(
        id=row.id,
        camera_id=row.camera_id,
        frame_id=row.frame_id,
        line=row.line,
        model_version=row.model_version,
        threshold=ThresholdsUsed(pixel=row.pixel_threshold, image=row.image_threshold),
        verdict=row.verdict,  # type: ignore[arg-type]
        score=row.score,
        defect_area=row.defect_area,
        width=row.width,
        height=row.height,
        timings=Timings(
            decode_ms=row.decode_ms,
            queue_ms=row.queue_ms,
            inference_ms=row.inference_ms,
            total_ms=row.total_ms,
        ),
        regions=[
            Region(
                bbox=(region.x, region.y, region.width, region.height),
                area=region.area,
                score=region.score,
                polygon=[(int(x), int(y)) for x, y in region.polygon],
            )
            for region in row.regions
        ],
        image_key=row.image_key,
        image_media_type=row.image_media_type,
        map_key=row.map_key,
        created_at=row.created_at,
    )


def _inspection_public(row: InspectionDB, reviewed: bool) -> InspectionPublic:
    return public_from_record(_inspection_record(row), reviewed=bool(reviewed))


# --- cameras -----------------------------------------------------------------------------------------


def create_camera(
    session: Session, *, camera: CameraCreate, api_key_hash: str, api_key_prefix: str | None = None
) -> CameraPublic:
    row = CameraDB(
        name=camera.name,
        line=camera.line,
        api_key_hash=api_key_hash,
        api_key_prefix=api_key_prefix,
        active=True,
    )
    session.add(row)
    session.flush()
    return _camera_public(row)


def replace_camera_key(
    session: Session, *, name: str, api_key_hash: str, api_key_prefix: str
) -> CameraPublic | None:
    """Give a camera a new key; the old one stops working with this transaction. None: no such camera."""
    row = session.get(CameraDB, name)
    if row is None:
        return None
    row.api_key_hash = api_key_hash
    row.api_key_prefix = api_key_prefix
    session.flush()
    return _camera_public(row)


def get_camera(session: Session, *, name: str) -> CameraPublic | None:
    row = session.get(CameraDB, name)
    return _camera_public(row) if row else None


def camera_for_key_hash(session: Session, *, api_key_hash: str) -> CameraPublic | None:
    """The active camera whose key hashes to `api_key_hash`."""
    row = session.scalars(
        select(CameraDB).where(CameraDB.api_key_hash == api_key_hash, CameraDB.active.is_(True))
    ).first()
    return _camera_public(row) if row else None


def cameras_by_key_hash(session: Session) -> dict[str, CameraPublic]:
    """Every camera (disabled ones too) by the hash of its key: the service's local copy of the keys."""
    return {row.api_key_hash: _camera_public(row) for row in session.scalars(select(CameraDB))}


def list_cameras(session: Session) -> list[CameraPublic]:
    return [_camera_public(row) for row in session.scalars(select(CameraDB).order_by(CameraDB.name))]


def set_camera_active(session: Session, *, name: str, active: bool) -> CameraPublic | None:
    row = session.get(CameraDB, name)
    if row is None:
        return None
    row.active = active
    session.flush()
    return _camera_public(row)


def _camera_public(row: CameraDB) -> CameraPublic:
    return CameraPublic(
        name=row.name,
        line=row.line,
        active=row.active,
        created_at=row.created_at,
        key_prefix=row.api_key_prefix,
    )


# --- lines -------------------------------------------------------------------------------------------


def get_line_thresholds(session: Session, *, line: str) -> LineThresholds:
    """The line's overrides; a line never configured has none."""
    row = session.get(LineDB, line)
    if row is None:
        return LineThresholds()
    return LineThresholds(pixel=row.pixel_threshold, image=row.image_threshold)


def set_line_thresholds(session: Session, *, line: str, thresholds: LineThresholds) -> LineThresholds:
    row = session.get(LineDB, line) or LineDB(name=line)
    row.pixel_threshold = thresholds.pixel
    row.image_threshold = thresholds.image
    row.updated_at = utc_now()
    session.add(row)
    session.flush()
    return LineThresholds(pixel=row.pixel_threshold, image=row.image_threshold)


def list_line_thresholds(session: Session) -> dict[str, LineThresholds]:
    rows = session.scalars(select(LineDB).order_by(LineDB.name))
    return {row.name: LineThresholds(pixel=row.pixel_threshold, image=row.image_threshold) for row in rows}


# --- model versions ----------------------------------------------------------------------------------


def register_model_version(
    session: Session, *, bundle: Bundle, bundle_key: str | None = None
) -> ModelVersionPublic:
    """Record a bundle; registering a version again updates where its files are (a known key is kept)."""
    manifest = bundle.manifest
    row = session.get(ModelVersionDB, manifest.model_version) or ModelVersionDB(
        version=manifest.model_version, is_active=False
    )
    row.bundle_path = str(bundle.root)
    row.bundle_key = bundle_key or row.bundle_key
    row.kind = manifest.kind
    row.backbone = manifest.backbone
    row.input_size = manifest.input_size
    row.pixel_threshold = manifest.thresholds.pixel
    row.image_threshold = manifest.thresholds.image
    row.metrics = dict(manifest.metrics)
    row.bundle_created_at = _as_utc(manifest.created_at)
    session.add(row)
    session.flush()
    return _model_public(row)


def get_model_version(session: Session, *, version: str) -> ModelVersionPublic | None:
    row = session.get(ModelVersionDB, version)
    return _model_public(row) if row else None


def list_model_versions(session: Session) -> list[ModelVersionPublic]:
    rows = session.scalars(select(ModelVersionDB).order_by(ModelVersionDB.registered_at.desc()))
    return [_model_public(row) for row in rows]


def active_model_version(session: Session) -> ModelVersionPublic | None:
    row = session.scalars(select(ModelVersionDB).where(ModelVersionDB.is_active.is_(True))).first()
    return _model_public(row) if row else None


def mark_model_active(session: Session, *, version: str) -> ModelVersionPublic:
    """Make `version` the only active row and stamp its activation time.

    Raises:
        LookupError: the version is not registered.
    """
    row = session.get(ModelVersionDB, version)
    if row is None:
        raise LookupError(f"model version {version!r} is not registered")
    session.execute(update(ModelVersionDB).where(ModelVersionDB.version != version).values(is_active=False))
    row.is_active = True
    row.activated_at = utc_now()
    session.flush()
    return _model_public(row)


def previous_model_version(session: Session) -> ModelVersionPublic | None:
    """The most recently active version other than the current one: the rollback target."""
    row = session.scalars(
        select(ModelVersionDB)
        .where(ModelVersionDB.is_active.is_(False), ModelVersionDB.activated_at.is_not(None))
        .order_by(ModelVersionDB.activated_at.desc())
    ).first()
    return _model_public(row) if row else None


def _model_public(row: ModelVersionDB) -> ModelVersionPublic:
    return ModelVersionPublic(
        version=row.version,
        bundle_path=row.bundle_path,
        bundle_key=row.bundle_key,
        kind=row.kind,
        backbone=row.backbone,
        input_size=row.input_size,
        thresholds=ThresholdsUsed(pixel=row.pixel_threshold, image=row.image_threshold),
        metrics=dict(row.metrics or {}),
        bundle_created_at=row.bundle_created_at,
        registered_at=row.registered_at,
        activated_at=row.activated_at,
        active=row.is_active,
    )


# --- reviews -----------------------------------------------------------------------------------------


def add_review(session: Session, *, review: ReviewCreate) -> ReviewPublic:
    """Record a review; the latest review of an inspection is the one that counts.

    A reviewer has one decision per inspection: a new one replaces their earlier one (deleted, so the
    new row is the latest and review counts stay one per decision), never stands beside it.

    Raises:
        LookupError: the inspection does not exist.
    """
    if session.get(InspectionDB, review.inspection_id) is None:
        raise LookupError(f"inspection {review.inspection_id!r} does not exist")
    if review.reviewer_id is not None:
        session.execute(
            delete(ReviewDB).where(
                ReviewDB.inspection_id == review.inspection_id, ReviewDB.reviewer_id == review.reviewer_id
            )
        )
    row = ReviewDB(**review.model_dump())
    session.add(row)
    session.flush()
    return _review_public(row)


def list_reviews(session: Session, *, inspection_id: str) -> list[ReviewPublic]:
    rows = session.scalars(
        select(ReviewDB).where(ReviewDB.inspection_id == inspection_id).order_by(ReviewDB.id)
    )
    return [_review_public(row) for row in rows]


def _review_public(row: ReviewDB) -> ReviewPublic:
    return ReviewPublic(
        id=row.id,
        inspection_id=row.inspection_id,
        reviewer_id=row.reviewer_id,
        verdict=row.verdict,  # type: ignore[arg-type]
        mask_key=row.mask_key,
        comment=row.comment,
        created_at=row.created_at,
    )


# --- users and dashboard sessions --------------------------------------------------------------------


def create_user(session: Session, *, user: UserCreate) -> UserPublic:
    row = UserDB(
        username=user.username, password_hash=hash_password(user.password), role=user.role, active=True
    )
    session.add(row)
    session.flush()
    return _user_public(row)


def authenticate_user(session: Session, *, username: str, password: str) -> UserPublic | None:
    """The active user with these credentials, or None."""
    row = session.scalars(select(UserDB).where(UserDB.username == username)).first()
    # The hash runs for unknown users too (against a dummy), so timing does not reveal who exists.
    matches = verify_password(password, row.password_hash if row is not None else None)
    if row is None or not row.active or not matches:
        return None
    return _user_public(row)


def list_users(session: Session) -> list[UserPublic]:
    """Every operator account, by name."""
    rows = session.scalars(select(UserDB).order_by(UserDB.username))
    return [_user_public(row) for row in rows]


def username_taken(session: Session, username: str) -> bool:
    return session.scalar(select(exists().where(UserDB.username == username))) or False


def get_user(session: Session, *, user_id: int) -> UserPublic | None:
    row = session.get(UserDB, user_id)
    return _user_public(row) if row else None


def create_login_session(session: Session, *, user_id: int, ttl: timedelta) -> tuple[str, SessionPublic]:
    """Open a dashboard session; returns the cookie token (shown once) and the stored session."""
    token = new_token()
    now = utc_now()
    row = SessionDB(
        id=token_digest(token), user_id=user_id, csrf_token=new_token(), created_at=now, expires_at=now + ttl
    )
    session.add(row)
    session.flush()
    user = session.get(UserDB, user_id)
    if user is None:
        raise LookupError(f"user {user_id} does not exist")
    return token, _session_public(row, user)


def get_login_session(session: Session, *, token: str) -> SessionPublic | None:
    """The live (not expired, not revoked, active user) session for a cookie token."""
    row = session.get(SessionDB, token_digest(token))
    if row is None or row.revoked_at is not None or row.expires_at <= utc_now():
        return None
    user = session.get(UserDB, row.user_id)
    if user is None or not user.active:
        return None
    return _session_public(row, user)


def revoke_login_session(session: Session, *, token: str) -> None:
    row = session.get(SessionDB, token_digest(token))
    if row is not None and row.revoked_at is None:
        row.revoked_at = utc_now()
        session.flush()


def _user_public(row: UserDB) -> UserPublic:
    return UserPublic(
        id=row.id,
        username=row.username,
        role=row.role,  # type: ignore[arg-type]  # the column holds only valid roles; pydantic checks it
        active=row.active,
        created_at=row.created_at,
    )


def _session_public(row: SessionDB, user: UserDB) -> SessionPublic:
    return SessionPublic(
        id=row.id,
        user=_user_public(user),
        csrf_token=row.csrf_token,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )
