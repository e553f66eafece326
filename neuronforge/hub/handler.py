"""The HTTP plumbing of the hub: the threaded server, request bodies and replies, Hub-style errors and auth.

Auth: with a token configured every write needs `Authorization: Bearer <token>` (compared with hmac.compare_digest);
reads of public repos stay open, private repos need the token too, and a wrong token is always refused (401), so a
misconfigured client fails on its first call instead of at the first write. Without a token the server trusts every
caller, which is why it binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
import sys
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from neuronforge.hub.store import HubStore
from neuronforge.hub.validation import HubError

SERVER_NAME = "neuronforge-hub"
DEFAULT_USER = "neuronforge"  # whoami name, and the namespace of `create_repo("name")` without an organization


class HubSettings(Protocol):
    """What request handlers read from the running server (`HubServer` provides it)."""

    store: HubStore
    token: str | None
    verbose: bool
    max_upload_bytes: int
    max_json_bytes: int

    @property
    def url(self) -> str: ...

    def signed_upload_url(self, repo_id: str, oid: str, size: int) -> str: ...

    def check_upload_signature(self, repo_id: str, oid: str, size: int, query: dict[str, list[str]]) -> None: ...


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: HubSettings, handler: type[BaseHTTPRequestHandler]):
        self.hub = hub
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


def bool_param(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


class BaseHandler(BaseHTTPRequestHandler):
    """Request plumbing shared by every route: dispatch, bodies, replies, errors and auth.

    Subclasses implement `_route(method, segments)`; the route mixins in `routes_*.py` build on these helpers.
    """

    protocol_version = "HTTP/1.1"  # keep-alive: huggingface_hub reuses one session for dozens of small calls
    server_version = f"{SERVER_NAME}/1"
    timeout = 120  # idle keep-alive connections give their thread back
    server: HubHTTPServer
    query: dict[str, list[str]]

    # -- plumbing ------------------------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.hub.verbose:
            # The request line only: never headers (Authorization), and no query string (upload signatures).
            sys.stderr.write(f"{self.address_string()} {self.command} {urlsplit(self.path).path} {args[1:]!s}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @property
    def hub(self) -> HubSettings:
        return self.server.hub

    @property
    def store(self) -> HubStore:
        return self.server.hub.store

    def _dispatch(self, method: str) -> None:
        self._body_consumed = False
        self._responded = False
        try:
            split = urlsplit(self.path)
            self.query = parse_qs(split.query, keep_blank_values=True)
            # Split before unquoting: an encoded '%2F' stays inside its segment and is then rejected by validation.
            segments = [unquote(s, errors="strict") for s in split.path.split("/")[1:]]
            self._route(method, segments)
        except HubError as err:
            self._send_error(err)
        except UnicodeDecodeError:
            self._send_error(HubError(400, "The URL is not valid UTF-8 once percent-decoded."))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug or a disk error: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            self._send_error(HubError(500, f"Internal error: {type(exc).__name__}: {exc}"))
        finally:
            if not self._body_consumed and self._has_body():
                self._discard_body()

    def _route(self, method: str, seg: list[str]) -> None:
        raise NotImplementedError

    def _has_body(self) -> bool:
        length = (self.headers.get("Content-Length") or "0").strip()
        # A malformed length counts as a body we cannot skip reliably: the connection gets closed.
        return length != "0" or "chunked" in self._transfer_encoding()

    def _transfer_encoding(self) -> str:
        return (self.headers.get("Transfer-Encoding") or "").lower()

    def _iter_body(self, limit: int, limit_flag: str) -> Iterator[bytes]:
        too_big = HubError(
            413,
            f"Request body exceeds this server's limit of {limit} bytes; restart it with a larger {limit_flag}.",
        )
        if "chunked" in self._transfer_encoding():
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise HubError(400, "Malformed chunked request body.") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._body_consumed = True
                    return
                total += size
                if total > limit:
                    self.close_connection = True
                    raise too_big
                yield from self._read_exact(size)
                self.rfile.readline(16)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self.close_connection = True
                raise HubError(400, "Invalid Content-Length.") from None
            if length > limit:
                self.close_connection = True
                raise too_big
            yield from self._read_exact(length)
            self._body_consumed = True

    def _read_exact(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                self.close_connection = True
                raise HubError(400, "Request body ended early.")
            remaining -= len(chunk)
            yield chunk

    def _read_body(self) -> bytes:
        return b"".join(self._iter_body(self.hub.max_json_bytes, "--max-json-bytes"))

    def _read_json(self) -> Any:
        body = self._read_body()
        try:
            return json.loads(body or b"null")
        except ValueError:
            raise HubError(400, "Request body is not valid JSON.") from None

    def _drain(self) -> None:
        if self._has_body():
            with contextlib.suppress(HubError):
                for _ in self._iter_body(self.hub.max_json_bytes, "--max-json-bytes"):
                    pass

    def _discard_body(self) -> None:
        """After an early answer: read a small unread body (so the client sees our reply, not a reset), else hang up."""
        if self.close_connection or "chunked" in self._transfer_encoding():
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 16 << 20:
                raise ValueError
            for _ in self._read_exact(length):
                pass
        except (ValueError, HubError, OSError):
            self.close_connection = True

    def _send(self, status: int, body: bytes, headers: dict[str, str], content_type: str) -> None:
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers or {}, "application/json; charset=utf-8")

    def _send_error(self, err: HubError) -> None:
        if self._responded:
            self.close_connection = True
            return
        # Header values must be one latin-1 line; the JSON body keeps the full message.
        one_line = " ".join(err.message.split())[:1000].encode("latin-1", "replace").decode("latin-1")
        headers = {"X-Error-Message": one_line, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._send_json({"error": err.message}, err.status, headers)

    # -- auth ----------------------------------------------------------------------------------------------------------

    def _supplied_token(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        return header[7:].strip() if header[:7].lower() == "bearer " else None

    def _authorize(self, *, write: bool, private: bool = False) -> None:
        expected = self.hub.token
        if expected is None:
            return
        supplied = self._supplied_token()
        if supplied is not None:
            if not hmac.compare_digest(supplied.encode(), expected.encode()):
                # The Hub's exact wording: huggingface_hub then reports it as an auth error, not "repo not found".
                raise HubError(401, "Invalid credentials in Authorization header")
            return
        if write:
            raise HubError(401, "Authentication required: this hub needs a token for writes (Authorization: Bearer).")
        if private:
            raise HubError(401, "This repository is private: authenticate with the hub's token.", code="RepoNotFound")

    def _authorize_read(self, repo_id: str) -> dict[str, Any]:
        meta = self.store.repo_meta(repo_id) if self.store.repo_exists(repo_id) else None
        self._authorize(write=False, private=bool(meta and meta.get("private")))
        if meta is None:
            raise HubError(404, f"Repository {repo_id} not found on this hub.", code="RepoNotFound")
        return meta
