"""The repo web page at /<org>/<repo> (where publish's repo_url points): card, files with sizes, commits, tags.

Before, that URL answered {"error": "No such endpoint"}. The browser test (tests/e2e/test_hub_page_browser.py)
renders it in Chromium; these check the HTML over plain HTTP.
"""

from __future__ import annotations

import os
from html.parser import HTMLParser

from hub_testing import TOKEN, request
from huggingface_hub import CommitOperationAdd, HfApi

from neuronforge.hub import HubServer
from neuronforge.hub.page import format_size

CARD = b"""---
tags: [onnx, neuronforge]
created: 2024-05-01
---
# Tiny model

Some **bold** text and a table:

| metric | value |
|---|---|
| nDCG@10 | 0.71 |

<script>alert("card")</script>
[click](javascript:alert(1))
"""


class Elements(HTMLParser):
    """Elements by id, and the text inside each (nested text included)."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.text: dict[str, str] = {}
        self.rows: list[dict[str, str | None]] = []
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("meta", "br", "img", "hr", "input", "link"):
            return
        self._open.append((tag, found.get("id")))
        if found.get("id"):
            self.attrs[found["id"]] = found
            self.text.setdefault(found["id"], "")
        if any(key.startswith("data-") for key in found):
            self.rows.append({"tag": tag, **found})

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.text[element_id] += data


def parse(body: bytes) -> Elements:
    parser = Elements()
    parser.feed(body.decode())
    return parser


def test_repo_page_shows_card_files_commits_and_tags(hub: HubServer) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    api.create_repo("org/tiny")
    weights = os.urandom(1_500_000)
    first = api.create_commit(
        "org/tiny",
        operations=[CommitOperationAdd("README.md", CARD), CommitOperationAdd("onnx/model.onnx", weights)],
        commit_message="Publish tiny (onnx, ck-0011)",
    )
    api.create_tag("org/tiny", tag="ck-0011", revision=first.oid)
    second = api.upload_file(repo_id="org/tiny", path_in_repo="config.json", path_or_fileobj=b'{"a": 1}')

    status, headers, body = request(hub, "GET", "/org/tiny")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert (
        "script-src" not in headers["Content-Security-Policy"]
        and "default-src 'none'" in headers["Content-Security-Policy"]
    )
    page = parse(body)
    assert page.text["repo-id"] == "org/tiny" and page.text["commit-sha"] == second.oid
    card = page.text["card"]
    assert "Tiny model" in card and "nDCG@10" in card and "0.71" in card
    assert b"<strong>bold</strong>" in body and b"<table>" in body
    assert b"<script>" not in body and b"&lt;script&gt;" in body and b'href="javascript' not in body  # inert text
    files = {r["data-path"]: r for r in page.rows if r["tag"] == "tr"}
    assert set(files) == {".gitattributes", "README.md", "onnx/model.onnx", "config.json"}
    assert b'data-bytes="1500000" title="1500000 bytes">1.5 MB<' in body and format_size(1_500_000) == "1.5 MB"
    assert b'data-bytes="8" title="8 bytes">8 B<' in body  # config.json
    commits = [r["data-sha"] for r in page.rows if r["tag"] == "li" and "data-sha" in r]
    assert commits[:2] == [second.oid, first.oid] and len(commits) == 3  # + the initial commit
    assert "Publish tiny (onnx, ck-0011)" in page.text["commits"]
    tags = [r["data-tag"] for r in page.rows if "data-tag" in r]
    assert tags == ["ck-0011"] and first.oid[:12] in page.text["tags"]

    # A tag's page shows that revision; commit URLs (what huggingface_hub's commit_url names) open too.
    at_tag = parse(request(hub, "GET", "/org/tiny/tree/ck-0011")[2])
    assert at_tag.text["commit-sha"] == first.oid and at_tag.text["revision"] == "ck-0011"
    assert "config.json" not in {r.get("data-path") for r in at_tag.rows}
    assert parse(request(hub, "GET", f"/org/tiny/commit/{first.oid}")[2]).text["commit-sha"] == first.oid
    # The front page lists the repo.
    assert 'data-repo="org/tiny"' in request(hub, "GET", "/")[2].decode()


def test_private_repo_page_needs_the_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with HubServer(tmp_path / "hub", token=TOKEN) as srv:
        HfApi(endpoint=srv.url, token=TOKEN).create_repo("org/secret", private=True)
        assert request(srv, "GET", "/org/secret")[0] == 404
        assert request(srv, "GET", "/org/secret", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert b"org/secret" not in request(srv, "GET", "/")[2]  # not listed to anonymous visitors
