"""Run the Alembic migrations in-process (the CLI's `db` commands and SQLite auto-migration use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from inspect_svc.storage.db import make_engine

# The migration scripts sit beside the package in the source tree and in the service image.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class MigrationsNotFound(RuntimeError):
    """The alembic/ folder is not next to the package (an install without the migration scripts)."""


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url` that does not touch the caller's logging."""
    ini_path, script_dir = PROJECT_ROOT / "alembic.ini", PROJECT_ROOT / "alembic"
    if not (script_dir / "env.py").is_file():
        raise MigrationsNotFound(f"no Alembic migrations at {script_dir}; run from the project's source tree")
    config = Config(str(ini_path) if ini_path.is_file() else None)
    config.set_main_option("script_location", str(script_dir))
    config.attributes["database_url"] = database_url
    config.attributes["skip_logging_config"] = True
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    """The revision the database is at; None for an empty database."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
