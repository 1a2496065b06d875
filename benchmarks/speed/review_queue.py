"""Review queue at scale: the first page and a deep keyset page, per filter combination.

Fills a database with synthetic inspections (a month of frames from 12 cameras on 4 lines, three model
versions, a few percent flagged, some of those reviewed), then times `queries.queue_page` — the
dashboard's own query code — for the queue's main filter combinations. Reports milliseconds, asserts
nothing. Usage:

    python -m benchmarks.speed.review_queue                       # SQLite file in a temp folder
    python -m benchmarks.speed.review_queue --db sqlite:///queue.db --keep
    python -m benchmarks.speed.review_queue --db postgresql+psycopg://user@host/db --rows 1000000

The schema comes from the Alembic migrations (the indexes under test are the real ones). The database
must be empty, or already hold a filled `inspections` table from an earlier `--keep` run, which is
reused. Loading is bulk: secondary indexes are dropped, rows go in through `executemany` (SQLite) or
`COPY` (PostgreSQL), and the indexes are rebuilt, as a restore would do.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.orm import Session

from inspect_svc.storage import migrations
from inspect_svc.storage import review_queue as queries
from inspect_svc.storage.db import make_engine
from inspect_svc.storage.models import Base, InspectionDB
from inspect_svc.storage.review_queue import Cursor, QueueFilters

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=30)
LINES = ("line-a", "line-b", "line-c", "line-d")
CAMERAS_PER_LINE = 3
CHUNK_ROWS = 50_000
FLAGGED_SHARE = 0.03
REVIEWED_SHARE_OF_FLAGGED = 0.3  # operators work through the top of the queue, not all of it

INSPECTION_COLUMNS = [column.name for column in InspectionDB.__table__.columns]
REVIEW_COLUMNS = ["inspection_id", "verdict", "created_at"]
REGION_COLUMNS = ["inspection_id", "x", "y", "width", "height", "area", "score", "polygon"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temp folder)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="inspections to insert")
    parser.add_argument("--depth", type=int, default=200_000, help="rows skipped before the deep page")
    parser.add_argument("--limit", type=int, default=queries.DEFAULT_PAGE_SIZE, help="page size")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per query (the median is shown)")
    parser.add_argument("--explain", action="store_true", help="print each first page's query plan")
    parser.add_argument("--keep", action="store_true", help="keep the temporary SQLite file")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# --- filling ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    """Column arrays of the synthetic inspections, in time order."""

    ids: list[str]
    cameras: np.ndarray
    scores: np.ndarray
    created: list[datetime]


def generate(rows: int, seed: int) -> Generated:
    rng = np.random.default_rng(seed)
    ids = [
        str(uuid.UUID(bytes=raw.tobytes(), version=4)) for raw in rng.integers(0, 256, (rows, 16), np.uint8)
    ]
    offsets = np.sort(rng.uniform(0, SPAN.total_seconds(), rows))
    created = [START + timedelta(seconds=float(offset)) for offset in offsets]
    # Most frames are clearly fine; a few percent are flagged (score >= 0.5), as on a healthy line.
    flagged = rng.random(rows) < FLAGGED_SHARE
    scores = np.where(flagged, rng.uniform(0.5, 1.0, rows), 0.5 * rng.beta(1.0, 12.0, rows))
    cameras = rng.integers(0, len(LINES) * CAMERAS_PER_LINE, rows)
    return Generated(ids=ids, cameras=cameras, scores=scores, created=created)


def inspection_rows(data: Generated, start: int, stop: int) -> Iterator[tuple[object, ...]]:
    """Inspection rows in `INSPECTION_COLUMNS` order."""
    rows = len(data.ids)
    for index in range(start, stop):
        camera = int(data.cameras[index])
        score = float(data.scores[index])
        defect = score >= 0.5
        # Model versions follow time: m1 for the first 40 %, m2 for the next 40 %, then m3.
        version = "m1" if index < 0.4 * rows else "m2" if index < 0.8 * rows else "m3"
        values = {
            "id": data.ids[index],
            "camera_id": f"cam-{camera:02d}",
            "frame_id": f"frame-{index:09d}",
            "line": LINES[camera // CAMERAS_PER_LINE],
            "model_version": version,
            "pixel_threshold": 0.5,
            "image_threshold": 0.5,
            "verdict": "defect" if defect else "ok",
            "score": score,
            "defect_area": int(score * 4000) if defect else 0,
            "width": 1024,
            "height": 768,
            "decode_ms": 2.0,
            "queue_ms": 1.0,
            "inference_ms": 8.0,
            "total_ms": 11.0,
            "image_key": f"{index:064x}.png",
            "image_media_type": "image/png",
            "map_key": f"{index:063x}m.png",
            "created_at": data.created[index],
        }
        yield tuple(values[name] for name in INSPECTION_COLUMNS)


def flagged_indices(data: Generated) -> np.ndarray:
    return np.flatnonzero(data.scores >= 0.5)


def review_rows(data: Generated, seed: int) -> list[tuple[object, ...]]:
    """Reviews of a share of the flagged inspections, highest scores first (the queue's order)."""
    flagged = flagged_indices(data)
    reviewed = flagged[np.argsort(-data.scores[flagged])][: int(len(flagged) * REVIEWED_SHARE_OF_FLAGGED)]
    verdicts = np.random.default_rng(seed + 1).choice(["confirm", "reject"], len(reviewed), p=[0.7, 0.3])
    return [
        (data.ids[i], str(verdict), data.created[i] + timedelta(hours=1))
        for i, verdict in zip(reviewed, verdicts, strict=True)
    ]


def region_rows(data: Generated) -> list[tuple[object, ...]]:
    """One region per flagged inspection (the queue page loads them)."""
    return [
        (data.ids[i], 100, 100, 20, 10, int(data.scores[i] * 4000), float(data.scores[i]), [])
        for i in flagged_indices(data)
    ]


def secondary_indexes(engine: Engine, table: str) -> list[tuple[str, list[str], bool]]:
    """(name, columns, unique) of the table's named indexes, as migrated."""
    return [
        (index["name"], list(index["column_names"]), bool(index["unique"]))
        for index in inspect(engine).get_indexes(table)
        if index["name"]
    ]


def bulk_insert(engine: Engine, table: str, columns: list[str], rows: Iterable[tuple[object, ...]]) -> None:
    """Insert raw rows: COPY on PostgreSQL, one executemany per chunk on SQLite (one transaction)."""
    column_list = ", ".join(columns)
    processors = _bind_processors(engine, table, columns)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(_processed(row, processors))
        else:
            statement = f"INSERT INTO {table} ({column_list}) VALUES ({', '.join('?' * len(columns))})"
            for chunk in _chunks(rows, CHUNK_ROWS):
                cursor.executemany(statement, [_processed(row, processors) for row in chunk])
        connection.commit()
    finally:
        connection.close()


def _bind_processors(engine: Engine, table: str, columns: list[str]) -> list[Callable | None]:
    """Each column type's bind processor, so raw rows are stored exactly as the ORM stores them."""
    sql_table = Base.metadata.tables[table]
    return [sql_table.c[name].type.bind_processor(engine.dialect) for name in columns]


def _processed(row: tuple[object, ...], processors: list[Callable | None]) -> tuple[object, ...]:
    return tuple(process(value) if process else value for value, process in zip(row, processors, strict=True))


def _chunks(rows: Iterable[tuple[object, ...]], size: int) -> Iterator[list[tuple[object, ...]]]:
    chunk: list[tuple[object, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def fill(engine: Engine, rows: int, seed: int) -> None:
    """Insert `rows` inspections with their regions and reviews, indexes dropped during the load."""
    started = time.perf_counter()
    data = generate(rows, seed)
    indexes = {
        table: secondary_indexes(engine, table) for table in ("inspections", "reviews", "defect_regions")
    }
    with engine.begin() as connection:
        for table_indexes in indexes.values():
            for name, _, unique in table_indexes:
                if not unique:
                    connection.execute(text(f"DROP INDEX {name}"))
    bulk_insert(engine, "inspections", INSPECTION_COLUMNS, inspection_rows(data, 0, rows))
    bulk_insert(engine, "defect_regions", REGION_COLUMNS, region_rows(data))
    bulk_insert(engine, "reviews", REVIEW_COLUMNS, review_rows(data, seed))
    loaded = time.perf_counter()
    with engine.begin() as connection:
        for table, table_indexes in indexes.items():
            for name, columns, unique in table_indexes:
                if not unique:
                    connection.execute(text(f"CREATE INDEX {name} ON {table} ({', '.join(columns)})"))
        connection.execute(text("ANALYZE"))
    print(
        f"filled {rows:,} inspections in {loaded - started:.1f} s, "
        f"indexes rebuilt and analysed in {time.perf_counter() - loaded:.1f} s"
    )


# --- timing ----------------------------------------------------------------------------------------


def combinations() -> dict[str, QueueFilters]:
    """The queue's main views: the default triage view, then one per filter and sort."""
    last_day = START + SPAN - timedelta(days=1)
    return {
        "unreviewed, by score (default)": QueueFilters(),
        "unreviewed, by time": QueueFilters(sort="time"),
        "all, by score": QueueFilters(review_state="any"),
        "reviewed, by time": QueueFilters(review_state="reviewed", sort="time"),
        "verdict=defect, by score": QueueFilters(verdict="defect"),
        "verdict=ok, by time": QueueFilters(verdict="ok", sort="time"),
        "line, by score": QueueFilters(line="line-b"),
        "line, by time": QueueFilters(line="line-b", sort="time"),
        "camera, by time": QueueFilters(camera="cam-07", sort="time"),
        "camera, by score": QueueFilters(camera="cam-07"),
        "model version, by score": QueueFilters(model_version="m2"),
        "line + last day, by time": QueueFilters(line="line-c", since=last_day, sort="time"),
        "line + last day, by score": QueueFilters(line="line-c", since=last_day),
        "verdict=defect + line, by score": QueueFilters(verdict="defect", line="line-a"),
    }


def deep_cursor(session: Session, filters: QueueFilters, depth: int) -> tuple[Cursor | None, int]:
    """The cursor after `depth` rows of the queue (or half the queue, if shorter), and that depth."""
    value_col, id_col = queries.sort_columns(filters.sort)
    matching = select(InspectionDB.id).where(*queries.filter_conditions(filters)).subquery()
    count = session.scalar(select(func.count()).select_from(matching)) or 0
    depth = min(depth, count // 2)
    if depth == 0:
        return None, 0
    statement = (
        select(InspectionDB)
        .where(*queries.filter_conditions(filters))
        .order_by(value_col.desc(), id_col.desc())
        .offset(depth - 1)
        .limit(1)
    )
    row = session.scalars(statement).one()
    view = queries.get_inspection(session, row.id)
    assert view is not None
    return queries.cursor_for(view, filters.sort), depth


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm: statement compilation, page cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def explain(session: Session, filters: QueueFilters, limit: int) -> str:
    statement = (
        select(InspectionDB.id)
        .where(*queries.filter_conditions(filters))
        .order_by(*(column.desc() for column in queries.sort_columns(filters.sort)))
        .limit(limit)
    )
    compiled = statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN" if session.get_bind().dialect.name == "sqlite" else "EXPLAIN"
    lines = [" ".join(str(part) for part in row) for row in session.execute(text(f"{prefix} {compiled}"))]
    return "\n".join(f"      {line}" for line in lines)


def time_view(session: Session, filters: QueueFilters, args: argparse.Namespace) -> tuple[float, float, int]:
    """(first page ms, deep page ms, depth of the deep page) of one queue view."""
    first = median_ms(functools.partial(queries.queue_page, session, filters, limit=args.limit), args.repeat)
    cursor, depth = deep_cursor(session, filters, args.depth)
    if cursor is None:
        return first, float("nan"), 0
    page = functools.partial(queries.queue_page, session, filters, cursor=cursor, limit=args.limit)
    return first, median_ms(page, args.repeat), depth


def time_queries(engine: Engine, args: argparse.Namespace) -> None:
    print(f"{'view':34s} {'first page':>12s} {'deep page':>12s}  depth")
    with Session(engine) as session:
        for name, filters in combinations().items():
            first, deep, depth = time_view(session, filters, args)
            print(f"{name:34s} {first:9.2f} ms {deep:9.2f} ms  {depth:,}")
            if args.explain:
                print(explain(session, filters, args.limit))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = None
    database_url = args.db
    if database_url is None:
        scratch = Path(tempfile.mkdtemp(prefix="bench-queue-"))
        database_url = f"sqlite:///{scratch / 'queue.db'}"
    migrations.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            present = session.scalar(select(func.count()).select_from(InspectionDB)) or 0
        if present == 0:
            fill(engine, args.rows, args.seed)
        else:
            print(f"reusing the {present:,} inspections already in the database")
        print(f"{engine.dialect.name}, page size {args.limit}, median of {args.repeat} runs")
        time_queries(engine, args)
    finally:
        engine.dispose()
        if scratch is not None:
            if args.keep:
                print(f"kept {database_url}")
            else:
                for path in scratch.iterdir():
                    path.unlink()
                scratch.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
