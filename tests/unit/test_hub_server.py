"""The loopback Hub server: protocol details huggingface_hub relies on, validation, auth, crash safety.

Every test runs a real HubServer on 127.0.0.1 with an ephemeral port over a tmp data dir; raw requests use
http.client, which (unlike requests/urllib3) sends '..' path segments as written.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.utils import reset_sessions

from neuronforge.hub_server import HubServer, ensure_running, git_blob_oid, server_alive

TOKEN = "hub-test-token-7f3a"


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # HF_HUB_OFFLINE=1 would block loopback too; these tests never leave 127.0.0.1.
    if constants.HF_HUB_OFFLINE:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        reset_sessions()
    yield
    reset_sessions()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "root" / "hub") as srv:
        yield srv


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "root" / "hub", token=TOKEN) as srv:
        yield srv


def request(
    srv: HubServer,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(srv.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    try:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def ndjson(summary: str, *ops: dict[str, Any], parent: str | None = None) -> bytes:
    header: dict[str, Any] = {"summary": summary, "description": ""}
    if parent:
        header["parentCommit"] = parent
    return b"\n".join(json.dumps(x).encode() for x in [{"key": "header", "value": header}, *ops])


def add_file(path: str, data: bytes) -> dict[str, Any]:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


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


def test_path_traversal_is_rejected_and_nothing_escapes(hub: HubServer, tmp_path: Path) -> None:
    HfApi(endpoint=hub.url, token=False).create_repo("org/ok")
    head = json.loads(request(hub, "GET", "/api/models/org/ok")[2])["sha"]
    outside_before = files_under(tmp_path.parent) - files_under(hub.data_dir)
    bad_paths = ["../../etc/passwd", "a\\b", "/etc/x", "a\x00b", "./x", "a//b", ".git/config", "a/../../b"]
    attempts: list[tuple[str, str, Any]] = [
        ("POST", "/api/repos/create", {"name": "y", "organization": "../x"}),
        ("POST", "/api/repos/create", {"name": "..", "organization": "a"}),
        ("POST", "/api/repos/create", {"name": "b/../../c", "organization": "a"}),
        ("DELETE", "/api/repos/delete", {"name": "..", "organization": "org"}),
        ("GET", "/api/models/../x/y", None),
        ("GET", "/api/models/a/..", None),
        ("GET", "/api/models/%2e%2e/x", None),
        ("GET", "/api/models/org%2F..%2F../x", None),
        ("GET", "/api/models/org/ok/revision/..%2F..%2Frefs", None),
        ("GET", "/api/models/org/ok/tree/..%2F..%2Frefs", None),
        ("GET", "/api/models/org/ok/tree/main/..%2F..", None),
        ("GET", "/org/ok/resolve/main/../../etc/passwd", None),
        ("GET", "/org/ok/resolve/main/..%2F..%2Fetc%2Fpasswd", None),
        ("GET", "/org/ok/resolve/..%2F..%2Frefs/.gitattributes", None),
        ("GET", "/../../org/ok/resolve/main/.gitattributes", None),
        ("POST", "/api/models/org/ok/commit/..%2F..%2Frefs", ndjson("x", add_file("a.txt", b"a"))),
        ("POST", "/api/models/org/ok/branch/..%2Fevil", {}),
        ("POST", "/api/models/org/ok/tag/main", {"tag": "../../evil"}),
        ("POST", "/api/models/org/ok/preupload/main", {"files": [{"path": "../x", "sample": "", "size": 1}]}),
        ("PUT", f"/org/ok.git/info/lfs/objects/upload/..%2F..%2Fx/1?sig=x&expires={int(time.time()) + 60}", b"x"),
        (
            "POST",
            "/org/ok.git/info/lfs/objects/batch",
            {"operation": "upload", "objects": [{"oid": "../x", "size": 1}]},
        ),
    ]
    for path in bad_paths:
        attempts.append(("POST", "/api/models/org/ok/commit/main", ndjson("x", add_file(path, b"pwned"))))
        attempts.append(
            ("POST", "/api/models/org/ok/commit/main", ndjson("x", {"key": "deletedFile", "value": {"path": path}}))
        )
        oid = hashlib.sha256(b"x").hexdigest()
        attempts.append(
            (
                "POST",
                "/api/models/org/ok/commit/main",
                ndjson("x", {"key": "lfsFile", "value": {"path": path, "oid": oid, "size": 1}}),
            )
        )
    for method, path, body in attempts:
        status, headers, payload = request(hub, method, path, body)
        assert 400 <= status < 500, (method, path, body, status, payload)
        assert "error" in json.loads(payload) and headers.get("X-Error-Message"), (method, path)

    outside_after = files_under(tmp_path.parent) - files_under(hub.data_dir)
    assert outside_after == outside_before
    for path in files_under(hub.data_dir):
        assert path.resolve().is_relative_to(hub.data_dir)
    assert sorted(p.name for p in (hub.data_dir / "repos").iterdir() if p.is_dir()) == ["org"]
    assert json.loads(request(hub, "GET", "/api/models/org/ok")[2])["sha"] == head  # the good repo is untouched


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
    status, headers, _ = request(secured, "GET", "/api/models/org/p")
    assert status == 401 and headers["X-Error-Code"] == "RepoNotFound"
    assert request(secured, "GET", "/api/models/org/p", headers=good)[0] == 200
    assert request(secured, "GET", "/api/whoami-v2")[0] == 401
    assert json.loads(request(secured, "GET", "/api/whoami-v2", headers=good)[2])["name"] == "neuronforge"


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


def test_parent_commit_mismatch_is_refused(hub: HubServer) -> None:
    HfApi(endpoint=hub.url, token=False).create_repo("org/m")
    head = json.loads(request(hub, "GET", "/api/models/org/m")[2])["sha"]
    assert (
        request(hub, "POST", "/api/models/org/m/commit/main", ndjson("one", add_file("a", b"1"), parent=head))[0] == 200
    )
    status, _, body = request(
        hub, "POST", "/api/models/org/m/commit/main", ndjson("two", add_file("a", b"2"), parent=head)
    )
    assert status == 412 and "moved" in json.loads(body)["error"]
    status, _, body = request(hub, "POST", "/api/models/org/m/commit/main", ndjson("clash", add_file("a/b", b"x")))
    assert status == 400 and "both a file and a folder" in json.loads(body)["error"]


@pytest.mark.parametrize("point", ["blob", "commit", "refs"])
def test_crash_mid_commit_keeps_previous_revision(hub: HubServer, point: str) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    api.create_repo("org/m")
    first = api.upload_file(repo_id="org/m", path_in_repo="a.txt", path_or_fileobj=b"version 1").oid
    api.create_tag("org/m", tag="v1", revision=first)
    refs_before = (hub.data_dir / "repos" / "org" / "m" / "refs.json").read_bytes()

    def crash(where: str) -> None:
        if where == point:
            raise OSError(f"simulated crash before the {where} write")

    hub.store.fault_hook = crash
    status, _, body = request(
        hub, "POST", "/api/models/org/m/commit/main", ndjson("v2", add_file("a.txt", b"version 2"))
    )
    assert status == 500 and "simulated crash" in json.loads(body)["error"]
    hub.store.fault_hook = None

    assert (hub.data_dir / "repos" / "org" / "m" / "refs.json").read_bytes() == refs_before
    assert api.model_info("org/m").sha == first
    assert request(hub, "GET", "/org/m/resolve/main/a.txt")[2] == b"version 1"
    assert {(r.name, r.target_commit) for r in api.list_repo_refs("org/m").tags} == {("v1", first)}
    # ...and the repo still takes the next commit.
    assert api.upload_file(repo_id="org/m", path_in_repo="a.txt", path_or_fileobj=b"version 2").oid != first


def test_fail_next_injects_errors(hub: HubServer) -> None:
    hub.fail_next(2, status=503, path_prefix="/api/whoami")
    assert [request(hub, "GET", "/api/whoami-v2")[0] for _ in range(3)] == [503, 503, 200]
    assert request(hub, "GET", "/api/health")[0] == 200
    assert hub.failures_served == 2


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


def test_ensure_running_starts_one_detached_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    url = ensure_running(data_dir)
    pid = json.loads((data_dir / "server.json").read_text())["pid"]
    try:
        assert server_alive(url, data_dir)
        assert ensure_running(data_dir) == url  # alive: reused, no second process
        assert json.loads((data_dir / "server.json").read_text())["pid"] == pid
        HfApi(endpoint=url, token=False).create_repo("org/m")
        assert not server_alive(url, tmp_path / "elsewhere")  # a server for another data dir does not count
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while server_alive(url, data_dir) and time.time() < deadline:
        time.sleep(0.1)
    url2 = ensure_running(data_dir)  # dead → a new process on the same data (the repo is still there)
    pid2 = json.loads((data_dir / "server.json").read_text())["pid"]
    try:
        assert pid2 != pid
        assert HfApi(endpoint=url2, token=False).repo_exists("org/m")
        # Wiping the data dir's state (or another server taking over) makes the detached server leave by itself.
        (data_dir / "server.json").unlink()
        deadline = time.time() + 15
        while server_alive(url2, data_dir) and time.time() < deadline:
            time.sleep(0.2)
        assert not server_alive(url2, data_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid2, signal.SIGTERM)
