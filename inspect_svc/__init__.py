"""The inspection service: per-pixel defect maps on ONNX Runtime, logged to SQL, reviewed by operators."""

__version__ = "0.1.0"
