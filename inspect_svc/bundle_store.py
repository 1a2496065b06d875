"""Model bundles in the blob store, so a replica loads any registered version without a shared volume.

A bundle is published as a zip archive of its two files, built byte for byte the same from the same
files (fixed timestamps, fixed order), so publishing one bundle from several replicas yields one key.
A replica that lacks a version fetches the archive, checks its sha256 against the content-addressed
key, extracts it beside its other bundles and loads it (which checks the graph against the manifest).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from inspect_svc.bundle import MANIFEST_NAME, ONNX_NAME, Bundle, BundleError, load_bundle, sha256_file
from inspect_svc.storage.blobstore import BlobNotFound, BlobStorage, check_key

ARCHIVE_SUFFIX = ".zip"


class BundleNotStored(BundleError):
    """The blob store has no archive under the key (a file store that is not shared between machines)."""


# Zip cannot store dates before 1980; any fixed date makes the archive depend on the content alone.
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def publish_bundle(bundle: Bundle, blobs: BlobStorage, *, workdir: Path) -> str:
    """Store `bundle` as an archive in `blobs` and return its key.

    Raises:
        BlobStoreUnavailable: the store cannot take it now.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    handle, archive_name = tempfile.mkstemp(dir=workdir, prefix=".publish-", suffix=ARCHIVE_SUFFIX)
    os.close(handle)
    archive = Path(archive_name)
    try:
        _write_archive(bundle, archive)
        return blobs.put_file(archive, suffix=ARCHIVE_SUFFIX)
    finally:
        archive.unlink(missing_ok=True)


def fetch_bundle(key: str, blobs: BlobStorage, *, extract_root: Path, version: str) -> Bundle:
    """The bundle stored under `key`, extracted under `extract_root` (once: a later call reuses it).

    Raises:
        BundleError: the archive is missing, differs from its key, or holds another version.
        BlobStoreUnavailable: the store cannot be reached.
    """
    try:
        digest = Path(check_key(key)).name.removesuffix(ARCHIVE_SUFFIX)
    except BlobNotFound:
        raise BundleError(f"{key!r} is not a bundle key") from None
    target = extract_root / f"{version}-{digest[:16]}"
    if not (target / MANIFEST_NAME).is_file():
        _download_and_extract(key, digest, blobs, target)
    bundle = load_bundle(target)
    if bundle.manifest.model_version != version:
        raise BundleError(f"bundle {key} holds version {bundle.manifest.model_version!r}, not {version!r}")
    return bundle


def _write_archive(bundle: Bundle, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as output:
        for name in (MANIFEST_NAME, ONNX_NAME):
            member = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            member.external_attr = 0o644 << 16
            with open(bundle.root / name, "rb") as source, output.open(member, "w") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def _download_and_extract(key: str, digest: str, blobs: BlobStorage, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".fetch-"))
    try:
        archive = staging / "bundle.zip"
        try:
            blobs.download(key, archive)
        except BlobNotFound:
            raise BundleNotStored(f"bundle archive {key} is not in the blob store") from None
        actual = sha256_file(archive)
        if actual != digest:
            raise BundleError(f"bundle archive {key} arrived with sha256 {actual[:12]}…: corrupt, not loaded")
        files = staging / "files"
        with zipfile.ZipFile(archive) as source:
            if sorted(source.namelist()) != sorted((MANIFEST_NAME, ONNX_NAME)):
                raise BundleError(f"bundle archive {key} holds {source.namelist()}, not a bundle")
            source.extractall(files)
        # Renamed into place whole: a crash mid-extraction leaves only a staging folder behind.
        shutil.rmtree(target, ignore_errors=True)
        os.replace(files, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
