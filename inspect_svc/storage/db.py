"""Database engine and session factory for SQLite (embedded default) and PostgreSQL (production).

The storage package is the only code that speaks SQLAlchemy. Code outside it names just the types
re-exported here (a session, its factory, the engine) and the error a uniqueness conflict raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

# How long a SQLite writer waits for a competing writer before giving up.
SQLITE_BUSY_TIMEOUT_MS = 5_000

__all__ = [
    "UNAVAILABLE_ERRORS",
    "Engine",
    "IntegrityError",
    "Session",
    "SessionFactory",
    "make_engine",
    "make_session_factory",
    "ping",
    "session_scope",
]

SessionFactory = sessionmaker[Session]

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


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # FULL syncs the log at every commit: a result answered 200 survives a power cut. NORMAL (the usual
    # WAL choice) syncs only at checkpoints, so the last answered results could vanish.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def ping(engine: Engine) -> None:
    """One round trip to the database; raises one of `UNAVAILABLE_ERRORS` when it cannot be reached."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def make_session_factory(engine: Engine) -> SessionFactory:
    """Sessions that keep loaded attributes after commit, so repositories can convert rows afterwards."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: SessionFactory) -> Iterator[Session]:
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
