"""One way to answer an HTTP request with a stored blob, whichever store holds it.

The file store answers with the file itself (range requests, sendfile); the S3 store streams the
object's body through, chunk by chunk, so a large frame is never held in memory whole.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException, status
from fastapi.responses import FileResponse, Response, StreamingResponse

from inspect_svc.storage.blobstore import BlobNotFound, BlobStorage, BlobStore


def blob_response(
    blobs: BlobStorage, key: str, media_type: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    """The blob under `key` as a response; blocking (the S3 store asks for the object): call in a thread.

    Raises:
        HTTPException: 404 when the blob is missing (pruned by retention, or never stored).
        BlobStoreUnavailable: the object store cannot be reached (the app answers 503).
    """
    try:
        if isinstance(blobs, BlobStore):
            return FileResponse(blobs.path(key), media_type=media_type, headers=headers)
        return StreamingResponse(blobs.stream(key), media_type=media_type, headers=headers)
    except BlobNotFound:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "the stored file for this inspection is missing"
        ) from None
