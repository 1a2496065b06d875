"""Throughput of the pretraining step on one GPU: end-to-end from JPEG files, model only, data only.

Prints ms/step, images/s and model FLOP utilization (FLOPs of one step counted with
`torch.utils.flop_counter`, over the GPU's peak). Without --data it writes a folder of JPEGs first.

    python -m benchmarks.speed.pretrain --arch vit_small_patch16_224 --batch-size 64 \
        --global-size 224 --local-size 224 --local-crops 4 --points 2 --compile
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from training.distributed import DistributedContext, resolve_device
from training.models.self_distillation import compile_blocks
from training.pretrain import Trainer, _batches
from training.pretrain_config import PretrainConfig
from training.pretrain_step import train_step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--objective", default="densedino", choices=["densedino", "densedino-crr", "dino"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--global-crops", type=int, default=2)
    parser.add_argument("--local-crops", type=int, default=4)
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=224)
    parser.add_argument("--points", type=int, default=2)
    parser.add_argument("--prototypes", type=int, default=65536)
    parser.add_argument(
        "--point-prototypes", type=int, default=None, help="point head prototypes (default: --prototypes)"
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed steps first (compilation, cudnn tuning)"
    )
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--reference-attention",
        default="split",
        choices=["split", "masked"],
        help="how blocks keep reference tokens apart (same maths; masked disables flash attention)",
    )
    parser.add_argument(
        "--decode",
        default="workers",
        choices=["workers", "device"],
        help="decode JPEGs and cut views in the data workers (OpenCV) or on the GPU (nvJPEG)",
    )
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--data", type=Path, help="folder of images; generated when omitted")
    parser.add_argument("--num-images", type=int, default=1024, help="images to generate without --data")
    parser.add_argument("--image-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="GPU peak (bf16 dense) for MFU")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also profile 5 model-only steps: print the top operators, write a trace to DIR",
    )
    return parser.parse_args(argv)


def write_jpegs(root: Path, count: int, height: int, width: int) -> Path:
    """Smooth random textures as JPEG (quality 90), so decoding costs what real photos cost."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        small = (rng.random((height // 16, width // 16, 3)) * 255).astype(np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(0, 24, size=image.shape, dtype=np.uint8)
        cv2.imwrite(str(root / f"img_{index:05d}.jpg"), cv2.add(image, noise), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return root


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_step_flops(trainer: Trainer, batch) -> float:
    with FlopCounterMode(display=False) as counter:
        train_step(trainer.parts, batch, trainer.settings(0))
    return float(counter.get_total_flops())


def time_steps(trainer: Trainer, batches, steps: int, device: torch.device) -> float:
    """Seconds per step over `steps` steps drawn from `batches`."""
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        train_step(trainer.parts, next(batches), trainer.settings(step))
    synchronize(device)
    return (time.perf_counter() - start) / steps


def time_data(batches, steps: int, device: torch.device) -> float:
    """Seconds per batch delivered on the device (with --decode device: decoded and cut there)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches).to(device)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def sampler_start(trainer: Trainer, epoch: int) -> int:
    return epoch * trainer.sampler.batches_per_epoch


def profile_steps(trainer: Trainer, batch, out: Path, device: torch.device) -> None:
    """Where a step's time goes: the operators with the most device (or CPU) time, and a trace file."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as profiler:
        time_steps(trainer, iter(lambda: batch, None), 5, device)
    sort_key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    print(profiler.key_averages().table(sort_by=sort_key, row_limit=25, max_name_column_width=60))
    out.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(out / "pretrain_step_trace.json"))


def report(name: str, seconds: float, batch_size: int, flops: float, peak_tflops: float) -> None:
    mfu = flops / seconds / (peak_tflops * 1e12) if flops else float("nan")
    print(f"{name:<22} {seconds * 1e3:8.1f} ms/step {batch_size / seconds:9.1f} images/s   MFU {mfu:6.1%}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench_pretrain_"))
    data = args.data or write_jpegs(tmp / "images", args.num_images, *args.image_size)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = PretrainConfig(
        data=data,
        out=tmp / "run",
        arch=args.arch,
        objective=args.objective,
        batch_size=args.batch_size,
        global_crops=args.global_crops,
        local_crops=args.local_crops,
        global_size=args.global_size,
        local_size=args.local_size,
        points=args.points,
        num_prototypes=args.prototypes,
        point_prototypes=args.point_prototypes,
        workers=args.workers,
        steps=10**6,
        device=args.device,
        progress=False,
        reference_attention=args.reference_attention,
        decode=args.decode,
    )
    config.out.mkdir(parents=True)
    trainer = Trainer(config, DistributedContext(rank=0, world_size=1, local_rank=0, device=device))
    fixed = next(_batches(trainer.loader, trainer.sampler, 0)).to(device)
    flops = count_step_flops(trainer, fixed)
    if args.compile:
        compile_blocks(trainer.student_net)
        compile_blocks(trainer.teacher_net)
    print(
        f"{args.arch} {args.objective}: batch {args.batch_size}, {args.global_crops}×{args.global_size} + "
        f"{args.local_crops}×{args.local_size} px, k={args.points}, compile={args.compile}, "
        f"reference attention={args.reference_attention}, decode={args.decode}, device={device}"
    )
    print(f"FLOPs per step {flops / 1e12:.2f} TFLOP ({flops / args.batch_size / 1e9:.0f} GFLOP per image)")

    time_steps(trainer, iter(lambda: fixed, None), args.warmup, device)
    report(
        "model only (no data)",
        time_steps(trainer, iter(lambda: fixed, None), args.steps, device),
        args.batch_size,
        flops,
        args.peak_tflops,
    )
    # Fresh batch streams (starting at later epochs): the loader's prefetch queue starts empty, so the
    # data-only rate is what the workers sustain, not what they had buffered.
    data_steps = max(args.steps, 4 * args.workers)
    report(
        "data only",
        time_data(_batches(trainer.loader, trainer.sampler, sampler_start(trainer, 1)), data_steps, device),
        args.batch_size,
        0.0,
        args.peak_tflops,
    )
    batches = _batches(trainer.loader, trainer.sampler, sampler_start(trainer, 2))
    time_steps(trainer, batches, 3, device)
    report(
        "end to end (JPEGs)",
        time_steps(trainer, batches, args.steps, device),
        args.batch_size,
        flops,
        args.peak_tflops,
    )
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    if args.profile:
        profile_steps(trainer, fixed, args.profile, device)


if __name__ == "__main__":
    main()
