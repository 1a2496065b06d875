"""Database engine and session factory for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

# How long a SQLite writer waits for a competing writer before giving up.
SQLITE_BUSY_TIMEOUT_MS = 5_000

# Errors that mean "the database cannot be reached right now", as opposed to a bad query.
UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)


def make_engine(database_url: str, **engine_kwargs: object) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout on every connection.

    Args:
        database_url: a `sqlite:///…` or `postgresql+psycopg://…` URL.
        engine_kwargs: passed on to `sqlalchemy.create_engine` (tests pass `connect_args`).
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **engine_kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pool_pre_ping: a restarted PostgreSQL leaves dead pooled connections behind.
    engine_kwargs.setdefault("pool_pre_ping", True)
    engine_kwargs.setdefault("connect_args", {"connect_timeout": 5})
    return create_engine(url, **engine_kwargs)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # FULL syncs the log at every commit: a result answered 200 survives a power cut. NORMAL (the usual
    # WAL choice) syncs only at checkpoints, so the last answered results could vanish.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit, so repositories can convert rows afterwards."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
