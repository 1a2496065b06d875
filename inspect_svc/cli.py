"""`inspect-svc`: run the service and manage its database, cameras, models and users.

Every command that touches the database takes `--db URL` (default: INSPECT_DATABASE_URL, else the
embedded SQLite file). Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from pydantic import ValidationError

from inspect_svc.bundle import BundleError
from inspect_svc.schemas import CameraCreate, UserCreate
from inspect_svc.security import api_key_prefix, hash_api_key, new_api_key
from inspect_svc.settings import Settings
from inspect_svc.storage import migrations
from inspect_svc.storage import repositories as repo
from inspect_svc.storage.blobstore import BlobStoreUnavailable
from inspect_svc.storage.db import (
    UNAVAILABLE_ERRORS,
    IntegrityError,
    Session,
    make_engine,
    make_session_factory,
    session_scope,
)

DEMO_PART = "demo/part.png"  # the shipped defective part, relative to the repository root

app = typer.Typer(help="The defect inspection service.", no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
camera_app = typer.Typer(help="Line cameras and their API keys.", no_args_is_help=True)
model_app = typer.Typer(help="Registered model versions.", no_args_is_help=True)
user_app = typer.Typer(help="Dashboard operators.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(camera_app, name="camera")
app.add_typer(model_app, name="model")
app.add_typer(user_app, name="user")

DbOption = Annotated[
    str | None, typer.Option("--db", help="database URL (default: INSPECT_DATABASE_URL or the SQLite file)")
]
P = ParamSpec("P")
R = TypeVar("R")


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (BundleError, BlobStoreUnavailable, migrations.MigrationsNotFound, LookupError) as error:
            _fail(str(error))
        except ValidationError as error:
            first = error.errors()[0]
            _fail(f"invalid {'.'.join(str(part) for part in first['loc']) or 'value'}: {first['msg']}")
        except UNAVAILABLE_ERRORS as error:
            _fail(f"cannot use the database: {str(error.orig or error).strip().splitlines()[0]}")
        raise AssertionError("unreachable")

    return wrapper


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def load_settings(db: str | None = None, **overrides: object) -> Settings:
    values = {key: value for key, value in {"database_url": db, **overrides}.items() if value is not None}
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """One committed transaction on the settings' database; its connection pool is closed afterwards."""
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()  # `serve` would otherwise keep an idle connection open for the server's lifetime


# --- serve ---------------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def serve(
    model: Annotated[Path | None, typer.Option(help="model bundle (directory or .zip) to serve")] = None,
    db: DbOption = None,
    host: Annotated[str | None, typer.Option(help="interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
) -> None:
    """Run the service; prints its URL, and a demo camera key on a fresh database."""
    import uvicorn  # only this command needs the server

    from inspect_svc.logs import logging_config
    from inspect_svc.main import create_app  # imported late: keeps `--help` fast
    from inspect_svc.model_manager import open_bundle

    settings = load_settings(db, model=model, host=host, port=port)
    if settings.model is not None:
        open_bundle(settings.model, settings)  # fail here, in one line, rather than inside the server
    if settings.auto_migrate:
        migrations.upgrade(settings.database_url)
    url = f"http://{settings.host}:{settings.port}"
    typer.echo(f"inspect-svc serving on {url}  (POST {url}/inspect, API docs at {url}/docs)")
    demo_key = _demo_key(settings)
    if demo_key is not None:
        typer.echo(f"created camera 'demo'; its API key (shown once): {demo_key}")
        # From the repository root the shipped defective part makes the example ready to paste.
        image = DEMO_PART if Path(DEMO_PART).is_file() else "<image.png>"
        typer.echo(f'  curl -H "X-API-Key: {demo_key}" -F file=@{image} {url}/inspect')
    elif settings.require_api_key:
        # Keys are shown once, at creation; a restart cannot show them again, but it can say how to go on.
        typer.echo(
            "camera keys are shown only when made: `inspect-svc camera list` lists the cameras,"
            " `inspect-svc camera rotate-key NAME` prints a new key for one"
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=30,
        log_config=logging_config(settings.log_format),
    )


def _demo_key(settings: Settings) -> str | None:
    """On a database without cameras (and keys required) create a 'demo' camera, so curl works at once."""
    if not settings.require_api_key:
        return None
    try:
        with _session(settings) as session:
            if repo.list_cameras(session):
                return None
            api_key = new_api_key()
            repo.create_camera(
                session,
                camera=CameraCreate(name="demo"),
                api_key_hash=hash_api_key(api_key),
                api_key_prefix=api_key_prefix(api_key),
            )
            return api_key
    except UNAVAILABLE_ERRORS:
        return None  # not migrated yet (PostgreSQL): the operator adds cameras with `camera add`


# --- db ------------------------------------------------------------------------------------------------


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head", db: DbOption = None
) -> None:
    """Migrate the schema up to REVISION (default: the newest)."""
    settings = load_settings(db)
    migrations.upgrade(settings.database_url, revision)
    typer.echo(f"database at revision {migrations.current_revision(settings.database_url)}")


@db_app.command("downgrade")
@friendly_errors
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="target revision, e.g. base")], db: DbOption = None
) -> None:
    """Migrate the schema down to REVISION (`base` empties the database)."""
    settings = load_settings(db)
    migrations.downgrade(settings.database_url, revision)
    typer.echo(f"database at revision {migrations.current_revision(settings.database_url) or 'base'}")


@db_app.command("current")
@friendly_errors
def db_current(db: DbOption = None) -> None:
    """Print the schema revision of the database and the newest one available."""
    settings = load_settings(db)
    current = migrations.current_revision(settings.database_url) or "base"
    typer.echo(f"current {current}, head {migrations.head_revision(settings.database_url)}")


# --- cameras -------------------------------------------------------------------------------------------


@camera_app.command("add")
@friendly_errors
def camera_add(
    name: Annotated[str, typer.Argument(help="camera id, as it will appear in results")],
    line: Annotated[str | None, typer.Option(help="production line the camera watches")] = None,
    db: DbOption = None,
) -> None:
    """Register a camera and print its new API key (shown once; only its hash is stored)."""
    camera = CameraCreate(name=name, line=line)
    api_key = new_api_key()
    try:
        with _session(load_settings(db)) as session:
            repo.create_camera(
                session,
                camera=camera,
                api_key_hash=hash_api_key(api_key),
                api_key_prefix=api_key_prefix(api_key),
            )
    except IntegrityError:
        _fail(f"camera {name!r} already exists")
    typer.echo(api_key)


CAMERA_COLUMNS = ("name", "line", "state", "created (UTC)", "key starts")


@camera_app.command("list")
@friendly_errors
def camera_list(db: DbOption = None) -> None:
    """List cameras: name, line, state, creation time and the first characters of the key (never the key)."""
    with _session(load_settings(db)) as session:
        cameras = repo.list_cameras(session)
    if not cameras:
        typer.echo("no cameras yet: `inspect-svc camera add NAME` registers one")
        return
    typer.echo("\t".join(CAMERA_COLUMNS))
    for camera in cameras:
        typer.echo(
            "\t".join(
                (
                    camera.name,
                    camera.line or "-",
                    "active" if camera.active else "disabled",
                    camera.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    f"{camera.key_prefix}…" if camera.key_prefix else "- (made before key prefixes)",
                )
            )
        )


@camera_app.command("rotate-key")
@friendly_errors
def camera_rotate_key(
    name: Annotated[str, typer.Argument(help="camera whose key is replaced")], db: DbOption = None
) -> None:
    """Give a camera a new API key and print it (shown once); the old key stops working at once."""
    api_key = new_api_key()
    with _session(load_settings(db)) as session:
        camera = repo.replace_camera_key(
            session, name=name, api_key_hash=hash_api_key(api_key), api_key_prefix=api_key_prefix(api_key)
        )
    if camera is None:
        _fail(f"no camera {name!r}; `inspect-svc camera list` shows the cameras")
    typer.echo(api_key)


# --- models --------------------------------------------------------------------------------------------


@model_app.command("add")
@friendly_errors
def model_add(
    bundle: Annotated[Path, typer.Argument(help="bundle directory or .zip")],
    db: DbOption = None,
    activate: Annotated[
        bool, typer.Option(help="also mark it active: running replicas switch within seconds")
    ] = False,
) -> None:
    """Verify a bundle, publish it to the blob store (so every replica can fetch it) and register its version."""
    from inspect_svc.bundle_store import publish_bundle
    from inspect_svc.model_manager import open_bundle
    from inspect_svc.storage.blob_factory import open_blob_store

    settings = load_settings(db)
    loaded = open_bundle(bundle, settings)
    key = publish_bundle(loaded, open_blob_store(settings), workdir=settings.bundle_extract_dir)
    with _session(settings) as session:
        version = repo.register_model_version(session, bundle=loaded, bundle_key=key).version
        if activate:
            repo.mark_model_active(session, version=version)
    typer.echo(f"registered {version}{' (active)' if activate else ''}")


@model_app.command("activate")
@friendly_errors
def model_activate(version: Annotated[str, typer.Argument()], db: DbOption = None) -> None:
    """Mark VERSION active; running replicas follow the database within INSPECT_MODEL_POLL_S seconds."""
    with _session(load_settings(db)) as session:
        repo.mark_model_active(session, version=version)
    typer.echo(f"{version} is active")


@model_app.command("list")
@friendly_errors
def model_list(db: DbOption = None) -> None:
    """List registered model versions; `*` marks the active one."""
    with _session(load_settings(db)) as session:
        for model in repo.list_model_versions(session):
            typer.echo(f"{'*' if model.active else ' '} {model.version}\t{model.kind}\t{model.bundle_path}")


# --- users ---------------------------------------------------------------------------------------------


@user_app.command("add")
@friendly_errors
def user_add(
    username: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="viewer, reviewer or admin")] = "viewer",
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, envvar="INSPECT_NEW_PASSWORD"),
    ] = ...,  # type: ignore[assignment]
    db: DbOption = None,
) -> None:
    """Create a dashboard user (the password is asked for, or read from INSPECT_NEW_PASSWORD)."""
    user = UserCreate(username=username, password=password, role=role)  # type: ignore[arg-type]
    try:
        with _session(load_settings(db)) as session:
            repo.create_user(session, user=user)
    except IntegrityError:
        _fail(f"user {username!r} already exists")
    typer.echo(f"created {role} {username}")


if __name__ == "__main__":
    app()
