"""The inference engine: ORT sessions, the predictor, post-processing, dynamic batching, hot swap."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inspect_svc.bundle import Bundle, Thresholds, load_bundle
from inspect_svc.engine.admission import PixelGate, PixelsInFlight
from inspect_svc.engine.batcher import BatcherStopped, DeadlineExceeded, DynamicBatcher, QueueFull
from inspect_svc.engine.inference import EngineConfig, EngineNotReady, InferenceEngine
from inspect_svc.engine.predictor import Predictor, batch_buckets, bucket_for
from inspect_svc.engine.regions import extract_regions, summarize
from inspect_svc.engine.session import EngineError, choose_providers, create_session
from tests.utils.onnx_models import make_pixel_model, make_test_bundle, reference_probability

TILE = 32


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_test_bundle(tmp_path_factory.mktemp("bundle"), tile=TILE, overlap=8).root)


@pytest.fixture(scope="module")
def predictor(bundle):
    return Predictor(bundle, intra_op_threads=1, max_batch=4)


def _frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- session -----------------------------------------------------------------------------------------


def test_providers_fall_back_to_cpu_and_refuse_typos():
    assert choose_providers(["CUDAExecutionProvider"])[-1] == "CPUExecutionProvider"
    assert choose_providers(None)[-1] == "CPUExecutionProvider"
    with pytest.raises(EngineError, match="unknown execution provider"):
        choose_providers(["CudaProvider"])


def test_session_uses_explicit_threads(tmp_path):
    session = create_session(
        make_pixel_model(tmp_path / "m.onnx", tile=TILE), providers=None, intra_op_threads=1
    )
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_session_options().inter_op_num_threads == 1


@pytest.mark.parametrize("content", [b"", b"this is not a protobuf"])
def test_broken_onnx_gives_a_clear_error(tmp_path, content):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(content)
    with pytest.raises(EngineError, match="cannot load ONNX model"):
        create_session(broken)
    with pytest.raises(EngineError, match="does not exist"):
        create_session(tmp_path / "missing.onnx")


# --- predictor ---------------------------------------------------------------------------------------


def test_batch_buckets():
    assert batch_buckets(1) == [1]
    assert batch_buckets(16) == [1, 2, 4, 8, 16]
    assert batch_buckets(12) == [1, 2, 4, 8, 12]
    assert bucket_for(5, batch_buckets(12)) == 8
    with pytest.raises(ValueError):
        bucket_for(13, batch_buckets(12))


@pytest.mark.parametrize(("height", "width"), [(20, 12), (32, 32), (100, 77), (45, 260)])
def test_predict_matches_the_model_on_the_whole_frame(predictor, height, width):
    image = _frame(height, width)
    prob_map = predictor.predict(image)
    assert prob_map.shape == (height, width) and prob_map.dtype == np.float32
    np.testing.assert_allclose(prob_map, reference_probability(image), atol=1e-5)


def test_run_tiles_chunks_and_pads_to_fixed_batches(predictor):
    image = _frame(100, 100, seed=1)
    tiles, plan = predictor.preprocess(image)
    assert tiles.shape == (plan.count, 3, TILE, TILE) and plan.count > predictor.max_batch
    probs = predictor.run_tiles(tiles)
    one_by_one = np.concatenate([predictor.run_tiles(tiles[i : i + 1]) for i in range(len(tiles))])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-6)
    raw_tiles, raw_plan = predictor.tile_pixels(image)  # uint8 tiles are normalised batch by batch
    assert raw_tiles.dtype == np.uint8 and raw_plan == plan
    np.testing.assert_allclose(predictor.run_tiles(raw_tiles), probs, atol=1e-6)
    predictor.warmup()
    with pytest.raises(ValueError, match="tiles of shape"):
        predictor.run_tiles(np.zeros((2, 3, TILE + 1, TILE + 1), np.float32))


def test_predictor_rejects_non_rgb_uint8(predictor):
    with pytest.raises(ValueError, match="uint8 RGB"):
        predictor.predict(np.zeros((40, 40), np.uint8))


def test_graph_that_disagrees_with_its_manifest_is_refused(tmp_path):
    bundle = make_test_bundle(tmp_path / "b", tile=TILE)
    make_pixel_model(bundle.onnx_path, tile=TILE, output_name="scores")
    with pytest.raises(EngineError, match="outputs"):
        Predictor(bundle)
    make_pixel_model(bundle.onnx_path, tile=TILE * 2)
    with pytest.raises(EngineError, match="shape"):
        Predictor(bundle)


# --- regions -----------------------------------------------------------------------------------------


def test_regions_and_verdict_on_a_hand_made_map():
    prob = np.zeros((60, 80), np.float32)
    prob[10:20, 5:15] = 0.9  # a 10x10 square
    prob[12, 7] = 0.95
    prob[40:42, 60:70] = 0.6  # a 2x10 bar
    prob[55, 2] = 0.99  # a single-pixel speck
    regions = extract_regions(prob, threshold=0.5, min_area=2)
    assert [(r.x, r.y, r.width, r.height, r.area) for r in regions] == [
        (5, 10, 10, 10, 100),
        (60, 40, 10, 2, 20),
    ]
    square = regions[0]
    assert square.score == pytest.approx(0.95) and square.mean_score == pytest.approx((99 * 0.9 + 0.95) / 100)
    assert sorted(map(tuple, square.polygon)) == [(5, 10), (5, 19), (14, 10), (14, 19)]
    assert len(extract_regions(prob, threshold=0.5, min_area=1)) == 3
    assert len(extract_regions(prob, threshold=0.5, min_area=1, max_regions=1)) == 1
    assert extract_regions(prob, threshold=0.5, min_area=1)[0].area == 1  # the speck scores highest

    verdict = summarize(prob, Thresholds(pixel=0.5, image=0.97))
    assert (verdict.verdict, verdict.score, verdict.defect_area) == ("defect", pytest.approx(0.99), 121)
    assert summarize(prob, Thresholds(pixel=0.5, image=0.995)).verdict == "ok"
    assert extract_regions(np.zeros((8, 8), np.float32), threshold=0.5) == []


# --- dynamic batcher ---------------------------------------------------------------------------------


class FakeRunner:
    """Doubles every tile's first channel; records batch sizes; can be slowed down or made to fail."""

    def __init__(self, max_batch: int = 8, delay_s: float = 0.0) -> None:
        self.max_batch = max_batch
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []
        self.fail_with: Exception | None = None
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()

    def run_tiles(self, tiles: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.release.wait(timeout=5)
        time.sleep(self.delay_s)
        self.batch_sizes.append(len(tiles))
        if self.fail_with is not None:
            raise self.fail_with
        return tiles[:, 0] * 2.0


def _tiles(count: int, value: float) -> np.ndarray:
    return np.full((count, 3, 4, 4), value, dtype=np.float32)


def _in(seconds: float) -> float:
    return time.monotonic() + seconds


def test_concurrent_requests_share_batches_and_get_their_own_results():
    async def scenario():
        runner = FakeRunner(max_batch=8)
        sizes: list[int] = []
        batcher = DynamicBatcher(runner, max_wait_ms=50, on_batch=lambda size, seconds: sizes.append(size))
        await batcher.start()
        counts = [1, 3, 2, 5, 1, 4, 2, 1, 6, 3]
        results = await asyncio.gather(*(batcher.submit(_tiles(n, i), _in(5)) for i, n in enumerate(counts)))
        await batcher.stop()
        return runner, sizes, counts, results, batcher.stats

    runner, sizes, counts, results, stats = asyncio.run(scenario())
    for index, (count, probs) in enumerate(zip(counts, results, strict=True)):
        assert probs.shape == (count, 4, 4)
        assert np.all(probs == index * 2.0)
    assert sum(runner.batch_sizes) == sum(counts) == stats.tiles_run
    assert max(runner.batch_sizes) == 8 and len(runner.batch_sizes) < len(counts)  # batched, split, capped
    assert sizes == runner.batch_sizes
    assert runner.threads and len(runner.threads) == 1  # one worker thread runs every batch


def test_a_large_request_spans_several_batches():
    async def scenario():
        runner = FakeRunner(max_batch=4)
        batcher = DynamicBatcher(runner, max_wait_ms=1)
        await batcher.start()
        probs = await batcher.submit(
            np.arange(11, dtype=np.float32)[:, None, None, None] * np.ones((11, 3, 2, 2)), _in(5)
        )
        await batcher.stop()
        return runner, probs

    runner, probs = asyncio.run(scenario())
    assert runner.batch_sizes == [4, 4, 3]
    np.testing.assert_array_equal(probs[:, 0, 0], np.arange(11) * 2.0)


def test_full_queue_refuses_with_retry_after():
    async def scenario():
        runner = FakeRunner(max_batch=2)
        runner.release.clear()  # the model is stuck until released
        batcher = DynamicBatcher(runner, max_wait_ms=1, max_queue_tiles=4)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(_tiles(2, 1), _in(5)))
        await asyncio.sleep(0.2)  # the first batch is now running (blocked); the queue is empty
        queued = [asyncio.create_task(batcher.submit(_tiles(2, 2), _in(5))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as caught:
            await batcher.submit(_tiles(1, 3), _in(5))
        runner.release.set()
        done = await asyncio.gather(first, *queued)
        await batcher.stop()
        return caught.value, done

    refusal, done = asyncio.run(scenario())
    assert refusal.retry_after_s >= 1
    assert [probs.shape[0] for probs in done] == [2, 2, 2]


def test_oversized_request_is_accepted_into_an_empty_queue():
    async def scenario():
        batcher = DynamicBatcher(FakeRunner(max_batch=4), max_wait_ms=1, max_queue_tiles=4)
        await batcher.start()
        probs = await batcher.submit(_tiles(10, 1), _in(5))
        await batcher.stop()
        return probs

    assert asyncio.run(scenario()).shape == (10, 4, 4)


def test_deadline_exceeded_and_expired_work_is_dropped():
    async def scenario():
        runner = FakeRunner(max_batch=2)
        runner.release.clear()
        batcher = DynamicBatcher(runner, max_wait_ms=1)
        await batcher.start()
        blocking = asyncio.create_task(batcher.submit(_tiles(2, 1), _in(5)))
        await asyncio.sleep(0.2)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(_tiles(2, 2), _in(0.05))
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(_tiles(1, 2), time.monotonic() - 1)
        runner.release.set()
        await blocking
        await batcher.stop()
        return runner

    runner = asyncio.run(scenario())
    assert runner.batch_sizes == [2]  # the expired request never reached the model


class RecordingRunner(FakeRunner):
    """A FakeRunner that records which tile values each batch carried, and runs a batch only when
    given a permit (`allow`), so a test decides how far the model gets."""

    def __init__(self, max_batch: int) -> None:
        super().__init__(max_batch=max_batch)
        self.batches: list[list[float]] = []
        self.permits = threading.Semaphore(0)

    def allow(self, batches: int) -> None:
        for _ in range(batches):
            self.permits.release()

    def run_tiles(self, tiles: np.ndarray) -> np.ndarray:
        self.permits.acquire(timeout=5)
        self.batches.append([float(value) for value in tiles[:, 0, 0, 0]])
        return super().run_tiles(tiles)

    def batch_of(self, value: float) -> int:
        return next(index for index, batch in enumerate(self.batches) if value in batch)


def _numbered(first: int, count: int) -> np.ndarray:
    return np.arange(first, first + count, dtype=np.float32)[:, None, None, None] * np.ones((count, 3, 4, 4))


def _run_behind_a_busy_model(
    first: tuple[str, int, int], *later: tuple[str, int, int], head_start: int = 0
) -> RecordingRunner:
    """Submit `first` (camera, first tile value, tile count); let the model run `head_start` of its
    batches; submit `later` while the next one is on the model; then let everything run. Returns the
    runner, whose `batches` are in the order they ran (max_batch 4)."""

    async def scenario() -> RecordingRunner:
        runner = RecordingRunner(max_batch=4)
        batcher = DynamicBatcher(runner, max_wait_ms=1)
        await batcher.start()
        camera, start, count = first
        jobs = [asyncio.create_task(batcher.submit(_numbered(start, count), _in(5), camera=camera))]
        runner.allow(head_start)
        # Until the head start has run and the next batch is on the model, waiting for its permit.
        while batcher.stats.tiles_run < 4 * head_start or batcher.stats.queue_depth_tiles > count - 4 * (
            head_start + 1
        ):
            await asyncio.sleep(0.01)
        for camera, start, count in later:
            jobs.append(asyncio.create_task(batcher.submit(_numbered(start, count), _in(5), camera=camera)))
        await asyncio.sleep(0)
        runner.allow(1000)
        await asyncio.gather(*jobs)
        await batcher.stop()
        return runner

    return asyncio.run(scenario())


def test_a_camera_backlog_does_not_delay_another_cameras_frame():
    runner = _run_behind_a_busy_model(("A", 0, 24), ("B", -1, 1))  # A: tiles 0..23; B: one tile, -1
    # One FIFO would run all of A's 24 tiles first (B in the 7th batch); B, having used nothing, goes first.
    assert runner.batch_of(-1.0) == 1 < runner.batch_of(19.0)
    assert runner.batches[1] == [-1.0, 4.0, 5.0, 6.0]  # B took what it needed, A got the rest of the room
    assert sorted(value for batch in runner.batches for value in batch) == [-1.0, *map(float, range(24))]


def test_a_light_camera_is_served_before_a_heavy_one():
    # A has been running alone for 5 batches (its 6th is on the model) when B's frame of 6 tiles arrives.
    runner = _run_behind_a_busy_model(("A", 0, 40), ("B", 100, 6), head_start=5)
    assert runner.batches[5] == [20.0, 21.0, 22.0, 23.0]
    assert runner.batches[6:8] == [[100.0, 101.0, 102.0, 103.0], [104.0, 105.0, 24.0, 25.0]]


def test_cameras_that_all_want_more_than_their_share_alternate():
    runner = _run_behind_a_busy_model(("A", 0, 40), ("C", 200, 16))
    owners = ["A" if batch[0] < 100 else "C" for batch in runner.batches]
    assert owners[:9] == ["A", "C", "A", "C", "A", "C", "A", "C", "A"]  # until C's 16 tiles are done
    assert all(len(set(batch) & set(range(100))) in (0, 4) for batch in runner.batches[:9])  # whole batches


def test_a_camera_is_refused_beyond_its_own_queue_bound_while_others_still_get_in():
    async def scenario():
        runner = FakeRunner(max_batch=2)
        runner.release.clear()
        batcher = DynamicBatcher(runner, max_wait_ms=1, max_queue_tiles=64, max_camera_tiles=4)
        await batcher.start()
        blocker = asyncio.create_task(batcher.submit(_tiles(2, 1), _in(5), camera="X"))
        await asyncio.sleep(0.2)
        mine = asyncio.create_task(batcher.submit(_tiles(3, 2), _in(5), camera="A"))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(_tiles(2, 2), _in(5), camera="A")
        other = asyncio.create_task(batcher.submit(_tiles(2, 3), _in(5), camera="B"))
        await asyncio.sleep(0)
        runner.release.set()
        done = await asyncio.gather(blocker, mine, other)
        await batcher.stop()
        return done

    assert [probs.shape[0] for probs in asyncio.run(scenario())] == [2, 3, 2]


def test_a_full_queue_still_admits_a_camera_below_its_fair_share():
    async def scenario():
        runner = FakeRunner(max_batch=2)
        runner.release.clear()
        batcher = DynamicBatcher(runner, max_wait_ms=1, max_queue_tiles=8)
        await batcher.start()
        blocker = asyncio.create_task(batcher.submit(_tiles(2, 1), _in(5), camera="X"))
        await asyncio.sleep(0.2)
        flood = asyncio.create_task(batcher.submit(_tiles(20, 2), _in(5), camera="A"))  # oversized, admitted
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):  # 5 tiles exceed C's share of the full queue (8 // 2 cameras)
            await batcher.submit(_tiles(5, 3), _in(5), camera="C")
        fair = asyncio.create_task(batcher.submit(_tiles(3, 4), _in(5), camera="B"))
        await asyncio.sleep(0)
        runner.release.set()
        done = await asyncio.gather(blocker, flood, fair)
        await batcher.stop()
        return done

    assert [probs.shape[0] for probs in asyncio.run(scenario())] == [2, 20, 3]


def test_retry_after_counts_only_live_tiles_once_a_request_gave_up():
    async def scenario():
        runner = FakeRunner(max_batch=2)
        runner.release.clear()
        batcher = DynamicBatcher(runner, max_wait_ms=1, max_queue_tiles=10)
        batcher._counters.seconds_per_batch = 1.0  # a known batch time, so the estimate is exact
        await batcher.start()
        blocker = asyncio.create_task(batcher.submit(_tiles(2, 1), _in(5), camera="X"))
        await asyncio.sleep(0.2)
        with pytest.raises(DeadlineExceeded):  # a big frame expires behind the running batch
            await batcher.submit(_tiles(100, 2), _in(0.05), camera="A")
        depth_after_expiry = batcher.stats.queue_depth_tiles
        live = asyncio.create_task(batcher.submit(_tiles(8, 3), _in(5), camera="D"))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as caught:
            await batcher.submit(_tiles(8, 4), _in(5), camera="C")
        runner.release.set()
        await asyncio.gather(blocker, live)
        await batcher.stop()
        return depth_after_expiry, caught.value.retry_after_s

    depth_after_expiry, retry_after = asyncio.run(scenario())
    assert depth_after_expiry == 0  # not the dead request's 100 tiles
    assert retry_after == 4  # D's 8 live tiles = 4 batches of 1 s; the dead 100 tiles would say 54


def test_model_errors_reach_every_request_in_the_batch_and_the_batcher_recovers():
    async def scenario():
        runner = FakeRunner(max_batch=8)
        runner.fail_with = RuntimeError("CUDA failure")
        batcher = DynamicBatcher(runner, max_wait_ms=20)
        await batcher.start()
        failures = await asyncio.gather(
            *(batcher.submit(_tiles(2, 1), _in(5)) for _ in range(3)), return_exceptions=True
        )
        runner.fail_with = None
        recovered = await batcher.submit(_tiles(1, 4), _in(5))
        await batcher.stop()
        return failures, recovered

    failures, recovered = asyncio.run(scenario())
    assert all(isinstance(failure, RuntimeError) and "CUDA failure" in str(failure) for failure in failures)
    assert np.all(recovered == 8.0)


def test_stop_drains_accepted_work_then_refuses_more():
    async def scenario():
        runner = FakeRunner(max_batch=2, delay_s=0.01)
        batcher = DynamicBatcher(runner, max_wait_ms=1)
        await batcher.start()
        pending = [asyncio.create_task(batcher.submit(_tiles(1, i), _in(5))) for i in range(6)]
        await asyncio.sleep(0)
        await batcher.stop(drain=True)
        results = await asyncio.gather(*pending)
        with pytest.raises(BatcherStopped):
            await batcher.submit(_tiles(1, 1), _in(5))
        return results

    assert [float(probs[0, 0, 0]) for probs in asyncio.run(scenario())] == [2.0 * i for i in range(6)]


def test_stop_without_drain_fails_pending_requests():
    async def scenario():
        runner = FakeRunner(max_batch=2)
        runner.release.clear()
        batcher = DynamicBatcher(runner, max_wait_ms=1)
        await batcher.start()
        pending = [asyncio.create_task(batcher.submit(_tiles(2, 1), _in(5))) for _ in range(3)]
        await asyncio.sleep(0.2)
        await batcher.stop(drain=False)
        runner.release.set()
        return await asyncio.gather(*pending, return_exceptions=True)

    assert all(isinstance(result, BatcherStopped) for result in asyncio.run(scenario()))


# --- inference engine and hot swap -------------------------------------------------------------------


def test_engine_infers_reports_timings_and_refuses_when_stopped(bundle):
    async def scenario():
        engine = InferenceEngine(
            bundle, EngineConfig(intra_op_threads=1, max_batch=4, max_wait_ms=1, max_queue_tiles=2048)
        )
        assert not engine.ready
        with pytest.raises(EngineNotReady):
            await engine.infer(_frame(40, 40), deadline_s=5)
        await engine.start()
        assert engine.ready and engine.version == "test-1"
        small, large = _frame(50, 70, seed=2), _frame(600, 500, seed=3)
        outputs = await asyncio.gather(engine.infer(small, deadline_s=10), engine.infer(large, deadline_s=10))
        await engine.stop()
        assert not engine.ready
        return (small, large), outputs

    images, outputs = asyncio.run(scenario())
    for image, output in zip(images, outputs, strict=True):
        np.testing.assert_allclose(output.prob_map, reference_probability(image), atol=1e-5)
        assert output.model_version == "test-1" and output.manifest.tiling.tile == TILE
        assert {"preprocess_ms", "queue_ms", "inference_ms", "postprocess_ms"} <= output.timings.keys()


def test_hot_swap_under_load_fails_no_request(tmp_path: Path):
    old = make_test_bundle(tmp_path / "old", tile=TILE, overlap=8, version="old-1")
    new = make_test_bundle(tmp_path / "new", tile=48, overlap=16, version="new-2")  # other tiling, too

    async def scenario():
        engine = InferenceEngine(old, EngineConfig(intra_op_threads=1, max_batch=4, max_wait_ms=2))
        await engine.start()
        stop_load = asyncio.Event()

        async def client(seed: int) -> list[str]:
            versions = []
            while not stop_load.is_set():
                image = _frame(70, 90, seed=seed)
                output = await engine.infer(image, deadline_s=30)
                np.testing.assert_allclose(output.prob_map, reference_probability(image), atol=1e-5)
                versions.append(output.model_version)
            return versions

        clients = [asyncio.create_task(client(seed)) for seed in range(6)]
        await asyncio.sleep(0.2)
        replaced = await engine.swap(new)
        await asyncio.sleep(0.2)
        stop_load.set()
        versions = await asyncio.gather(*clients)  # raises if any request failed
        current = engine.version
        await engine.stop()
        return replaced, current, [v for per_client in versions for v in per_client]

    replaced, current, versions = asyncio.run(scenario())
    assert (replaced, current) == ("old-1", "new-2")
    assert "old-1" in versions and "new-2" in versions


def test_failed_swap_keeps_the_old_model(bundle, tmp_path):
    broken = make_test_bundle(tmp_path / "broken", tile=TILE, version="broken-1")
    make_pixel_model(broken.onnx_path, tile=TILE, output_name="scores")

    async def scenario():
        engine = InferenceEngine(bundle, EngineConfig(intra_op_threads=1, max_batch=2))
        await engine.start()
        with pytest.raises(EngineError):
            await engine.swap(broken)
        output = await engine.infer(_frame(40, 40), deadline_s=5)
        await engine.stop()
        return output.model_version

    assert asyncio.run(scenario()) == "test-1"


def test_stop_during_a_swap_stops_the_incoming_model_too(bundle, tmp_path, monkeypatch):
    incoming = make_test_bundle(tmp_path / "incoming", tile=TILE, version="incoming-2")
    loading = threading.Event()

    async def scenario():
        engine = InferenceEngine(bundle, EngineConfig(intra_op_threads=1, max_batch=2))
        await engine.start()
        load = engine._load_predictor

        def slow_load(target):
            loading.set()
            time.sleep(0.3)  # stop() arrives while the new model is still being loaded
            return load(target)

        monkeypatch.setattr(engine, "_load_predictor", slow_load)
        swap = asyncio.create_task(engine.swap(incoming))
        while not loading.is_set():
            await asyncio.sleep(0.01)
        await engine.stop()
        await swap
        return engine

    engine = asyncio.run(scenario())
    # Before the fix the swap installed its model after stop() and left its batcher running.
    assert engine._slot is None and not engine.ready


# --- admission by pixels ------------------------------------------------------------------------------


def test_pixel_gate_bounds_each_camera_and_the_total():
    gate = PixelGate(per_camera=100, total=250)
    with gate.hold("A", 100):
        with pytest.raises(PixelsInFlight, match="'A' already has 100 pixels"), gate.hold("A", 1):
            pass
        with gate.hold("B", 100), gate.hold("C", 50):
            assert gate.pixels_in_flight == 250
            with pytest.raises(PixelsInFlight, match="service has 250 pixels"), gate.hold("D", 1):
                pass
    assert gate.pixels_in_flight == 0
    with gate.hold("A", 1000):  # alone, one frame of any allowed size gets in
        assert gate.pixels_in_flight == 1000
    with pytest.raises(ValueError):
        PixelGate(per_camera=100, total=50)


def test_pixel_gate_refusal_is_an_overload_with_retry_after():
    assert issubclass(PixelsInFlight, QueueFull)
    assert PixelsInFlight("busy").retry_after_s >= 1


def test_engine_refuses_a_camera_over_its_queue_bound_before_tiling(bundle, monkeypatch):
    async def scenario():
        engine = InferenceEngine(
            bundle, EngineConfig(intra_op_threads=1, max_batch=4, max_wait_ms=1, max_camera_tiles=4)
        )
        await engine.start()
        runner = engine.predictor
        gate = threading.Event()
        original = runner.run_tiles
        monkeypatch.setattr(runner, "run_tiles", lambda tiles: (gate.wait(5), original(tiles))[1])
        first = asyncio.create_task(engine.infer(_frame(TILE, TILE), deadline_s=5, camera="A"))
        await asyncio.sleep(0.2)  # first is on the model
        second = asyncio.create_task(engine.infer(_frame(TILE, 3 * TILE), deadline_s=5, camera="A"))
        await asyncio.sleep(0.05)  # second's 4 tiles wait: A's queue is at its bound
        tiled: list[int] = []
        monkeypatch.setattr(runner, "tile_pixels", lambda image: tiled.append(1))
        with pytest.raises(QueueFull):
            await engine.infer(_frame(TILE, 3 * TILE), deadline_s=5, camera="A")
        gate.set()
        await asyncio.gather(first, second)
        await engine.stop()
        return tiled

    assert asyncio.run(scenario()) == []  # refused without being tiled


def test_running_a_bundle_leaves_the_callers_subnormal_floats_alone(test_bundle: Bundle) -> None:
    # The sessions flush denormals to zero on the thread that runs them; a caller's thread keeps its own rules.
    def smallest_normal_halved() -> float:
        smallest = float(np.finfo(np.float64).tiny)
        return smallest / 2.0

    assert smallest_normal_halved() > 0.0
    Predictor(test_bundle).predict(np.zeros((40, 40, 3), np.uint8))
    assert smallest_normal_halved() > 0.0
