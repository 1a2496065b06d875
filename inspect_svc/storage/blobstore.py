"""Content-addressed file store for images, maps, masks and model bundles.

A blob's key is `ab/cd/<sha256><suffix>`: equal content shares one file, and a key names its content, so
a row can point to a blob as soon as `put` returns. Writes go to a temporary file that is fsynced and
renamed into place, so a crash never leaves a half-written blob under a real key.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from inspect_svc.bundle import sha256_file

KEY_PATTERN = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,5})?$")
STREAM_CHUNK_BYTES = 1 << 16


class BlobNotFound(LookupError):
    """No blob under that key."""


class BlobStoreUnavailable(RuntimeError):
    """The blob store cannot be reached or refused a write; nothing was acknowledged, so a retry is safe."""


class BlobStorage(Protocol):
    """What the service needs of a blob store: the file store here, or the S3 store (storage/s3blobs.py)."""

    def put(self, data: bytes, *, suffix: str = "") -> str: ...

    def put_file(self, path: Path, *, suffix: str = "") -> str: ...

    def read(self, key: str) -> bytes: ...

    def stream(self, key: str) -> Iterator[bytes]: ...

    def download(self, key: str, target: Path) -> None: ...


def content_key(digest: str, suffix: str = "") -> str:
    """The key of content whose sha256 is `digest`: `ab/cd/<digest><suffix>`, the same in every store."""
    if suffix and not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
        raise ValueError(f"blob suffix must look like '.png', got {suffix!r}")
    return f"{digest[:2]}/{digest[2:4]}/{digest}{suffix}"


def check_key(key: str) -> str:
    """`key` when it is well formed.

    Raises:
        BlobNotFound: a malformed key names no blob (and must never reach a path or an object name).
    """
    if not KEY_PATTERN.fullmatch(key):
        raise BlobNotFound(f"malformed blob key {key!r}")
    return key


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
        key = content_key(hashlib.sha256(data).hexdigest(), suffix)
        target = self.root / key
        if target.exists():
            return key
        _write_durably(target, lambda stream: stream.write(data))
        return key

    def put_file(self, path: Path, *, suffix: str = "") -> str:
        """Store the file at `path` (a model bundle: too large to hold in memory twice) and return its key."""
        key = content_key(sha256_file(path), suffix)
        target = self.root / key
        if not target.exists():
            with open(path, "rb") as source:
                _write_durably(target, lambda stream: shutil.copyfileobj(source, stream, STREAM_CHUNK_BYTES))
        return key

    def path(self, key: str) -> Path:
        """The file holding `key`.

        Raises:
            BlobNotFound: the key is malformed or nothing is stored under it.
        """
        target = self.root / check_key(key)
        if not target.is_file():
            raise BlobNotFound(f"no blob {key}")
        return target

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def stream(self, key: str) -> Iterator[bytes]:
        """The blob in chunks; `BlobNotFound` is raised here, before the first chunk is asked for."""
        return _chunks(self.path(key))

    def download(self, key: str, target: Path) -> None:
        shutil.copyfile(self.path(key), target)


def _write_durably(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a fsynced temporary file renamed into place, so no reader sees half a blob."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(STREAM_CHUNK_BYTES):
            yield chunk


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
