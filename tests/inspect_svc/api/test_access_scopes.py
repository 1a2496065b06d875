"""Who may read what: a camera key sees only its own camera, and signed links open one picture each."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from inspect_svc.api import links
from tests.conftest import ADMIN, add_camera, make_settings, png_bytes

PICTURES = ("image", "map", "mask", "overlay")


@pytest.fixture
def two_cameras(client):
    """cam-1 on line-a and cam-2 on line-b, each with one inspection; returns keys and inspection ids."""
    keys = {"cam-1": add_camera(client, "cam-1", "line-a"), "cam-2": add_camera(client, "cam-2", "line-b")}
    ids = {}
    for seed, (name, key) in enumerate(keys.items()):
        response = client.post(
            "/inspect",
            content=png_bytes(seed=seed),
            headers={**key, "Content-Type": "image/png"},
            params={"frame_id": f"{name}-f1"},
        )
        assert response.status_code == 200, response.text
        ids[name] = response.json()["id"]
    return keys, ids


def test_camera_key_reads_its_own_inspection_and_pictures(client, two_cameras):
    keys, ids = two_cameras
    assert client.get(f"/inspections/{ids['cam-1']}", headers=keys["cam-1"]).status_code == 200
    for path in ("image", "map.png", "mask.png", "overlay.png"):
        assert client.get(f"/inspections/{ids['cam-1']}/{path}", headers=keys["cam-1"]).status_code == 200


def test_camera_key_cannot_read_another_cameras_inspection_or_pictures(client, two_cameras):
    keys, ids = two_cameras
    other = ids["cam-2"]
    for path in ("", "/image", "/map.png", "/mask.png", "/overlay.png"):
        response = client.get(f"/inspections/{other}{path}", headers=keys["cam-1"])
        # The same answer as for an id that does not exist: the key learns nothing about cam-2.
        assert response.status_code == 404, path
        assert response.json()["detail"] == f"no inspection {other!r}"
        assert client.get(f"/inspections/{other}{path}", headers=ADMIN).status_code == 200


def test_camera_key_lists_only_its_own_camera(client, two_cameras):
    keys, _ = two_cameras
    own = client.get("/inspections", headers=keys["cam-1"]).json()
    assert [item["camera_id"] for item in own["items"]] == ["cam-1"]
    by_line = client.get("/inspections", params={"line": "line-b"}, headers=keys["cam-1"]).json()
    assert by_line["items"] == []
    refused = client.get("/inspections", params={"camera_id": "cam-2"}, headers=keys["cam-1"])
    assert refused.status_code == 403 and "cam-1" in refused.json()["detail"]
    assert client.get("/inspections", params={"camera_id": "cam-1"}, headers=keys["cam-1"]).status_code == 200
    everything = client.get("/inspections", headers=ADMIN).json()
    assert {item["camera_id"] for item in everything["items"]} == {"cam-1", "cam-2"}


def test_camera_key_reads_only_its_own_lines_thresholds(client, two_cameras):
    keys, _ = two_cameras
    assert client.get("/lines/line-a/threshold", headers=keys["cam-1"]).status_code == 200
    refused = client.get("/lines/line-b/threshold", headers=keys["cam-1"])
    assert refused.status_code == 403 and "not registered for line 'line-b'" in refused.json()["detail"]
    assert client.get("/lines/line-b/threshold", headers=ADMIN).status_code == 200


def test_camera_key_never_sees_models_or_server_paths(client, two_cameras, test_bundle):
    keys, _ = two_cameras
    refused = client.get("/models", headers=keys["cam-1"])
    assert refused.status_code == 403
    assert str(test_bundle.root) not in refused.text
    assert client.get("/cameras", headers=keys["cam-1"]).status_code == 401
    listed = client.get("/models", headers=ADMIN)
    assert listed.status_code == 200 and listed.json()[0]["bundle_path"]


def test_camera_tags_only_its_registered_line(client, two_cameras):
    keys, _ = two_cameras
    headers = {**keys["cam-1"], "Content-Type": "image/png"}
    own = client.post("/inspect", content=png_bytes(seed=5), headers=headers, params={"line": "line-a"})
    assert own.status_code == 200 and own.json()["line"] == "line-a"
    untagged = client.post("/inspect", content=png_bytes(seed=6), headers=headers)
    assert untagged.json()["line"] == "line-a"
    other = client.post("/inspect", content=png_bytes(seed=7), headers=headers, params={"line": "line-b"})
    assert other.status_code == 403
    assert other.json()["detail"] == "camera 'cam-1' is registered for line 'line-a', not 'line-b'"
    multipart = client.post(
        "/inspect",
        files={"file": ("p.png", png_bytes(seed=8), "image/png")},
        data={"line": "line-b"},
        headers=keys["cam-1"],
    )
    assert multipart.status_code == 403


def test_camera_without_a_line_may_not_tag_one(client):
    key = add_camera(client, "loose-cam", None)
    headers = {**key, "Content-Type": "image/png"}
    assert client.post("/inspect", content=png_bytes(), headers=headers).json().get("line") is None
    tagged = client.post("/inspect", content=png_bytes(seed=1), headers=headers, params={"line": "line-a"})
    assert tagged.status_code == 403 and "registered for no line" in tagged.json()["detail"]


# --- signed links ------------------------------------------------------------------------------------


def signed_answer(client, key) -> dict:
    response = client.post(
        "/inspect", content=png_bytes(seed=3), headers={**key, "Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_inspect_answer_has_signed_links_that_work_without_headers(client, camera_key):
    answer = signed_answer(client, camera_key)
    signed = answer["signed_links"]
    assert set(signed) == {*PICTURES, "expires_at"}
    for picture in PICTURES:
        assert client.get(answer["links"][picture]).status_code == 401  # the plain path needs the header
        response = client.get(signed[picture])
        assert response.status_code == 200, (picture, response.text)
        assert response.headers["content-type"].startswith("image/")
    # The header keeps working on the plain path.
    assert client.get(answer["links"]["map"], headers=camera_key).status_code == 200


def test_a_signed_link_opens_only_its_own_picture(client, camera_key):
    first, second = (
        signed_answer(client, camera_key),
        client.post(
            "/inspect", content=png_bytes(seed=4), headers={**camera_key, "Content-Type": "image/png"}
        ).json(),
    )
    query = urlsplit(first["signed_links"]["map"]).query
    # The map's signature does not open the overlay of the same inspection, nor the map of another.
    assert client.get(f"/inspections/{first['id']}/overlay.png?{query}").status_code == 403
    assert client.get(f"/inspections/{second['id']}/map.png?{query}").status_code == 403
    # Nor does it read the inspection itself or the list.
    assert client.get(f"/inspections/{first['id']}?{query}").status_code == 401
    assert client.get(f"/inspections?{query}").status_code == 401


def test_a_tampered_or_expired_link_is_refused(client, camera_key):
    answer = signed_answer(client, camera_key)
    url = urlsplit(answer["signed_links"]["image"])
    params = {name: values[0] for name, values in parse_qs(url.query).items()}
    later = {**params, "expires": str(int(params["expires"]) + 3600)}
    assert client.get(url.path, params=later).status_code == 403
    forged = {**params, "signature": params["signature"][:-2] + "AA"}
    assert client.get(url.path, params=forged).status_code == 403
    assert client.get(url.path, params={"signature": params["signature"]}).status_code == 403
    settings = client.app.state.service.settings
    past = time.time() - 10 * settings.signed_link_ttl_s
    expired = links.signed_links(settings, answer["id"], now=past).image
    response = client.get(expired)
    assert response.status_code == 403 and "expired" in response.json()["detail"]


def link_opens(settings, signed_url: str, inspection_id: str) -> bool:
    params = {name: values[0] for name, values in parse_qs(urlsplit(signed_url).query).items()}
    return links.link_is_valid(
        settings, inspection_id, "map", expires=int(params["expires"]), signature=params["signature"]
    )


def test_replicas_sharing_a_secret_accept_each_others_links(tmp_path):
    explicit = make_settings(tmp_path, signing_key="plant-secret")
    same_key_other_token = make_settings(tmp_path, signing_key="plant-secret", admin_token="other-token")
    other_key = make_settings(tmp_path, signing_key="another-secret")
    url = links.signed_links(explicit, "0f5e2c1a").map
    assert link_opens(same_key_other_token, url, "0f5e2c1a") and not link_opens(other_key, url, "0f5e2c1a")
    # Without a configured key, replicas that share the admin token share a derived key.
    by_token = links.signed_links(make_settings(tmp_path), "0f5e2c1a").map
    assert link_opens(make_settings(tmp_path / "replica-2"), by_token, "0f5e2c1a")
    assert not link_opens(make_settings(tmp_path, admin_token="other-token"), by_token, "0f5e2c1a")
