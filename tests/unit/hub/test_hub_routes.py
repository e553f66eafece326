"""The hub's endpoints as huggingface_hub uses them: repos, commits, preupload, tree/refs/commits listings,
resolve (ETag, Range), LFS batch/upload/verify, model cards.

Every test runs a real HubServer on 127.0.0.1 with an ephemeral port over a tmp data dir; raw requests use
http.client, which (unlike requests/urllib3) sends '..' path segments as written.
"""

from __future__ import annotations

import hashlib
import json
import os
from urllib.parse import urlsplit

import pytest
from hub_testing import request
from huggingface_hub import CommitOperationAdd, HfApi

from neuronforge.hub import HubServer, git_blob_oid


def test_repo_lifecycle_with_huggingface_hub(hub: HubServer) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    url = api.create_repo("org/model")
    assert url == f"{hub.url}/org/model"
    assert api.create_repo("org/model", exist_ok=True).repo_id == "org/model"  # 409 + url
    initial = api.model_info("org/model").sha
    info = api.create_commit(
        "org/model",
        operations=[
            CommitOperationAdd("config.json", b'{"hidden": 8}'),
            CommitOperationAdd("weights/model.safetensors", os.urandom(4096)),
        ],
        commit_message="add weights",
        parent_commit=initial,
    )
    tree = {f.path: f for f in api.list_repo_tree("org/model", recursive=True)}
    assert set(tree) == {".gitattributes", "config.json", "weights", "weights/model.safetensors"}
    assert tree["weights/model.safetensors"].lfs is not None  # by extension, as the Hub's .gitattributes says
    assert tree["config.json"].lfs is None and tree["config.json"].blob_id == git_blob_oid(b'{"hidden": 8}')
    assert [f.path for f in api.list_repo_tree("org/model")] == ["weights", ".gitattributes", "config.json"]
    assert [f.path for f in api.get_paths_info("org/model", ["config.json", "weights", "missing"])] == [
        "config.json",
        "weights",
    ]
    commits = api.list_repo_commits("org/model")
    assert [c.commit_id for c in commits] == [info.oid, initial]
    assert commits[0].title == "add weights"

    api.create_tag("org/model", tag="v1", revision=info.oid)
    api.create_branch("org/model", branch="dev", revision=initial)
    refs = api.list_repo_refs("org/model")
    assert {(r.name, r.target_commit) for r in refs.tags} == {("v1", info.oid)}
    assert {(r.name, r.target_commit) for r in refs.branches} == {("main", info.oid), ("dev", initial)}
    assert api.model_info("org/model", revision="v1").sha == info.oid
    assert api.model_info("org/model", revision="dev").sha == initial
    api.delete_tag("org/model", tag="v1")
    assert api.list_repo_refs("org/model").tags == []
    assert api.file_exists("org/model", "config.json") and not api.file_exists("org/model", "nope.json")


def test_preupload_reports_mode_and_existing_oid(hub: HubServer) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    api.create_repo("org/m")
    api.upload_file(repo_id="org/m", path_in_repo="a.json", path_or_fileobj=b"{}")
    files = [
        {"path": "a.json", "sample": "", "size": 2},
        {"path": "model.onnx", "sample": "", "size": 10},
        {"path": "big.txt", "sample": "", "size": 11 * 1024 * 1024},
    ]
    status, _, body = request(hub, "POST", "/api/models/org/m/preupload/main", {"files": files})
    assert status == 200
    rows = {row["path"]: row for row in json.loads(body)["files"]}
    assert rows["a.json"] == {
        "path": "a.json",
        "uploadMode": "regular",
        "shouldIgnore": False,
        "oid": git_blob_oid(b"{}"),
    }
    assert rows["model.onnx"]["uploadMode"] == "lfs" and "oid" not in rows["model.onnx"]
    assert rows["big.txt"]["uploadMode"] == "lfs"  # > 10 MB goes to LFS whatever the name


def test_resolve_head_etag_and_range(hub: HubServer) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    api.create_repo("org/m")
    blob = os.urandom(300_000)
    text = b"hello world, this is a regular file"
    info = api.create_commit(
        "org/m",
        operations=[CommitOperationAdd("model.onnx.data", blob), CommitOperationAdd("notes.txt", text)],
        commit_message="files",
    )
    status, headers, body = request(hub, "HEAD", "/org/m/resolve/main/model.onnx.data")
    assert status == 200 and body == b""
    sha256 = hashlib.sha256(blob).hexdigest()
    assert headers["X-Repo-Commit"] == info.oid
    assert headers["ETag"] == f'"{sha256}"' and headers["X-Linked-Etag"] == f'"{sha256}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(len(blob))

    status, headers, _ = request(hub, "HEAD", "/org/m/resolve/main/notes.txt")
    assert headers["ETag"] == f'"{git_blob_oid(text)}"' and "X-Linked-Size" not in headers

    status, headers, body = request(
        hub, "GET", "/org/m/resolve/main/model.onnx.data", headers={"Range": "bytes=1000-1999"}
    )
    assert status == 206 and body == blob[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(blob)}" and headers["Content-Length"] == "1000"
    status, _, body = request(hub, "GET", f"/org/m/resolve/{info.oid}/notes.txt", headers={"Range": "bytes=-5"})
    assert status == 206 and body == text[-5:]
    status, _, body = request(hub, "GET", "/org/m/resolve/main/notes.txt", headers={"Range": "bytes=6-"})
    assert status == 206 and body == text[6:]
    status, headers, _ = request(hub, "GET", "/org/m/resolve/main/notes.txt", headers={"Range": "bytes=999-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(text)}"

    status, headers, _ = request(hub, "GET", "/org/m/resolve/main/missing.bin")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and headers["X-Repo-Commit"] == info.oid
    assert request(hub, "GET", "/org/m/resolve/nope/notes.txt")[1]["X-Error-Code"] == "RevisionNotFound"
    assert request(hub, "GET", "/org/other/resolve/main/notes.txt")[1]["X-Error-Code"] == "RepoNotFound"


def test_lfs_upload_is_signed_and_checked(hub: HubServer) -> None:
    HfApi(endpoint=hub.url, token=False).create_repo("org/m")
    data = os.urandom(5000)
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    status, _, body = request(hub, "POST", "/org/m.git/info/lfs/objects/batch", batch)
    assert status == 200
    actions = json.loads(body)["objects"][0]["actions"]
    upload = urlsplit(actions["upload"]["href"])
    target = f"{upload.path}?{upload.query}"
    tampered = target.replace("sig=", "sig=0")
    assert request(hub, "PUT", tampered, data)[0] == 403
    assert request(hub, "PUT", target, os.urandom(5000))[0] == 400  # wrong content for the oid
    assert request(hub, "PUT", target, data[:-1])[0] == 400  # short
    assert not list((hub.data_dir / "repos" / "org" / "m" / "blobs").glob(f"*/{oid}"))
    assert not list((hub.data_dir / "tmp").iterdir())  # rejected uploads leave nothing behind
    assert request(hub, "POST", "/org/m.git/info/lfs/objects/verify", {"oid": oid, "size": len(data)})[0] == 404
    assert request(hub, "PUT", target, data)[0] == 200
    assert request(hub, "POST", "/org/m.git/info/lfs/objects/verify", {"oid": oid, "size": len(data)})[0] == 200
    status, _, body = request(hub, "POST", "/org/m.git/info/lfs/objects/batch", batch)
    assert "actions" not in json.loads(body)["objects"][0]  # already stored: the client skips the upload


def test_tree_and_commits_paginate(hub: HubServer) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    api.create_repo("org/m")
    ops = [CommitOperationAdd(f"f{i}.txt", str(i).encode()) for i in range(5)]
    api.create_commit("org/m", operations=ops, commit_message="five files")
    status, headers, body = request(hub, "GET", "/api/models/org/m/tree/main?recursive=true&limit=2")
    assert status == 200 and len(json.loads(body)) == 2 and 'rel="next"' in headers["Link"]
    seen = []
    url = "/api/models/org/m/tree/main?recursive=true&limit=2"
    while url:
        status, headers, body = request(hub, "GET", url)
        seen += [item["path"] for item in json.loads(body)]
        link = headers.get("Link")
        url = urlsplit(link[1 : link.index(">")])._replace(scheme="", netloc="").geturl() if link else ""
    assert seen == [".gitattributes"] + [f"f{i}.txt" for i in range(5)]
    assert len(api.list_repo_commits("org/m")) == 2


def test_validate_yaml_and_card_data(hub: HubServer) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    api.create_repo("org/m")
    status, _, _ = request(hub, "POST", "/api/validate-yaml", {"content": "---\ntags: [a\n---\n", "repoType": "model"})
    assert status == 400
    card = b"---\nlibrary_name: onnx\ntags:\n- onnx\n- neuronforge\n---\n# Card\n"
    api.upload_file(repo_id="org/m", path_in_repo="README.md", path_or_fileobj=card)
    info = api.model_info("org/m")
    assert info.tags == ["onnx", "neuronforge"] and info.card_data.library_name == "onnx"
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(repo_id="org/m", path_in_repo="README.md", path_or_fileobj=b"---\n: [\n---\n")
