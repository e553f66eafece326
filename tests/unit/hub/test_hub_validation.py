"""Validation of client input: no repo id, revision or path in repo reaches outside the data dir."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from hub_testing import add_file, files_under, ndjson, request
from huggingface_hub import HfApi

from neuronforge.hub import HubServer


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
