"""torch.distributed plumbing for runs launched by `torchrun` (one process per GPU).

Without torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) everything degrades to a single
process and the reductions below are identities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.errors import UserError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes checkpoints."""
        return self.rank == 0


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """`cpu`, `cuda` or `auto` (CUDA when present) → the device of this process."""
    if choice not in {"cpu", "cuda", "auto"}:
        raise UserError(f"--device must be cpu, cuda or auto, not {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def torch_device(choice: str) -> torch.device:
    """A config's device: `auto`, `cpu` and `cuda` as `resolve_device` reads them, or an explicit `cuda:N`."""
    return resolve_device(choice) if choice in {"cpu", "cuda", "auto"} else torch.device(choice)


def init_distributed(device_choice: str) -> DistributedContext:
    """Join the process group when launched by torchrun; otherwise describe a single process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext(rank=0, world_size=1, local_rank=0, device=resolve_device(device_choice))
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            device_id=device if device.type == "cuda" else None,
        )
    return DistributedContext(rank=rank, world_size=size, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over processes (no gradient); the tensor itself in a single process."""
    if world_size() == 1:
        return tensor
    reduced = tensor.clone()
    dist.all_reduce(reduced)
    return reduced / world_size()


def differentiable_all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes that gradients flow back through (each process gets the summed gradient)."""
    if world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor, op=dist.ReduceOp.SUM)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
