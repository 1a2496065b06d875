"""What `synchronous=FULL` on the embedded SQLite database costs per inspection, next to `NORMAL`.

The service runs its main SQLite database with `synchronous=FULL` (every commit syncs the WAL, so an
acknowledged result survives a power cut). This posts the same frame (a new `frame_id` each time) to
the app in this process (no HTTP), `--frames` per round, in alternating rounds of FULL and NORMAL (so
a drift of the machine's load hits both alike), each round on a fresh database in `--dir` (put it on
the disk the service would use: a tmpfs makes every sync free). Only the main database's setting
changes; the local files beside the spool (acknowledged-frame index, spool) stay FULL in both. Then,
in the same round, `--commits` inspection rows are committed alone (no inference, no blobs), which is
where the setting acts; a busy machine hides it in the whole request. Reports numbers, asserts nothing:

    python -m benchmarks.speed.sqlite_sync --bundle demo/bundle --image demo/part.png --dir /var/tmp
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from inspect_svc.main import create_app
from inspect_svc.settings import Settings
from inspect_svc.storage import db, repositories
from inspect_svc.storage.db import session_scope

SYNC_LEVELS = {"FULL": 2, "NORMAL": 1}  # what PRAGMA synchronous reads back


@contextmanager
def main_database_sync(level: str) -> Iterator[None]:
    """Engines made inside run their connections with `PRAGMA synchronous=<level>` (after the usual pragmas)."""
    original = db._sqlite_pragmas

    def pragmas(dbapi_connection, record):  # type: ignore[no-untyped-def]
        original(dbapi_connection, record)
        dbapi_connection.execute(f"PRAGMA synchronous={level}")

    db._sqlite_pragmas = pragmas  # make_engine looks the listener up when it is called
    try:
        yield
    finally:
        db._sqlite_pragmas = original


def one_round(args: argparse.Namespace, level: str, body: bytes) -> tuple[list[float], list[float]]:
    with (
        tempfile.TemporaryDirectory(dir=args.dir, prefix="inspect-sync-") as workdir,
        main_database_sync(level),
    ):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{workdir}/inspect.db",
            data_dir=Path(workdir) / "data",
            model=args.bundle,
            require_api_key=False,
            intra_op_threads=1,
        )
        with TestClient(create_app(settings)) as client:
            service = client.app.state.service
            with service.db.connect() as connection:
                assert connection.execute(text("PRAGMA synchronous")).scalar() == SYNC_LEVELS[level]
            post = {"content": body, "headers": {"Content-Type": "image/png"}}
            for _ in range(3):  # warm-up, not counted
                client.post(f"/inspect?camera_id=warm&frame_id={uuid.uuid4().hex}", **post)
            latencies = []
            for _ in range(args.frames):
                started = time.perf_counter()
                response = client.post(f"/inspect?camera_id=bench&frame_id={uuid.uuid4().hex}", **post)
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000.0)
            return latencies, row_commits(service.sessions, response.json()["id"], args.commits)


def row_commits(sessions: sessionmaker[Session], inspection_id: str, count: int) -> list[float]:
    """Milliseconds per commit of one inspection row (a copy of a stored one), as the service writes it."""
    with session_scope(sessions) as session:
        stored = repositories.get_inspection_record(session, inspection_id=inspection_id)
    assert stored is not None
    latencies = []
    for _ in range(count):
        copy = stored.model_copy(update={"id": str(uuid.uuid4()), "frame_id": uuid.uuid4().hex})
        started = time.perf_counter()
        with session_scope(sessions) as session:
            repositories.insert_inspection(session, inspection=copy)
        latencies.append((time.perf_counter() - started) * 1000.0)
    return latencies


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=40, help="frames per round")
    parser.add_argument("--commits", type=int, default=200, help="row commits per round, timed alone")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per setting, alternating")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the databases go (default: the temp dir)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body = args.image.read_bytes()
    posted: dict[str, list[float]] = {level: [] for level in SYNC_LEVELS}
    committed: dict[str, list[float]] = {level: [] for level in SYNC_LEVELS}
    for _ in range(args.rounds):
        for level in SYNC_LEVELS:
            frames, commits = one_round(args, level, body)
            posted[level] += frames
            committed[level] += commits
    print(
        f"{os.cpu_count()} CPUs; load average at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    print(f"databases in {args.dir or tempfile.gettempdir()}; {args.rounds} rounds per setting")
    for what, results in (("POST /inspect", posted), ("row commit", committed)):
        for level, latencies in results.items():
            print(
                f"{what:<14} synchronous={level:<7} median {statistics.median(latencies):7.1f} ms   "
                f"p90 {statistics.quantiles(latencies, n=10)[-1]:7.1f} ms   ({len(latencies)})"
            )
        cost = statistics.median(results["FULL"]) - statistics.median(results["NORMAL"])
        print(f"{what:<14} FULL - NORMAL, medians: {cost:+.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
