"""The hub's store: commits on a moved branch are refused, a crash mid-commit keeps the previous revision;
and the failure injection those tests (and the publishing tests) rely on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_testing import FaultyHubServer, add_file, ndjson, request
from huggingface_hub import HfApi


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FaultyHubServer]:
    # Overrides the conftest's plain server: these tests make the hub fail on purpose.
    with FaultyHubServer(tmp_path / "root" / "hub") as srv:
        yield srv


def test_parent_commit_mismatch_is_refused(hub: FaultyHubServer) -> None:
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
def test_crash_mid_commit_keeps_previous_revision(hub: FaultyHubServer, point: str) -> None:
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


def test_fail_next_injects_errors(hub: FaultyHubServer) -> None:
    hub.fail_next(2, status=503, path_prefix="/api/whoami")
    assert [request(hub, "GET", "/api/whoami-v2")[0] for _ in range(3)] == [503, 503, 200]
    assert request(hub, "GET", "/api/health")[0] == 200
    assert hub.failures_served == 2
