"""The S3 blob store against a real S3 server (SeaweedFS on loopback), alone and behind the service."""

from __future__ import annotations

import shutil
import socket

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from inspect_svc.bundle import BundleError
from inspect_svc.bundle_store import fetch_bundle, publish_bundle
from inspect_svc.main import create_app
from inspect_svc.storage.blob_factory import open_blob_store
from inspect_svc.storage.blobstore import BlobNotFound, BlobStore, BlobStoreUnavailable
from inspect_svc.storage.db import make_engine
from inspect_svc.storage.s3blobs import S3BlobStore
from tests.conftest import ADMIN, add_camera, make_settings, png_bytes
from tests.utils.onnx_models import make_test_bundle


def s3_store(tmp_path, overrides: dict[str, object], **extra: object) -> S3BlobStore:
    store = open_blob_store(make_settings(tmp_path, **{**overrides, **extra}))
    assert isinstance(store, S3BlobStore)
    return store


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_put_read_stream_share_the_file_stores_keys(tmp_path, s3_overrides):
    store = s3_store(tmp_path, s3_overrides, s3_prefix="plant-1/")
    data = png_bytes(seed=1)
    key = store.put(data, suffix=".png")
    assert key == BlobStore(tmp_path / "files").put(data, suffix=".png")  # one key scheme for both stores
    assert store.put(data, suffix=".png") == key
    assert store.read(key) == data
    assert b"".join(store.stream(key)) == data
    # The prefix is where the object really lives in the bucket.
    listed = store.client.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"plant-1/{key}"]


def test_large_files_upload_and_download_whole(tmp_path, s3_overrides):
    store = s3_store(tmp_path, s3_overrides)
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: above boto3's multipart threshold
    key = store.put_file(source, suffix=".zip")
    assert store.put_file(source, suffix=".zip") == key
    store.download(key, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_missing_and_malformed_keys_are_not_found(tmp_path, s3_overrides):
    store = s3_store(tmp_path, s3_overrides)
    with pytest.raises(BlobNotFound):
        store.read("00/00/" + "0" * 64 + ".png")
    for bad in ("../etc/passwd", "ab/cd/short", "AB/CD/" + "0" * 64):
        with pytest.raises(BlobNotFound):
            store.read(bad)
    with pytest.raises(ValueError):
        store.put(b"x", suffix="/../x")


def test_unreachable_store_and_wrong_secret_are_unavailable_not_crashes(tmp_path, s3_overrides, s3_server):
    down = s3_store(tmp_path, s3_overrides, s3_endpoint=f"http://127.0.0.1:{closed_port()}", s3_timeout_s=1.0)
    with pytest.raises(BlobStoreUnavailable):
        down.put(b"frame")
    if not s3_server.started_here:
        pytest.skip("the S3 server was already running: its credentials are not known to be enforced")
    wrong = s3_store(tmp_path, s3_overrides, s3_secret_key="not-the-secret")
    with pytest.raises(BlobStoreUnavailable, match=r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        wrong.put(b"frame")


def test_settings_refuse_s3_without_bucket_or_with_half_credentials(tmp_path):
    with pytest.raises(ValueError, match="s3_bucket"):
        make_settings(tmp_path, blob_store="s3")
    with pytest.raises(ValueError, match="both"):
        make_settings(tmp_path, blob_store="s3", s3_bucket="frames", s3_access_key="only-half")
    settings = make_settings(
        tmp_path, blob_store="s3", s3_bucket="frames", s3_access_key="a", s3_secret_key="b"
    )
    assert "b" not in repr(settings.s3_secret_key)


def test_the_service_stores_frames_in_s3_and_streams_them_back(tmp_path, test_bundle, s3_overrides):
    settings = make_settings(tmp_path, model=test_bundle.root, **s3_overrides)
    with TestClient(create_app(settings)) as client:
        key = add_camera(client)
        body = png_bytes(seed=5)
        result = client.post(
            "/inspect",
            content=body,
            headers={**key, "Content-Type": "image/png"},
            params={"frame_id": "s3-1"},
        )
        assert result.status_code == 200, result.text
        inspection = result.json()
        image = client.get(f"/inspections/{inspection['id']}/image", headers=key)
        assert image.status_code == 200 and image.content == body
        assert image.headers["content-type"] == "image/png"
        assert client.get(f"/inspections/{inspection['id']}/map.png", headers=key).status_code == 200
        assert client.get(f"/inspections/{inspection['id']}/overlay.png", headers=key).status_code == 200
        store = client.app.state.service.blobs
    assert not any(settings.data_dir.rglob("*.png"))  # nothing went to the local disk
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            image_key = connection.execute(text("SELECT image_key FROM inspections")).scalar_one()
    finally:
        engine.dispose()
    assert store.read(image_key) == body


def test_no_row_is_written_while_the_object_store_refuses_the_frame(tmp_path, test_bundle, s3_overrides):
    settings = make_settings(
        tmp_path,
        model=test_bundle.root,
        **{**s3_overrides, "s3_endpoint": f"http://127.0.0.1:{closed_port()}", "s3_timeout_s": 1.0},
    )
    with TestClient(create_app(settings)) as client:
        key = add_camera(client)
        refused = client.post(
            "/inspect",
            content=png_bytes(),
            headers={**key, "Content-Type": "image/png"},
            params={"frame_id": "lost"},
        )
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert "object store" in refused.json()["detail"]
        assert client.get("/inspections", headers=ADMIN).json()["items"] == []


def test_bundles_round_trip_and_a_corrupt_archive_is_refused(tmp_path, s3_overrides):
    store = s3_store(tmp_path, s3_overrides)
    bundle = make_test_bundle(tmp_path / "src" / "b-1", version="b-1")
    key = publish_bundle(bundle, store, workdir=tmp_path / "work")
    assert publish_bundle(bundle, store, workdir=tmp_path / "work2") == key  # same files, same archive
    fetched = fetch_bundle(key, store, extract_root=tmp_path / "replica", version="b-1")
    assert fetched.manifest == bundle.manifest and fetched.root.is_relative_to(tmp_path / "replica")
    with pytest.raises(BundleError, match="holds version"):
        fetch_bundle(key, store, extract_root=tmp_path / "other", version="b-2")
    # Someone overwrites the object: the replica that fetches it refuses what does not match the key.
    store.client.put_object(Bucket=store.bucket, Key=key, Body=b"PK-not-a-bundle")
    with pytest.raises(BundleError, match="corrupt"):
        fetch_bundle(key, store, extract_root=tmp_path / "fresh", version="b-1")
    with pytest.raises(BundleError, match="not in the blob store"):
        fetch_bundle("00/00/" + "0" * 64 + ".zip", store, extract_root=tmp_path / "fresh", version="b-1")


def test_a_replica_without_the_bundle_files_activates_from_the_object_store(
    tmp_path, test_bundle, second_bundle, s3_overrides, database_url
):
    source = tmp_path / "upload" / "test-2"
    shutil.copytree(second_bundle.root, source)
    first = make_settings(
        tmp_path / "a",
        database_url=database_url,
        model=test_bundle.root,
        auto_migrate=True,
        replica_id="a",
        **s3_overrides,
    )
    second = make_settings(
        tmp_path / "b", database_url=database_url, auto_migrate=True, replica_id="b", **s3_overrides
    )
    with TestClient(create_app(first)) as replica_a:
        assert replica_a.post("/models", json={"path": str(source)}, headers=ADMIN).status_code == 201
    shutil.rmtree(source)  # the registering replica's copy is gone: only the object store has it now
    with TestClient(create_app(second)) as replica_b:
        assert replica_b.get("/readyz").json()["checks"]["model_version"] == "test-1"  # fetched at start
        activated = replica_b.post("/models/test-2/activate", headers=ADMIN)
        assert activated.status_code == 200, activated.text
        assert activated.json()["serving"] is True
        listed = replica_b.get("/models", headers=ADMIN)
        assert listed.headers["X-Replica-Id"] == "b" and listed.headers["X-Serving-Version"] == "test-2"
        assert any((second.bundle_extract_dir).glob("test-2-*/model.onnx"))
