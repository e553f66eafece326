"""Test doubles and raw-HTTP helpers for the hub tests.

`FaultyHubServer` is a `HubServer` that tests can make fail: `fail_next` answers the next requests with an HTTP error
(retry tests), its store's `fault_hook` simulates a crash just before a durable write (crash-safety tests), and
`request_log` records what a client actually sent. Production code carries none of this.
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from neuronforge.hub import HubError, HubServer, HubStore
from neuronforge.hub.routes import Handler

TOKEN = "hub-test-token-7f3a"


class FaultyHubStore(HubStore):
    """A HubStore whose `fault_hook`, when set, is called with "blob", "commit" or "refs" just before each of those
    writes of a commit (and "blob" before an LFS upload lands): tests make it raise to simulate a crash at that point.
    """

    fault_hook: Callable[[str], None] | None = None

    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    def _write_blob(self, repo_id: str, sha256: str, data: bytes) -> None:
        self._fault("blob")
        super()._write_blob(repo_id, sha256, data)

    def _land_upload(self, tmp: str, final: Path) -> None:
        self._fault("blob")
        super()._land_upload(tmp, final)

    def _write_commit(self, repo_id: str, commit: dict[str, Any]) -> None:
        self._fault("commit")
        super()._write_commit(repo_id, commit)

    def _write_refs(self, repo_id: str, refs: dict[str, dict[str, str]]) -> None:
        self._fault("refs")
        super()._write_refs(repo_id, refs)


class _FaultyHandler(Handler):
    def _route(self, method: str, seg: list[str]) -> None:
        path = urlsplit(self.path).path
        self.hub.request_log.append((method, path))
        injected = self.hub._take_failure(path)
        if injected is not None:
            self._drain()
            raise HubError(injected, f"Injected failure (HTTP {injected}) for testing.")
        super()._route(method, seg)


@dataclass
class _Failure:
    remaining: int
    status: int
    path_prefix: str


class FaultyHubServer(HubServer):
    """A HubServer with failure injection and a request log, for tests."""

    handler_class = _FaultyHandler

    def __init__(self, data_dir: Path | str, *args: Any, **kwargs: Any):
        super().__init__(data_dir, *args, **kwargs)
        self.store: FaultyHubStore = FaultyHubStore(self.store.root, lfs_threshold=self.store.lfs_threshold)
        self.failures_served = 0
        # The last requests as (method, path without query): lets tests check what a client actually sent.
        self.request_log: collections.deque[tuple[str, str]] = collections.deque(maxlen=2000)
        self._failures: list[_Failure] = []
        self._failures_lock = threading.Lock()

    def fail_next(self, n: int, status: int = 500, path_prefix: str = "/") -> None:
        """Answer the next `n` requests whose path starts with `path_prefix` with HTTP `status` (for retry tests)."""
        with self._failures_lock:
            self._failures.append(_Failure(n, status, path_prefix))

    def clear_failures(self) -> None:
        with self._failures_lock:
            self._failures.clear()

    def _take_failure(self, path: str) -> int | None:
        with self._failures_lock:
            for rule in self._failures:
                if rule.remaining > 0 and path.startswith(rule.path_prefix):
                    rule.remaining -= 1
                    self.failures_served += 1
                    return rule.status
        return None


def request(
    srv: HubServer,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw request: http.client (unlike requests/urllib3) sends '..' path segments as written."""
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
