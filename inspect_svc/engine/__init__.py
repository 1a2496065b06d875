"""The inference engine: ONNX Runtime sessions, tiling, dynamic batching and post-processing."""

from inspect_svc.engine.batcher import (
    BatcherStats,
    BatcherStopped,
    DeadlineExceeded,
    DynamicBatcher,
    QueueFull,
)
from inspect_svc.engine.inference import EngineConfig, EngineNotReady, InferenceEngine, InferenceOutput
from inspect_svc.engine.predictor import Predictor
from inspect_svc.engine.regions import Region, Verdict, extract_regions, summarize
from inspect_svc.engine.session import EngineError, create_session

__all__ = [
    "BatcherStats",
    "BatcherStopped",
    "DeadlineExceeded",
    "DynamicBatcher",
    "EngineConfig",
    "EngineError",
    "EngineNotReady",
    "InferenceEngine",
    "InferenceOutput",
    "Predictor",
    "QueueFull",
    "Region",
    "Verdict",
    "create_session",
    "extract_regions",
    "summarize",
]
