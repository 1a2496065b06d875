"""Log configuration of the service: plain text for a terminal, JSON lines for a log pipeline.

Each inspection logs one record with its identifiers and timings as fields (`RESULT_FIELDS`), so a
log search can follow a frame from the camera to the model version and the time it spent queued.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Literal

LogFormat = Literal["text", "json"]

RESULT_FIELDS = (
    "inspection_id",
    "camera_id",
    "frame_id",
    "line",
    "model_version",
    "verdict",
    "score",
    "decode_ms",
    "queue_ms",
    "inference_ms",
    "total_ms",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any of `RESULT_FIELDS` it carries."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in RESULT_FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(log_format: LogFormat, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the service and uvicorn (pass it as uvicorn's `log_config`)."""
    formatter = (
        {"()": JsonFormatter}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    loggers = {
        name: {"handlers": ["default"], "level": level, "propagate": False}
        for name in ("inspect_svc", "uvicorn", "uvicorn.error", "uvicorn.access")
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": loggers,
    }
