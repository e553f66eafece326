"""Hostile input against the real server on loopback: a table of requests → the status each must get, and no 5xx.

Each row is one request a hostile or broken client (or a web page) can send. The rows marked in the comments are the
defects measured in issue #15 (500s, cross-site writes, DNS rebinding, short shas, oversized regular files).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hub_testing import TOKEN, add_file, ndjson, request
from huggingface_hub import HfApi

from neuronforge.hub import HubServer

LFS_THRESHOLD = 64 << 10  # small, so the regular-file cap is cheap to hit
DEEP = b"[" * 100_000 + b"]" * 100_000
BOMB = (
    "---\na: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n---\n"
)
CARDS = {  # README.md of repo org/card-<name> → the tags model_info must answer
    "date": ("---\ndate: 2024-01-02\ntags: [a]\n---\n", ["a"]),
    "binary": ("---\nblob: !!binary aGVsbG8=\n---\n", []),
    "set": ("---\ns: !!set {a, b}\n---\n", []),
    "int_tags": ("---\ntags: 5\n---\n", []),
    "str_tags": ("---\ntags: onnx\n---\n", ["onnx"]),
    "bomb": (BOMB, []),
    "self_alias": ("---\na: &a [*a]\n---\n", []),
    "deep": ("---\nx: " + "[" * 5000 + "\n---\n", []),
    "unclosed": ("---\ntags: [a]\n", []),
}


@dataclass
class Row:
    name: str
    method: str
    path: str
    status: int
    body: bytes | dict[str, Any] | list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub", lfs_threshold=LFS_THRESHOLD) as srv:
        api = HfApi(endpoint=srv.url, token=False)
        api.create_repo("org/m")
        api.upload_file(repo_id="org/m", path_in_repo="a.txt", path_or_fileobj=b"hello")
        for name, (card, _) in CARDS.items():
            api.create_repo(f"org/card-{name}")
            commit = ndjson("card", add_file("README.md", card.encode()))  # raw: validate-yaml would refuse some
            assert request(srv, "POST", f"/api/models/org/card-{name}/commit/main", commit)[0] == 200
        yield srv


def head_of(srv: HubServer) -> str:
    return json.loads(request(srv, "GET", "/api/models/org/m")[2])["sha"]


def rows(srv: HubServer) -> list[Row]:
    port = srv.url.rsplit(":", 1)[1]
    sha = head_of(srv)
    create = {"name": "x", "organization": "org"}
    plain = {"Content-Type": "text/plain"}
    oid = hashlib.sha256(b"x").hexdigest()
    sig = f"/org/m.git/info/lfs/objects/upload/{oid}/1?expires={int(time.time()) + 60}&sig=%C3%A9t%C3%A9"
    big = ndjson("big", add_file("big.txt", b"x" * (LFS_THRESHOLD + 1)))
    table = [
        # -- 500 before: non-string startingPoint, non-ASCII upload signature, deeply nested JSON
        Row("startingPoint int", "POST", "/api/models/org/m/branch/dev", 400, {"startingPoint": 5}),
        Row("startingPoint list", "POST", "/api/models/org/m/branch/dev", 400, {"startingPoint": ["main"]}),
        Row("startingPoint unknown", "POST", "/api/models/org/m/branch/dev", 404, {"startingPoint": "nope"}),
        Row("non-ASCII signature", "PUT", sig, 403, b"x"),
        Row("deep JSON create", "POST", "/api/repos/create", 400, DEEP),
        Row("deep JSON tag", "POST", "/api/models/org/m/tag/main", 400, DEEP),
        Row("deep JSON lfs batch", "POST", "/org/m.git/info/lfs/objects/batch", 400, DEEP),
        Row(
            "deep JSON paths-info",
            "POST",
            "/api/models/org/m/paths-info/main",
            400,
            DEEP,
            {"Content-Type": "application/json"},
        ),
        Row("deep NDJSON header", "POST", "/api/models/org/m/commit/main", 400, DEEP),
        Row("deep NDJSON op", "POST", "/api/models/org/m/commit/main", 400, ndjson("x") + b"\n" + DEEP),
        Row("deep JSON validate-yaml", "POST", "/api/validate-yaml", 400, DEEP),
        # -- short shas resolve as on the Hub (404 before)
        Row("short sha model_info", "GET", f"/api/models/org/m/revision/{sha[:7]}", 200),
        Row("short sha resolve", "GET", f"/org/m/resolve/{sha[:10]}/a.txt", 200),
        Row("short sha tree", "GET", f"/api/models/org/m/tree/{sha[:12]}", 200),
        Row("unknown short sha", "GET", "/api/models/org/m/revision/0000000", 404),
        # -- cross-site writes (CSRF) and DNS rebinding in the default no-token mode (accepted before)
        Row("CSRF create", "POST", "/api/repos/create", 403, create, {**plain, "Origin": "http://evil.example"}),
        Row("CSRF null origin", "POST", "/api/repos/create", 403, create, {**plain, "Origin": "null"}),
        Row(
            "CSRF commit",
            "POST",
            "/api/models/org/m/commit/main",
            403,
            ndjson("x", add_file("a.txt", b"pwned")),
            {**plain, "Origin": "http://evil.example:80"},
        ),
        Row(
            "CSRF tag",
            "POST",
            "/api/models/org/m/tag/main",
            403,
            {"tag": "evil"},
            {**plain, "Origin": "http://attacker.test"},
        ),
        Row(
            "CSRF delete",
            "DELETE",
            "/api/repos/delete",
            403,
            {"name": "m", "organization": "org"},
            {"Origin": "https://x"},
        ),
        Row("CSRF other port", "POST", "/api/repos/create", 403, create, {"Origin": "http://127.0.0.1:1"}),
        Row("rebinding read", "GET", "/api/models/org/m", 403, None, {"Host": f"evil.example:{port}"}),
        Row("rebinding write", "POST", "/api/repos/create", 403, create, {"Host": f"evil.example:{port}"}),
        Row("rebinding page", "GET", "/org/m", 403, None, {"Host": "rebind.attacker.test"}),
        Row("own origin write", "POST", "/api/repos/create", 200, create, {"Origin": f"http://127.0.0.1:{port}"}),
        Row("localhost host", "GET", "/api/models/org/m", 200, None, {"Host": f"localhost:{port}"}),
        Row("cross-origin read", "GET", "/api/models/org/m", 200, None, {"Origin": "http://evil.example"}),
        # -- a regular (non-LFS) file above the LFS threshold (accepted before), an endless line
        Row("regular file too big", "POST", "/api/models/org/m/commit/main", 413, big),
        Row(
            "endless line", "POST", "/api/models/org/m/commit/main", 413, b"{" + b" " * (3 * LFS_THRESHOLD + (2 << 20))
        ),
        # -- methods and protocol
        Row("OPTIONS preflight", "OPTIONS", "/api/repos/create", 405, None, {"Origin": "http://evil.example"}),
        Row("PATCH", "PATCH", "/api/models/org/m", 405),
        Row("unknown method", "BREW", "/", 405),
        # -- malformed bodies and parameters (4xx already; kept so they stay that way)
        Row("bad content-length", "POST", "/api/repos/create", 400, b"{}", {"Content-Length": "abc"}),
        Row("create body list", "POST", "/api/repos/create", 400, [1, 2]),
        Row("create name int", "POST", "/api/repos/create", 400, {"name": 5}),
        Row("create org list", "POST", "/api/repos/create", 400, {"name": "x", "organization": ["a"]}),
        Row("create dataset", "POST", "/api/repos/create", 400, {"name": "x", "type": "dataset"}),
        Row("tag int", "POST", "/api/models/org/m/tag/main", 400, {"tag": 5}),
        Row("tag like a sha", "POST", "/api/models/org/m/tag/main", 400, {"tag": "a" * 40}),
        Row("tag exists", "POST", "/api/models/org/m/tag/main", 409, {"tag": "v1"}),
        Row("delete main", "DELETE", "/api/models/org/m/branch/main", 403),
        Row("commit no header", "POST", "/api/models/org/m/commit/main", 400, b'{"key": "file"}'),
        Row("commit header not dict", "POST", "/api/models/org/m/commit/main", 400, b'{"key": "header", "value": 1}'),
        Row("commit empty", "POST", "/api/models/org/m/commit/main", 400, b""),
        Row("commit op not dict", "POST", "/api/models/org/m/commit/main", 400, ndjson("x") + b"\n[1]"),
        Row(
            "commit op unknown",
            "POST",
            "/api/models/org/m/commit/main",
            400,
            ndjson("x", {"key": "x", "value": {"path": "a"}}),
        ),
        Row(
            "commit bad base64",
            "POST",
            "/api/models/org/m/commit/main",
            400,
            ndjson("x", {"key": "file", "value": {"path": "a", "content": "!!", "encoding": "base64"}}),
        ),
        Row(
            "commit content int",
            "POST",
            "/api/models/org/m/commit/main",
            400,
            ndjson("x", {"key": "file", "value": {"path": "a", "content": 5}}),
        ),
        Row("commit to a tag", "POST", "/api/models/org/m/commit/v1", 400, ndjson("x", add_file("b", b"1"))),
        Row("commit bad parent", "POST", "/api/models/org/m/commit/main", 400, ndjson("x", parent="zz")),
        Row("commit PR", "POST", "/api/models/org/m/commit/main?create_pr=1", 400, ndjson("x", add_file("b", b"1"))),
        Row(
            "lfs missing object",
            "POST",
            "/api/models/org/m/commit/main",
            422,
            ndjson("x", {"key": "lfsFile", "value": {"path": "w.bin", "oid": oid, "size": 1}}),
        ),
        Row(
            "lfs batch objects not list",
            "POST",
            "/org/m.git/info/lfs/objects/batch",
            400,
            {"operation": "upload", "objects": 1},
        ),
        Row(
            "lfs batch object int",
            "POST",
            "/org/m.git/info/lfs/objects/batch",
            400,
            {"operation": "upload", "objects": [1]},
        ),
        Row(
            "lfs download op",
            "POST",
            "/org/m.git/info/lfs/objects/batch",
            400,
            {"operation": "download", "objects": []},
        ),
        Row("lfs verify junk", "POST", "/org/m.git/info/lfs/objects/verify", 400, {"oid": 1}),
        Row("lfs upload no sig", "PUT", f"/org/m.git/info/lfs/objects/upload/{oid}/1", 403, b"x"),
        Row("lfs upload bad size", "PUT", f"/org/m.git/info/lfs/objects/upload/{oid}/-1", 400, b"x"),
        Row("preupload files int", "POST", "/api/models/org/m/preupload/main", 400, {"files": 1}),
        Row(
            "preupload size str",
            "POST",
            "/api/models/org/m/preupload/main",
            400,
            {"files": [{"path": "a", "size": "1"}]},
        ),
        Row(
            "paths-info paths int",
            "POST",
            "/api/models/org/m/paths-info/main",
            400,
            {"paths": 1},
            {"Content-Type": "application/json"},
        ),
        Row("paths-info non-utf8 form", "POST", "/api/models/org/m/paths-info/main", 200, b"paths=%ff%fe"),
        Row("tree limit junk", "GET", "/api/models/org/m/tree/main?limit=abc", 400),
        Row("tree negative cursor", "GET", "/api/models/org/m/tree/main?cursor=-5", 200),
        Row("tree missing folder", "GET", "/api/models/org/m/tree/main/nope", 404),
        Row("range junk", "GET", "/org/m/resolve/main/a.txt", 200, None, {"Range": "bytes=x-y"}),
        Row("range outside", "GET", "/org/m/resolve/main/a.txt", 416, None, {"Range": "bytes=99-"}),
        Row("resolve missing", "GET", "/org/m/resolve/main/nope.txt", 404),
        Row("bad percent-encoding", "GET", "/api/models/org/%ff", 400),
        Row("datasets", "GET", "/api/datasets/org/m", 404),
        Row("unknown endpoint", "GET", "/api/nope", 404),
        Row("page of a missing repo", "GET", "/org/nope", 404),
        Row("validate-yaml not a string", "POST", "/api/validate-yaml", 400, {"content": 5}),
        Row("validate-yaml alias bomb", "POST", "/api/validate-yaml", 400, {"content": BOMB}),
        Row("validate-yaml self alias", "POST", "/api/validate-yaml", 400, {"content": "---\na: &a [*a]\n---\n"}),
        Row(
            "validate-yaml python tag",
            "POST",
            "/api/validate-yaml",
            400,
            {"content": "---\na: !!python/name:os.system\n---\n"},
        ),
        Row("validate-yaml date", "POST", "/api/validate-yaml", 200, {"content": "---\ndate: 2024-01-02\n---\n"}),
        Row(
            "validate-yaml huge",
            "POST",
            "/api/validate-yaml",
            400,
            {"content": "---\na: '" + "x" * (70 << 10) + "'\n---\n"},
        ),
    ]
    # -- model_info 500 before for dates, !!binary, !!set and `tags: 5`; the alias bomb answered megabytes
    table += [Row(f"model_info card {name}", "GET", f"/api/models/org/card-{name}", 200) for name in CARDS]
    table += [Row(f"page card {name}", "GET", f"/org/card-{name}", 200) for name in CARDS]
    return table


def test_hostile_table_gets_the_expected_status_and_never_a_5xx(hub: HubServer) -> None:
    HfApi(endpoint=hub.url, token=False).create_tag("org/m", tag="v1")
    got, unexplained = [], []
    for row in rows(hub):
        status, headers, body = request(hub, row.method, row.path, row.body, row.headers)
        got.append((row.name, status, row.status))
        if status >= 400 and not (
            body.startswith(b"{") and "error" in json.loads(body) and headers.get("X-Error-Message")
        ):
            unexplained.append((row.name, status, body[:80]))  # every refusal says why, as the Hub does
    server_errors = [g for g in got if g[1] >= 500]
    wrong = [g for g in got if g[1] != g[2]]
    assert not server_errors, f"5xx answers (name, got, expected): {server_errors}"
    assert not wrong, f"unexpected statuses (name, got, expected): {wrong}"
    assert not unexplained, f"refusals without a Hub-style JSON error: {unexplained}"
    # The cross-site and rebinding rows changed nothing.
    assert request(hub, "GET", "/org/m/resolve/main/a.txt")[2] == b"hello"
    refs = HfApi(endpoint=hub.url, token=False).list_repo_refs("org/m")
    assert {t.name for t in refs.tags} == {"v1"} and not HfApi(endpoint=hub.url, token=False).repo_exists("org/evil")


def test_model_info_serialises_every_card(hub: HubServer) -> None:
    for name, (_, tags) in CARDS.items():
        status, _, body = request(hub, "GET", f"/api/models/org/card-{name}")
        info = json.loads(body)
        assert status == 200 and info["tags"] == tags, (name, info.get("tags"))
        assert len(body) < 4096, (name, len(body))  # the alias bomb is not expanded into the answer
    date = json.loads(request(hub, "GET", "/api/models/org/card-date")[2])["cardData"]
    assert date == {"date": "2024-01-02", "tags": ["a"]}
    assert json.loads(request(hub, "GET", "/api/models/org/card-set")[2])["cardData"] == {"s": {"a": None, "b": None}}
    # huggingface_hub reads it (a 500 here broke snapshot_download and every later publish to the repo).
    assert HfApi(endpoint=hub.url, token=False).model_info("org/card-date").card_data.to_dict()["date"] == "2024-01-02"


def test_http2_request_line_is_a_client_error(hub: HubServer) -> None:
    port = int(hub.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    # http.server answers a request line it cannot parse without a status line (HTTP/0.9 style): the code is in the body.
    assert b"Error code: 400" in answer and b"505" not in answer


def test_health_is_anonymous(hub: HubServer) -> None:
    status, _, body = request(hub, "GET", "/api/health")
    health = json.loads(body)
    assert status == 200 and set(health) == {"status", "server", "instance"}
    assert str(hub.data_dir) not in body.decode() and health["instance"] == hub.instance_id


def test_private_repo_answers_like_a_missing_one_without_the_token(tmp_path: Path) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    with HubServer(tmp_path / "hub", token=TOKEN) as srv:
        HfApi(endpoint=srv.url, token=TOKEN).create_repo("org/secret", private=True)
        for path in (
            "/api/models/org/{}",
            "/api/models/org/{}/tree/main",
            "/org/{}/resolve/main/.gitattributes",
            "/org/{}",
        ):
            private = request(srv, "GET", path.format("secret"))
            missing = request(srv, "GET", path.format("nothing"))
            assert private[0] == missing[0] == 404, path
            assert private[2].replace(b"secret", b"nothing") == missing[2], path
            assert request(srv, "GET", path.format("secret"), headers=good)[0] == 200, path
        # With a token, a web page still cannot write: it does not have the token, and its Origin is refused.
        headers = {**good, "Origin": "http://evil.example"}
        assert request(srv, "POST", "/api/repos/create", {"name": "x", "organization": "org"}, headers)[0] == 403


def test_regular_file_cap_names_lfs(hub: HubServer) -> None:
    body = ndjson("big", add_file("big.txt", b"x" * (LFS_THRESHOLD + 1)))
    status, _, answer = request(hub, "POST", "/api/models/org/m/commit/main", body)
    assert status == 413 and "LFS" in json.loads(answer)["error"]
    # At the threshold it is still a regular file.
    ok = ndjson(
        "edge",
        {"key": "file", "value": {"path": "edge.txt", "content": base64.b64encode(b"y" * LFS_THRESHOLD).decode()}},
    )
    assert request(hub, "POST", "/api/models/org/m/commit/main", ok)[0] == 200
