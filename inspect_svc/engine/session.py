"""ONNX Runtime session creation with explicit threads and execution providers.

ORT's defaults size its thread pool from the host's cores and spin while idle; inside a container
limited to a few CPUs that oversubscribes and throttles, so threads are set from the CPUs this
process may actually use, and spinning is off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnxruntime as ort

from inspect_svc.engine.fpenv import kept_floating_point_environment

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
# Used when settings name no providers: the fastest present one first, the CPU always last.
# TensorRT is left out of the default because building its engines takes minutes; name it to use it.
DEFAULT_PROVIDER_PREFERENCE = ("CUDAExecutionProvider", CPU_PROVIDER)


class EngineError(RuntimeError):
    """The inference engine cannot load or run a model."""


def available_cpus() -> int:
    """CPUs this process may run on (respects container cpusets, unlike os.cpu_count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not available on macOS
        return max(os.cpu_count() or 1, 1)


def choose_providers(requested: Sequence[str] | None) -> list[str]:
    """The requested providers this ONNX Runtime build has, in order, with the CPU as the fallback.

    Raises:
        EngineError: a provider name ORT does not know at all (a typo in the settings).
    """
    available = ort.get_available_providers()
    known = set(ort.get_all_providers())
    wanted = list(requested) if requested else list(DEFAULT_PROVIDER_PREFERENCE)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise EngineError(f"unknown execution provider(s) {unknown}; known: {sorted(known)}")
    chosen = [name for name in wanted if name in available]
    missing = [name for name in wanted if name not in available]
    if missing and requested:
        logger.warning("execution providers %s are not in this onnxruntime build; skipped", missing)
    if CPU_PROVIDER not in chosen:
        chosen.append(CPU_PROVIDER)
    return chosen


def session_options(intra_op_threads: int | None, inter_op_threads: int = 1) -> ort.SessionOptions:
    """Options with explicit thread pools, no spinning and all graph optimizations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or available_cpus()
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the CPUs that request handling and decoding need between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Flush denormal floats to zero on the CPU: far-from-threshold sigmoids and distances otherwise
    # take the slow microcode path (measured: -7 % time per batch on the demo model).
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


def create_session(
    onnx_path: Path | str,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int = 1,
    provider_options: Mapping[str, Mapping[str, str]] | None = None,
) -> ort.InferenceSession:
    """Open an ONNX graph for inference.

    Args:
        onnx_path: the `.onnx` file.
        providers: execution providers in order of preference; unavailable ones are skipped and the
            CPU provider is always appended as the fallback. None picks CUDA when present.
        intra_op_threads: threads inside one operator; None uses every CPU this process may use.
        inter_op_threads: threads across independent operators (1: the graph runs sequentially).
        provider_options: per-provider options, e.g. {"CUDAExecutionProvider": {"device_id": "0"}}.

    Raises:
        EngineError: the file is missing or is not a loadable ONNX graph.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise EngineError(f"ONNX model {path} does not exist")
    chosen = choose_providers(providers)
    options_per_provider = [dict((provider_options or {}).get(name, {})) for name in chosen]
    options = session_options(intra_op_threads, inter_op_threads)
    try:
        with kept_floating_point_environment():  # creating the session sets flush-to-zero as well
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=chosen, provider_options=options_per_provider
            )
    except Exception as error:  # ORT raises several pybind types (InvalidProtobuf, Fail, …)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EngineError(f"cannot load ONNX model {path}: {message}") from None
    logger.info(
        "ONNX Runtime session for %s on %s (intra-op threads %d, inter-op threads %d)",
        path.name,
        session.get_providers(),
        options.intra_op_num_threads,
        options.inter_op_num_threads,
    )
    return session
