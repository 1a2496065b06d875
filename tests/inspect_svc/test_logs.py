"""Service logs: JSON lines carry each inspection's ids and timings as fields."""

from __future__ import annotations

import json
import logging
import logging.config

from inspect_svc.logs import RESULT_FIELDS, JsonFormatter, logging_config
from tests.conftest import png_bytes


def test_json_formatter_writes_one_object_with_the_result_fields() -> None:
    record = logging.LogRecord(
        "inspect_svc.service", logging.INFO, __file__, 1, "inspected %s", ("f-1",), None
    )
    record.camera_id, record.frame_id, record.total_ms = "cam-1", "f-1", 12.5
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "inspected f-1" and entry["level"] == "info"
    assert (entry["camera_id"], entry["frame_id"], entry["total_ms"]) == ("cam-1", "f-1", 12.5)
    assert entry["ts"].endswith("+00:00")


def test_both_formats_are_valid_logging_configurations() -> None:
    names = list(logging_config("text")["loggers"])
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
        )
        for name in names
    }
    try:
        for log_format in ("text", "json"):
            logging.config.dictConfig(logging_config(log_format))  # raises on a malformed configuration
            assert isinstance(logging.getLogger("inspect_svc").handlers[0], logging.StreamHandler)
    finally:  # leave the other tests' log capture as it was
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_every_inspection_logs_its_ids_and_timings(client, camera_key, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="inspect_svc.service"):
        response = client.post(
            "/inspect",
            params={"frame_id": "logged"},
            content=png_bytes(seed=5),
            headers={**camera_key, "content-type": "image/png"},
        )
    assert response.status_code == 200
    [record] = [r for r in caplog.records if getattr(r, "frame_id", None) == "logged"]
    fields = {name: getattr(record, name) for name in RESULT_FIELDS}
    assert fields["inspection_id"] == response.json()["id"] and fields["model_version"] == "test-1"
    assert fields["total_ms"] >= fields["inference_ms"] >= 0
