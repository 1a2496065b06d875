"""Raw engine throughput: images (tiles) per second through ONNX Runtime, without HTTP or batching.

Reports numbers, asserts nothing. Usage:

    python -m benchmarks.speed.engine --bundle BUNDLE_DIR --batch 1,16,64 --seconds 10
    python -m benchmarks.speed.engine --bundle BUNDLE_DIR \
        --providers CUDAExecutionProvider,CPUExecutionProvider --batch 64 --io-binding

Each timed run feeds one batch of tiles of the bundle's input size. With `--io-binding` on CUDA the
input is copied to the GPU once and the output stays there, which measures the model alone; without
it every run includes the host-to-device copy of the input and the copy of the result back, as the
service pays.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from inspect_svc.bundle import BundleError, load_bundle
from inspect_svc.engine.predictor import Predictor
from inspect_svc.engine.session import EngineError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory or .zip")
    parser.add_argument("--providers", default=None, help="comma-separated ORT providers, best first")
    parser.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed duration per batch size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before each measurement")
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: all CPUs)")
    parser.add_argument(
        "--io-binding", action="store_true", help="keep input and output on the device (CUDA)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per batch size")
    return parser.parse_args(argv)


def run_plain(predictor: Predictor, batch: np.ndarray) -> None:
    predictor.session.run([predictor.manifest.output_name], {predictor.manifest.input_name: batch})


def make_bound_runner(predictor: Predictor, batch: np.ndarray):
    """A zero-argument callable running `batch` with input and output bound on the CUDA device."""
    import onnxruntime as ort

    session = predictor.session
    device_input = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(predictor.manifest.input_name, device_input)
    binding.bind_output(predictor.manifest.output_name, "cuda", 0)

    def run() -> None:
        session.run_with_iobinding(binding)

    return run


def measure(run, seconds: float, warmup: int) -> tuple[int, float]:
    """(runs, elapsed seconds) of calling `run` repeatedly for about `seconds`."""
    for _ in range(warmup):
        run()
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        run()
        runs += 1
    return runs, elapsed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    providers = args.providers.split(",") if args.providers else None
    batch_sizes = [int(size) for size in args.batch.split(",")]
    try:
        bundle = load_bundle(args.bundle)
        predictor = Predictor(
            bundle, providers=providers, intra_op_threads=args.threads, max_batch=max(batch_sizes)
        )
    except (BundleError, EngineError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    on_cuda = predictor.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    if args.io_binding and not on_cuda:
        print("error: --io-binding needs the CUDA or TensorRT provider", file=sys.stderr)
        return 1
    tile = predictor.tile
    print(f"model {predictor.version} ({bundle.manifest.backbone}, tile {tile}) on {predictor.providers}")
    rng = np.random.default_rng(0)
    for size in batch_sizes:
        batch = rng.standard_normal((size, 3, tile, tile), dtype=np.float32)
        if args.io_binding:
            run = make_bound_runner(predictor, batch)
        else:

            def run(batch=batch) -> None:
                run_plain(predictor, batch)

        runs, elapsed = measure(run, args.seconds, args.warmup)
        result = {
            "batch": size,
            "images_per_s": round(runs * size / elapsed, 1),
            "ms_per_batch": round(elapsed / runs * 1000.0, 3),
            "io_binding": args.io_binding,
            "providers": predictor.providers,
        }
        if args.json:
            print(json.dumps(result))
        else:
            rate, latency = result["images_per_s"], result["ms_per_batch"]
            print(f"batch {size:4d}: {rate:10.1f} images/s  {latency:8.3f} ms/batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
