"""Content-addressed blobs in an S3 bucket (AWS S3, SeaweedFS, MinIO…), shared by every replica.

Keys are those of the file store (`ab/cd/<sha256><suffix>`, under an optional prefix), so a row written
by one replica names an object every other replica can read. `put` returns only once the PUT has been
answered with success: S3 acknowledges a PUT after the object is stored durably, and the caller writes
the row that names the key only after that. Reads stream the object body in chunks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from inspect_svc.bundle import sha256_file
from inspect_svc.storage.blobstore import (
    STREAM_CHUNK_BYTES,
    BlobNotFound,
    BlobStoreUnavailable,
    check_key,
    content_key,
)

if TYPE_CHECKING:
    from inspect_svc.settings import Settings

log = logging.getLogger(__name__)

MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class S3BlobStore:
    """Blobs in `bucket` under `prefix`, through one thread-safe boto3 client.

    Args:
        client: a boto3 S3 client (see `from_settings`).
        bucket: the bucket; it must exist (`ensure_bucket` creates it for tests and first starts).
        prefix: prepended to every key, e.g. "inspect/"; empty or ending in "/".
    """

    def __init__(self, client: Any, bucket: str, *, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        if settings.s3_bucket is None:
            raise ValueError("blob_store=s3 needs s3_bucket")
        # Both or neither: without them boto3 finds credentials itself (environment, instance role).
        key_id = secret = None
        if settings.s3_access_key is not None and settings.s3_secret_key is not None:
            key_id = settings.s3_access_key.get_secret_value()
            secret = settings.s3_secret_key.get_secret_value()
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            config=Config(
                # Path-style URLs: S3-compatible servers on a plain host name have no per-bucket DNS.
                s3={"addressing_style": "path"},
                connect_timeout=settings.s3_timeout_s,
                read_timeout=settings.s3_timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
                # One pooled connection per request the service may have in flight at once.
                max_pool_connections=64,
            ),
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )
        return cls(client, settings.s3_bucket, prefix=settings.s3_prefix)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet (an existing one is left as it is)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if _error_code(error) not in MISSING_CODES:
                raise BlobStoreUnavailable(
                    f"cannot reach bucket {self.bucket!r}: {_describe(error)}"
                ) from None
        except BotoCoreError as error:
            raise BlobStoreUnavailable(f"cannot reach the object store: {_describe(error)}") from None
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as error:
            if _error_code(error) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise BlobStoreUnavailable(
                    f"cannot create bucket {self.bucket!r}: {_describe(error)}"
                ) from None

    def put(self, data: bytes, *, suffix: str = "") -> str:
        """Store `data` and return its key once the object store has acknowledged it.

        Raises:
            BlobStoreUnavailable: the store cannot be reached or refused the write.
        """
        key = content_key(hashlib.sha256(data).hexdigest(), suffix)
        # No existence check first: a PUT of the same content under its own key is idempotent, and one
        # round trip is cheaper than two.
        self._call(
            "store", key, lambda: self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)
        )
        return key

    def put_file(self, path: Path, *, suffix: str = "") -> str:
        """Upload the file at `path` (multipart when large) unless it is there already; return its key."""
        key = content_key(sha256_file(path), suffix)
        if self._exists(key):  # bundles are re-published on each activation: skip the large upload
            return key
        self._call("store", key, lambda: self.client.upload_file(str(path), self.bucket, self._name(key)))
        return key

    def read(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str) -> Iterator[bytes]:
        """The object body in chunks; `BlobNotFound` is raised here, before the first chunk is asked for.

        Raises:
            BlobNotFound: the key is malformed or no object is stored under it.
            BlobStoreUnavailable: the store cannot be reached.
        """
        check_key(key)
        response = self._call(
            "read", key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        )
        return _body_chunks(response["Body"])

    def download(self, key: str, target: Path) -> None:
        """Copy the object to the file `target` (a bundle archive), chunk by chunk."""
        with open(target, "wb") as handle:
            handle.writelines(self.stream(key))

    def _exists(self, key: str) -> bool:
        try:
            self._call(
                "look up", key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._name(key))
            )
        except BlobNotFound:
            return False
        return True

    def _name(self, key: str) -> str:
        return self.prefix + key

    def _call(self, action: str, key: str, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except ClientError as error:
            if _error_code(error) in MISSING_CODES:
                raise BlobNotFound(f"no blob {key}") from None
            raise BlobStoreUnavailable(
                f"the object store refused to {action} {key}: {_describe(error)}"
            ) from None
        except (BotoCoreError, S3UploadFailedError) as error:  # connection refused, timeout, DNS…
            raise BlobStoreUnavailable(
                f"cannot {action} {key} in the object store: {_describe(error)}"
            ) from None


def _body_chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(STREAM_CHUNK_BYTES)
    finally:
        body.close()


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _describe(error: Exception) -> str:
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__
