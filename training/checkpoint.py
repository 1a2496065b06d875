"""Full training state for exact resumption: modules, optimizer, step and every random generator.

Data position needs no extra state: the sampler order and each view's randomness are functions of
(seed, epoch, index), so the step count fixes where the data stream continues.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.errors import UserError

CHECKPOINT_FILE = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path,
    *,
    step: int,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
) -> None:
    """Write the training state atomically (a crash while saving keeps the previous checkpoint)."""
    payload = {
        "step": step,
        "modules": {name: module.state_dict() for name, module in modules.items()},
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "config": config,
    }
    tmp = path.with_suffix(".pt.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint at {path}")
    try:
        # The payload holds RNG states (Python tuples, numpy arrays), hence weights_only=False; the
        # file is one this product wrote into the run folder.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise UserError(f"{path} is not a readable checkpoint ({type(error).__name__})") from None


def restore_checkpoint(
    payload: dict[str, Any], *, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer
) -> int:
    """Load a checkpoint read by `read_checkpoint` into live objects; returns the step to continue at."""
    for name, module in modules.items():
        module.load_state_dict(payload["modules"][name])
    optimizer.load_state_dict(payload["optimizer"])
    restore_rng_state(payload["rng"])
    return int(payload["step"])
