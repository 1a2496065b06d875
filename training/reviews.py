"""The retraining loop's first step: operators' reviews -> a labeled set that `finetune` reads.

The export itself lives in `inspect_svc.review_export` (the dashboard offers the same set as a zip);
this module points it at a database and a blob store and reports problems as `UserError`s.
"""

from __future__ import annotations

from pathlib import Path

from inspect_svc.review_export import ExportError, Manifest, export_to_directory
from inspect_svc.settings import Settings, get_settings
from training.errors import UserError


def export_reviewed_dataset(db_url: str, out: Path, *, blob_root: Path | None = None) -> Manifest:
    """Write every reviewed inspection to `out` in the labeled layout (images/, masks/, manifest.json).

    Args:
        db_url: the service's database (`sqlite:///…` or `postgresql://…`).
        out: a new or empty directory.
        blob_root: the service's blob store; defaults to the one its settings (INSPECT_DATA_DIR) name.

    Raises:
        UserError: a bad database URL, an unreadable database or blob store, or a non-empty `out`.
    """
    try:
        database_url = Settings(database_url=db_url).database_url  # the service's URL rules, one place
    except ValueError as error:
        raise UserError(f"--db: {error}") from None
    try:
        return export_to_directory(database_url, blob_root or get_settings().blob_dir, out)
    except ExportError as error:
        raise UserError(str(error)) from None
