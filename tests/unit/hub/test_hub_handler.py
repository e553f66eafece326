"""The hub's HTTP plumbing: tokens (required for writes, never echoed) and body size caps."""

from __future__ import annotations

import json
from pathlib import Path

from hub_testing import TOKEN, add_file, ndjson, request
from huggingface_hub import HfApi

from neuronforge.hub import HubServer


def test_token_required_for_writes_and_never_echoed(secured: HubServer) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    wrong = "Bearer wrong-secret-value"
    status, headers, body = request(secured, "POST", "/api/repos/create", {"name": "m", "organization": "org"})
    assert status == 401 and "token" in json.loads(body)["error"]
    status, headers, body = request(
        secured, "POST", "/api/repos/create", {"name": "m", "organization": "org"}, {"Authorization": wrong}
    )
    assert status == 401 and headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    assert b"wrong-secret-value" not in body and TOKEN.encode() not in body
    assert request(secured, "POST", "/api/repos/create", {"name": "m", "organization": "org"}, good)[0] == 200
    assert request(secured, "GET", "/api/models/org/m")[0] == 200  # public reads stay open
    assert request(secured, "GET", "/api/models/org/m", headers={"Authorization": wrong})[0] == 401
    assert (
        request(secured, "POST", "/api/repos/create", {"name": "p", "organization": "org", "private": True}, good)[0]
        == 200
    )
    # Without the token a private repo answers exactly as a missing one does: its name does not leak.
    private = request(secured, "GET", "/api/models/org/p")
    missing = request(secured, "GET", "/api/models/org/q")
    assert (
        private[0] == missing[0] == 404 and private[1]["X-Error-Code"] == missing[1]["X-Error-Code"] == "RepoNotFound"
    )
    assert private[2].replace(b"org/p", b"org/q") == missing[2]
    assert request(secured, "GET", "/org/p/resolve/main/.gitattributes")[0] == 404
    assert request(secured, "GET", "/api/models/org/p", headers=good)[0] == 200
    assert request(secured, "GET", "/api/whoami-v2")[0] == 401
    assert json.loads(request(secured, "GET", "/api/whoami-v2", headers=good)[2])["name"] == "neuronforge"


def test_body_size_caps(tmp_path: Path) -> None:
    with HubServer(tmp_path / "hub", max_json_bytes=2048, max_upload_bytes=4096) as srv:
        HfApi(endpoint=srv.url, token=False).create_repo("org/m")
        status, _, body = request(
            srv, "POST", "/api/models/org/m/commit/main", ndjson("big", add_file("a.bin", b"x" * 4000))
        )
        assert status == 413 and "--max-json-bytes" in json.loads(body)["error"]
        batch = {"operation": "upload", "objects": [{"oid": "a" * 64, "size": 10_000}]}
        row = json.loads(request(srv, "POST", "/org/m.git/info/lfs/objects/batch", batch)[2])["objects"][0]
        assert row["error"]["code"] == 413 and "--max-upload-bytes" in row["error"]["message"]
