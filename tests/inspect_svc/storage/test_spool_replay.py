"""The spool's replayer: outages are retried, a record the database refuses is set aside, never lost."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import exc as sa_exc

from inspect_svc.service import store_spooled
from inspect_svc.storage import migrations
from inspect_svc.storage.db import make_engine, make_session_factory
from inspect_svc.storage.spool import ResultSpool, SpoolReplayer, is_database_outage
from tests.inspect_svc.storage.test_storage import record


class FlakyStore:
    """Refuses one frame for good (a data error); otherwise stores, after `outages` failed attempts."""

    def __init__(self, refused_frame: str, outages: int = 0) -> None:
        self.refused_frame, self.outages, self.stored = refused_frame, outages, []

    def __call__(self, item) -> None:
        if self.outages:
            self.outages -= 1
            raise sa_exc.OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        if item.frame_id == self.refused_frame:
            raise sa_exc.IntegrityError("INSERT", {}, ValueError("violates check constraint"))
        self.stored.append(item.frame_id)


def test_a_refused_record_is_set_aside_and_the_rest_replays(tmp_path) -> None:
    spool = ResultSpool(tmp_path / "spool.sqlite3", max_items=10)
    for frame in ("f-1", "poison", "f-2"):
        spool.add(record(frame))
    store = FlakyStore(refused_frame="poison")
    moved = asyncio.run(SpoolReplayer(spool, store).drain_once())
    assert (moved, store.stored, spool.depth()) == (2, ["f-1", "f-2"], 0)
    [(kept, error)] = spool.rejected()
    assert kept.frame_id == "poison" and error.startswith("IntegrityError")
    assert spool.rejected_count() == 1


def test_an_outage_stops_the_pass_and_keeps_every_record(tmp_path) -> None:
    spool = ResultSpool(tmp_path / "spool.sqlite3", max_items=10)
    spool.add(record("f-1"))
    with pytest.raises(sa_exc.OperationalError):
        asyncio.run(SpoolReplayer(spool, FlakyStore(refused_frame="none", outages=1)).drain_once())
    assert spool.depth() == 1 and spool.rejected_count() == 0


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (sa_exc.OperationalError("x", {}, Exception("down")), True),
        (sa_exc.InterfaceError("x", {}, Exception("closed")), True),
        (ConnectionRefusedError(), True),
        (sa_exc.IntegrityError("x", {}, Exception("constraint")), False),
        (sa_exc.DataError("x", {}, Exception("too long")), False),
        (ValueError("bad record"), False),
    ],
)
def test_outages_are_told_from_refusals(error: BaseException, outage: bool) -> None:
    assert is_database_outage(error) is outage


def test_a_replayed_frame_the_database_holds_under_another_id_is_dropped_and_logged(tmp_path, caplog) -> None:
    # Only a frame whose first answer the service could not know (another replica's) reaches this.
    database_url = f"sqlite:///{tmp_path / 'inspect.db'}"
    migrations.upgrade(database_url)
    sessions = make_session_factory(make_engine(database_url))
    first, second = record("f-1"), record("f-1")
    assert store_spooled(sessions, first) is True
    assert store_spooled(sessions, first) is False  # the same result replayed twice: silent
    assert caplog.records == []
    assert store_spooled(sessions, second) is False
    [line] = caplog.records
    assert line.levelname == "ERROR" and first.id in line.getMessage() and second.id in line.getMessage()
