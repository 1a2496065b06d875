"""Content-addressed file store for images, maps and masks.

A blob's key is `ab/cd/<sha256><suffix>`: equal content shares one file, and a key names its content, so
a row can point to a blob as soon as `put` returns. Writes go to a temporary file that is fsynced and
renamed into place, so a crash never leaves a half-written blob under a real key.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

KEY_PATTERN = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,5})?$")


class BlobNotFound(LookupError):
    """No blob under that key."""


class BlobStore:
    """Blobs under one root directory.

    Args:
        root: directory that holds the fan-out folders; created when missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, *, suffix: str = "") -> str:
        """Store `data` durably and return its key; storing the same bytes twice is a cheap no-op."""
        if suffix and not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
            raise ValueError(f"blob suffix must look like '.png', got {suffix!r}")
        digest = hashlib.sha256(data).hexdigest()
        key = f"{digest[:2]}/{digest[2:4]}/{digest}{suffix}"
        target = self.root / key
        if target.exists():
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)
        return key

    def path(self, key: str) -> Path:
        """The file holding `key`.

        Raises:
            BlobNotFound: the key is malformed or nothing is stored under it.
        """
        if not KEY_PATTERN.fullmatch(key):
            raise BlobNotFound(f"malformed blob key {key!r}")
        target = self.root / key
        if not target.is_file():
            raise BlobNotFound(f"no blob {key}")
        return target

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
