"""The blob store the settings choose: files under DATA_DIR/blobs, or an S3 bucket shared by replicas."""

from __future__ import annotations

import logging

from inspect_svc.settings import Settings
from inspect_svc.storage.blobstore import BlobStorage, BlobStore, BlobStoreUnavailable

log = logging.getLogger(__name__)


def open_blob_store(settings: Settings) -> BlobStorage:
    """The blob store the settings choose: files under DATA_DIR/blobs, or an S3 bucket shared by replicas."""
    if settings.blob_store == "s3":
        # Imported here: boto3 is loaded only by services that use it.
        from inspect_svc.storage.s3blobs import S3BlobStore

        store = S3BlobStore.from_settings(settings)
        try:
            store.ensure_bucket()
        except BlobStoreUnavailable as error:  # frames get 503 until it is reachable; start anyway
            log.warning("object store not ready at start-up: %s", error)
        return store
    return BlobStore(settings.blob_dir)
