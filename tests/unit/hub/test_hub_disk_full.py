"""A full disk under the hub is a 413 naming the free space and how to make room, never a 500.

Regression: publishing a Neuron chat repo put its 651 MB `weights/tp0_sharded_checkpoint.safetensors` while the
machine's disk was nearly full; the LFS upload hit `OSError: [Errno 28] No space left on device` mid-write and the
server answered 500, which huggingface_hub and then the publisher retried (5 x 651 MB) before failing with a
misleading "check that the endpoint is up". The rows below run against the real server on loopback; the disk is made
"full" by faking the free space the server sees (`shutil.disk_usage`) or by raising ENOSPC at a durable write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hub_testing import FaultyHubServer, add_file, ndjson, request
from huggingface_hub import HfApi
from test_publish import make_artifact

from neuronforge.hub.store import DISK_RESERVE_BYTES
from neuronforge.publish import HubPublishError, HubUnavailableError, Publisher

DATA = b"w" * 3000
OID = hashlib.sha256(DATA).hexdigest()
TIGHT = DISK_RESERVE_BYTES + 1000  # free bytes that fit a 1000-byte object but not DATA


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FaultyHubServer]:
    with FaultyHubServer(tmp_path / "hub") as srv:
        HfApi(endpoint=srv.url, token=False).create_repo("org/m")
        yield srv


def fake_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free))


def enospc_at(point: str) -> Callable[[str], None]:
    def hook(at: str) -> None:
        if at == point:
            raise OSError(errno.ENOSPC, "No space left on device")

    return hook


@dataclass
class Row:
    name: str
    method: str
    path: str | Callable[[FaultyHubServer], str]
    body: bytes | dict[str, Any] | None
    status: int
    free: int | None = None  # fake this many free bytes
    fault: str | None = None  # raise ENOSPC at this durable write ("blob", "commit", "refs")
    lfs_errors: list[int | None] | None = None  # for a batch: each object's error code (None: granted)


def batch(*sizes: int) -> dict[str, Any]:
    objects = [{"oid": hashlib.sha256(str(i).encode()).hexdigest(), "size": s} for i, s in enumerate(sizes)]
    return {"operation": "upload", "transfer": ["basic"], "objects": objects}


def upload_url(srv: FaultyHubServer) -> str:
    return srv.signed_upload_url("org/m", OID, len(DATA)).removeprefix(srv.url)


ROWS = [
    Row("batch: object larger than the free space", "POST", "/org/m.git/info/lfs/objects/batch", batch(3000), 200,
        free=TIGHT, lfs_errors=[413]),
    Row("batch: two objects fit one by one, not together", "POST", "/org/m.git/info/lfs/objects/batch",
        batch(600, 600), 200, free=TIGHT, lfs_errors=[None, 413]),
    Row("batch: plenty of space", "POST", "/org/m.git/info/lfs/objects/batch", batch(3000), 200, lfs_errors=[None]),
    Row("PUT: signed upload larger than the free space", "PUT", upload_url, DATA, 413, free=TIGHT),
    Row("PUT: ENOSPC while the upload lands", "PUT", upload_url, DATA, 413, fault="blob"),  # 500 before
    Row("commit: ENOSPC writing a regular file", "POST", "/api/models/org/m/commit/main",
        ndjson("c", add_file("a.txt", b"hello")), 413, fault="blob"),  # 500 before
    Row("commit: ENOSPC writing the commit object", "POST", "/api/models/org/m/commit/main",
        ndjson("c", add_file("a.txt", b"hello")), 413, fault="commit"),  # 500 before
    Row("PUT: after the disk has room again", "PUT", upload_url, DATA, 200),
]  # fmt: skip


def test_full_disk_table_answers_413_naming_the_space_never_a_5xx(
    hub: FaultyHubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = HfApi(endpoint=hub.url, token=False).model_info("org/m").sha
    got, unexplained = [], []
    for row in ROWS:
        with monkeypatch.context() as patch:
            if row.free is not None:
                fake_free(patch, row.free)
            hub.store.fault_hook = enospc_at(row.fault) if row.fault else None
            path = row.path(hub) if callable(row.path) else row.path
            status, headers, body = request(hub, row.method, path, row.body)
        hub.store.fault_hook = None
        got.append((row.name, status, row.status))
        if status == 413:
            message = json.loads(body)["error"]
            if not ("disk space" in message and "bytes free" in message and "--data-dir" in message):
                unexplained.append((row.name, message))
            assert headers["X-Error-Code"] == "InsufficientStorage", row.name
        if row.lfs_errors is not None:
            objects = json.loads(body)["objects"]
            codes = [obj.get("error", {}).get("code") for obj in objects]
            got[-1] = (row.name, (status, codes), (row.status, row.lfs_errors))
            for obj in objects:
                if "error" in obj and "disk space" not in obj["error"]["message"]:
                    unexplained.append((row.name, obj["error"]["message"]))
    assert not [g for g in got if g[1] != g[2]], f"(name, got, expected): {got}"
    assert not unexplained, unexplained
    # Nothing half-written stays: no partial upload in tmp/, the branch still at its old head.
    assert not list((hub.store.root / "tmp").iterdir())
    assert HfApi(endpoint=hub.url, token=False).model_info("org/m").sha == before
    assert hub.store.has_blob("org/m", OID, len(DATA))  # the last row stored it


def test_publish_to_a_full_hub_fails_at_once_with_the_reason(
    hub: FaultyHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = make_artifact(tmp_path / "art")  # its 1 MB model.onnx.data goes through LFS
    publisher = Publisher(endpoint=hub.url, max_retries=3, backoff_s=0.01)
    with monkeypatch.context() as patch:
        fake_free(patch, DISK_RESERVE_BYTES + 4096)
        hub.request_log.clear()
        with pytest.raises(HubPublishError) as err:
            publisher.publish(art, model_name="m", log=logging.getLogger("test"))
    assert not isinstance(err.value, HubUnavailableError)  # not retried as if the hub were down
    assert "Not enough disk space on this hub" in str(err.value) and "--data-dir" in str(err.value)
    assert not [p for m, p in hub.request_log if m == "PUT"]  # refused in the batch, before 1 MB was sent
    assert sum(p.endswith("/objects/batch") for _, p in hub.request_log) == 1
    # With room again the same artifact publishes.
    assert publisher.publish(art, model_name="m", log=logging.getLogger("test")).created_commit
