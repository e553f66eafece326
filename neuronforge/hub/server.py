"""`HubServer`: the loopback Hub served from a background thread (start/stop, its URL, signed LFS upload URLs)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from neuronforge.hub.handler import SERVER_NAME, HubHTTPServer
from neuronforge.hub.listing import ListingCache
from neuronforge.hub.objects import LFS_THRESHOLD_BYTES
from neuronforge.hub.routes import Handler
from neuronforge.hub.store import HubStore
from neuronforge.hub.validation import HubError
from neuronforge.locks import LockBusy, file_lock

DEFAULT_MAX_UPLOAD_BYTES = 2 << 30  # one LFS PUT
DEFAULT_MAX_JSON_BYTES = 256 << 20  # any other body (the NDJSON commit carries small files base64-encoded)
UPLOAD_URL_TTL_S = 3600
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
SERVING_LOCK = ".serving.lock"  # every live server over a data dir holds it shared; tmp/ is cleaned by the only one


class HubServer:
    """The loopback Hub, served from a background thread.

    >>> with HubServer(tmp_path / "hub") as srv:
    ...     HfApi(endpoint=srv.url).create_repo("me/model")
    """

    handler_class: type[BaseHTTPRequestHandler] = Handler

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
        lfs_threshold: int = LFS_THRESHOLD_BYTES,
        public_url: str | None = None,
        verbose: bool = False,
    ):
        self.store = HubStore(Path(data_dir), lfs_threshold=lfs_threshold)
        self.host = host
        self.port = port
        self.token = token or None
        self.max_upload_bytes = max_upload_bytes
        self.max_json_bytes = max_json_bytes
        self.verbose = verbose
        self._public_url = public_url.rstrip("/") if public_url else None
        self._secret = secrets.token_bytes(32)  # signs LFS upload URLs; new per process, URLs live an hour at most
        self.instance_id = secrets.token_hex(16)  # what /api/health shows instead of the data dir and pid
        self.allowed_hosts = LOOPBACK_NAMES | {h.strip("[]").lower() for h in (host, _host_of(public_url)) if h}
        self._httpd: HubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = contextlib.ExitStack()
        self.listings = ListingCache()  # tree listings and last-change maps per commit (routes_files)

    @property
    def data_dir(self) -> Path:
        return self.store.root

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not running: call start() or use it as a context manager.")
        if self._public_url:
            return self._public_url
        host, port = self._httpd.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def start(self) -> HubServer:
        if self._httpd is not None:
            return self
        if self.token is None and self.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"warning: {SERVER_NAME} listens on {self.host} without a token: anyone who can reach it can write.",
                file=sys.stderr,
            )
        self._httpd = HubHTTPServer((self.host, self.port), self, self.handler_class)
        self._hold_data_dir()
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name=SERVER_NAME, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None
        self._serving.close()

    def _hold_data_dir(self) -> None:
        """Clean tmp/ when no other server serves this data dir (a killed upload leaves its partial file there),
        then mark the data dir as served for as long as this server runs."""
        lock = self.data_dir / SERVING_LOCK
        with contextlib.suppress(LockBusy), file_lock(lock, blocking=False):
            self.store.clean_tmp()
        self._serving.enter_context(file_lock(lock, shared=True))

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- signed upload URLs --------------------------------------------------------------------------------------------

    def _signature(self, repo_id: str, oid: str, size: int, expires: int) -> str:
        message = f"{repo_id}\n{oid}\n{size}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed_upload_url(self, repo_id: str, oid: str, size: int) -> str:
        expires = int(time.time()) + UPLOAD_URL_TTL_S
        query = urlencode({"expires": expires, "sig": self._signature(repo_id, oid, size, expires)})
        return f"{self.url}/{repo_id}.git/info/lfs/objects/upload/{oid}/{size}?{query}"

    def check_upload_signature(self, repo_id: str, oid: str, size: int, query: dict[str, list[str]]) -> None:
        try:
            expires = int((query.get("expires") or ["0"])[-1])
        except ValueError:
            expires = 0
        supplied = (query.get("sig") or [""])[-1].encode("utf-8", "replace")  # str compare_digest refuses non-ASCII
        expected = self._signature(repo_id, oid, size, expires).encode()
        if expires < time.time() or not hmac.compare_digest(supplied, expected):
            raise HubError(403, "Upload URL is invalid or expired: request a new one from the LFS batch endpoint.")


def _host_of(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None
