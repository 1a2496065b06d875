"""The retraining loop's first step: operators' reviews -> a labeled set that `finetune` reads.

The export itself lives in `inspect_svc.review_export` (the dashboard offers the same set as a zip);
this module points it at a database and a blob store and reports problems as `UserError`s.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from inspect_svc.review_export import ExportError, Manifest, export_to_directory
from inspect_svc.settings import Settings, get_settings
from training.errors import UserError


def export_reviewed_dataset(
    db_url: str, out: Path, *, blob_root: Path | None = None, data_dir: Path | None = None
) -> Manifest:
    """Write every reviewed inspection to `out` in the labeled layout (images/, masks/, manifest.json).

    Args:
        db_url: the service's database (`sqlite:///…` or `postgresql://…`).
        out: a new or empty directory.
        blob_root: the service's blob store.
        data_dir: the service's data directory, when `blob_root` is not given; without either, the
            one its settings (INSPECT_DATA_DIR) name.

    Raises:
        UserError: a bad database URL or service setting, an unreadable database or blob store, or a
            non-empty `out`.
    """
    try:
        database_url = Settings(database_url=db_url).database_url  # the service's URL rules, one place
        if blob_root is None:
            blob_root = (Settings(data_dir=data_dir) if data_dir is not None else get_settings()).blob_dir
    except ValidationError as error:  # a bad --db, or a bad INSPECT_* variable in the environment
        raise UserError(_first_problem(error)) from None
    try:
        return export_to_directory(database_url, blob_root, out)
    except ExportError as error:
        raise UserError(str(error)) from None


def _first_problem(error: ValidationError) -> str:
    """One line out of a pydantic ValidationError (which lists every problem over several lines)."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    where = "--db" if field == "database_url" else f"service settings: {field}"
    return f"{where}: {first['msg']}"
