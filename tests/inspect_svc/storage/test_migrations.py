"""Alembic on both databases: upgrade head, the ORM agrees with the migrated schema, downgrade base."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from inspect_svc.storage import migrations
from inspect_svc.storage.db import make_engine
from inspect_svc.storage.models import Base

TABLES = {
    "cameras",
    "lines",
    "model_versions",
    "inspections",
    "defect_regions",
    "users",
    "reviews",
    "sessions",
}


def table_names(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_head_then_downgrade_base(database_url):
    migrations.upgrade(database_url)
    assert migrations.current_revision(database_url) == migrations.head_revision(database_url)
    assert table_names(database_url) == TABLES
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            drift = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
            )
        unique = {c["name"] for c in inspect(engine).get_unique_constraints("inspections")}
    finally:
        engine.dispose()
    assert drift == [], f"models and migrations differ: {drift}"
    assert "uq_inspections_camera_frame" in unique
    migrations.downgrade(database_url, "base")
    assert migrations.current_revision(database_url) is None
    assert table_names(database_url) == set()
    migrations.upgrade(database_url)  # and back up again: downgrade left nothing behind
    assert table_names(database_url) == TABLES
