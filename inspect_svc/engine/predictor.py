"""Run a model bundle on whole frames: normalise, tile, infer in fixed-size batches, stitch.

`Predictor` is synchronous and holds one ONNX Runtime session. The service drives it through
`DynamicBatcher` (one thread calls `run_tiles`); training's evaluation calls `predict` directly, so a
bundle is evaluated by exactly the code that serves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from inspect_svc.bundle import Bundle, BundleManifest
from inspect_svc.engine.fpenv import kept_floating_point_environment
from inspect_svc.engine.session import EngineError, create_session
from inspect_svc.engine.tiling import TilePlan, extract_tiles, make_plan, stitch_plan, tile_starts

DEFAULT_MAX_BATCH = 16


def batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes the graph is run at: powers of two below `max_batch`, and `max_batch` itself.

    Padding every batch up to one of a few sizes keeps ORT's shapes fixed: each shape is warmed once,
    and the memory arena does not grow with every new batch size.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    buckets = [1 << power for power in range(max_batch.bit_length()) if (1 << power) < max_batch]
    return [*buckets, max_batch]


def bucket_for(count: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `count` tiles."""
    for size in buckets:
        if size >= count:
            return size
    raise ValueError(f"{count} tiles exceed the largest batch {buckets[-1]}")


class Predictor:
    """One model bundle loaded into an ONNX Runtime session.

    Args:
        bundle: a verified bundle (`inspect_svc.bundle.load_bundle`).
        providers: execution providers in order of preference (see `create_session`).
        intra_op_threads: ORT threads inside one operator; None uses every CPU available.
        max_batch: the largest number of tiles given to one `session.run`.
    """

    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.bundle = bundle
        self.manifest: BundleManifest = bundle.manifest
        self.buckets = batch_buckets(max_batch)
        self.session = create_session(
            bundle.onnx_path, providers=providers, intra_op_threads=intra_op_threads
        )
        self._check_graph_signature()
        # (pixel / 255 - mean) / std folded into one multiply-add per channel: pixel * scale + offset.
        mean = np.asarray(self.manifest.mean, dtype=np.float64)
        std = np.asarray(self.manifest.std, dtype=np.float64)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, 3, 1, 1)
        self._offset = (-mean / std).astype(np.float32).reshape(1, 3, 1, 1)

    @property
    def version(self) -> str:
        return self.manifest.model_version

    @property
    def tile(self) -> int:
        return self.manifest.tiling.tile

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def tile_count(self, height: int, width: int) -> int:
        """How many tiles a `height` x `width` frame is cut into (nothing is allocated)."""
        overlap = self.manifest.tiling.overlap
        return len(tile_starts(height, self.tile, overlap)) * len(tile_starts(width, self.tile, overlap))

    def tile_pixels(self, image_rgb: np.ndarray) -> tuple[np.ndarray, TilePlan]:
        """Cut a uint8 RGB [H, W, 3] frame into raw uint8 tiles [n, 3, T, T], not yet normalised.

        Raw tiles are a quarter of the size of float ones; `run_tiles` normalises them one batch at a
        time, so a 12-megapixel frame never needs a float copy of all its tiles at once.
        """
        _check_image(image_rgb)
        height, width = image_rgb.shape[:2]
        plan = make_plan(height, width, self.tile, self.manifest.tiling.overlap)
        return extract_tiles(image_rgb.transpose(2, 0, 1), plan.boxes, self.tile), plan

    def normalise(self, tiles_uint8: np.ndarray) -> np.ndarray:
        """uint8 tiles [n, 3, T, T] -> float32: pixel / 255, then (x - mean) / std per channel."""
        normalised = np.empty(tiles_uint8.shape, dtype=np.float32)
        np.multiply(tiles_uint8, self._scale, out=normalised)
        normalised += self._offset
        return normalised

    def preprocess(self, image_rgb: np.ndarray) -> tuple[np.ndarray, TilePlan]:
        """Normalise and tile a frame: float32 tiles [n, 3, T, T] and the plan to stitch them back."""
        tiles, plan = self.tile_pixels(image_rgb)
        return self.normalise(tiles), plan

    def run_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Probabilities [n, T, T] for tiles [n, 3, T, T], in batches padded to the bucket sizes.

        Args:
            tiles: normalised float32 tiles (`preprocess`), or raw uint8 tiles (`tile_pixels`), which
                are normalised here batch by batch.
        """
        expected = (3, self.tile, self.tile)
        if tiles.ndim != 4 or tiles.shape[1:] != expected:
            raise ValueError(
                f"expected tiles of shape [n, {expected[0]}, {expected[1]}, {expected[2]}], got {tiles.shape}"
            )
        if tiles.dtype not in (np.uint8, np.float32):
            raise ValueError(f"expected uint8 or float32 tiles, got {tiles.dtype}")
        probs = np.empty((len(tiles), self.tile, self.tile), dtype=np.float32)
        for start in range(0, len(tiles), self.max_batch):
            chunk = tiles[start : start + self.max_batch]
            if chunk.dtype == np.uint8:
                chunk = self.normalise(chunk)
            probs[start : start + len(chunk)] = self._run_padded(chunk)
        return probs

    def postprocess(self, tile_probs: np.ndarray, plan: TilePlan) -> np.ndarray:
        """Stitch per-tile probabilities into the frame's [H, W] float32 map."""
        return stitch_plan(tile_probs, plan)

    def predict(self, image_rgb: np.ndarray) -> np.ndarray:
        """Defect probability per pixel, float32 [H, W], at the input's own resolution."""
        tiles, plan = self.tile_pixels(image_rgb)
        return self.postprocess(self.run_tiles(tiles), plan)

    def warmup(self, batch_sizes: Iterable[int] | None = None) -> None:
        """Run every batch shape, twice, then one whole frame (tiling, normalising, stitching), so no
        request pays for first-run allocations or autotuning.

        Measured on the CPU with the demo model: a single pass left the first real frame at ~1.8x the
        steady latency (the allocator only settles once every shape has run after the others; the
        largest intermediate, the anomaly branch's distance matrix, is ~30 MB per tile), a second pass
        brings it to the steady one for ~0.2 s more start-up. The input is a fixed noise texture:
        constant tiles take other paths through the graph (144 ms per batch of 8 zero tiles against
        73 ms for textured ones) and do not warm what real frames use.
        """
        sizes = list(batch_sizes or self.buckets)
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 256, size=(max(sizes), 3, self.tile, self.tile), dtype=np.uint8)
        for _ in range(2):
            for size in sizes:
                self._run_padded(self.normalise(noise[:size]))
        side = self.tile + self.tile // 2  # 2×2 overlapping tiles: every step of a real frame
        self.predict(np.ascontiguousarray(noise[0, :, :side, :side].transpose(1, 2, 0)))

    def _run_padded(self, chunk: np.ndarray) -> np.ndarray:
        count = len(chunk)
        size = bucket_for(count, self.buckets)
        batch = np.ascontiguousarray(chunk, dtype=np.float32)
        if size != count:
            batch = np.concatenate([batch, np.zeros((size - count, *batch.shape[1:]), dtype=np.float32)])
        with kept_floating_point_environment():
            (output,) = self.session.run([self.manifest.output_name], {self.manifest.input_name: batch})
        probabilities: np.ndarray = output[:count, 0]
        return probabilities

    def _check_graph_signature(self) -> None:
        """Refuse a graph whose input/output names or tile size disagree with its manifest."""
        inputs = {node.name: node for node in self.session.get_inputs()}
        outputs = {node.name for node in self.session.get_outputs()}
        name_in, name_out = self.manifest.input_name, self.manifest.output_name
        if name_in not in inputs or name_out not in outputs:
            raise EngineError(
                f"graph of model {self.version} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                f"its manifest names input {name_in!r} and output {name_out!r}"
            )
        shape = inputs[name_in].shape
        fixed = [dim for dim in shape[1:] if isinstance(dim, int)]
        if len(shape) != 4 or fixed not in ([], [3, self.tile, self.tile]):
            raise EngineError(
                f"graph input {name_in!r} of model {self.version} has shape {shape}; "
                f"expected [N, 3, {self.tile}, {self.tile}]"
            )


def _check_image(image_rgb: np.ndarray) -> None:
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image_rgb.dtype} {image_rgb.shape}")
