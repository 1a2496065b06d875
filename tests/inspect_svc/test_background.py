"""The service's background loop: start, cancel-and-wait stop, a crash reported once."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from inspect_svc.background import BackgroundLoop


class Recorder:
    """A loop body that records how it ended, and can be told to fail or to linger when cancelled."""

    def __init__(self, *, fail: bool = False, cleanup_s: float = 0.0) -> None:
        self.fail = fail
        self.cleanup_s = cleanup_s
        self.started = 0
        self.cancelled = 0

    async def run(self) -> None:
        self.started += 1
        if self.fail:
            raise ValueError("the loop broke")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            await asyncio.sleep(self.cleanup_s)  # cleanup that outlasts the cancellation request
            raise


def test_stop_before_start_does_nothing() -> None:
    loop = BackgroundLoop("idle", Recorder().run)
    asyncio.run(loop.stop())
    assert not loop.running


def test_stop_cancels_and_waits_and_a_second_stop_is_a_no_op() -> None:
    body = Recorder(cleanup_s=0.01)

    async def scenario() -> None:
        loop = BackgroundLoop("worker", body.run)
        loop.start()
        await asyncio.sleep(0)
        assert loop.running
        assert "worker" in {task.get_name() for task in asyncio.all_tasks()}
        await loop.stop()
        assert not loop.running
        assert {task.get_name() for task in asyncio.all_tasks()} == {asyncio.current_task().get_name()}
        await loop.stop()

    asyncio.run(scenario())
    assert (body.started, body.cancelled) == (1, 1)


def test_a_stopped_loop_starts_again_but_a_running_one_refuses() -> None:
    body = Recorder()

    async def scenario() -> None:
        loop = BackgroundLoop("restartable", body.run)
        loop.start()
        with pytest.raises(RuntimeError, match="restartable is already running"):
            loop.start()
        await asyncio.sleep(0)
        await loop.stop()
        loop.start()
        await asyncio.sleep(0)
        await loop.stop()

    asyncio.run(scenario())
    assert (body.started, body.cancelled) == (2, 2)


def test_a_loop_that_raised_is_logged_once_and_stop_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    unhandled: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unhandled.append(context))
        loop = BackgroundLoop("fragile", Recorder(fail=True).run)
        loop.start()
        await asyncio.sleep(0.01)
        assert not loop.running
        await loop.stop()
        await loop.stop()
        del loop
        gc.collect()  # an exception nobody retrieved would be reported as the task is collected

    with caplog.at_level(logging.ERROR, logger="inspect_svc.background"):
        asyncio.run(scenario())
    reports = [record for record in caplog.records if record.name == "inspect_svc.background"]
    assert len(reports) == 1
    assert "fragile" in reports[0].getMessage()
    assert reports[0].exc_info is not None and isinstance(reports[0].exc_info[1], ValueError)
    assert unhandled == []


def test_cancelling_the_caller_of_stop_is_not_swallowed() -> None:
    body = Recorder(cleanup_s=0.05)

    async def scenario() -> None:
        loop = BackgroundLoop("slow-to-stop", body.run)
        loop.start()
        await asyncio.sleep(0)
        stopping = asyncio.create_task(loop.stop())
        await asyncio.sleep(0.01)  # the loop is in its cleanup, `stop` is waiting for it
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        await loop.stop()  # the loop still ends, and a later stop waits for it
        assert not loop.running

    asyncio.run(scenario())
    assert body.cancelled == 1
