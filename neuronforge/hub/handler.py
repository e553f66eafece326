"""The HTTP plumbing of the hub: the threaded server, request bodies and replies, Hub-style errors and auth.

Auth: with a token configured every write needs `Authorization: Bearer <token>` (compared with hmac.compare_digest);
reads of public repos stay open, private repos need the token too (without it they answer 404, exactly as a missing
repo does, so their names do not leak), and a wrong token is always refused (401), so a misconfigured client fails on
its first call instead of at the first write. Without a token the server trusts every caller on this machine, which is
why it binds 127.0.0.1 unless told otherwise, and why it refuses what only a browser page would send:
a write carrying another site's `Origin` (cross-site request forgery: a page's `text/plain` POST needs no preflight)
and any request whose `Host` is not this server's (DNS rebinding: evil.example resolving to 127.0.0.1).
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

from neuronforge.hub.listing import ListingCache
from neuronforge.hub.store import DISK_FULL_ERRNOS, HubStore, disk_full_error
from neuronforge.hub.validation import HubError, show

SERVER_NAME = "neuronforge-hub"
DEFAULT_USER = "neuronforge"  # whoami name, and the namespace of `create_repo("name")` without an organization
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")  # any other method is answered 405


class HubSettings(Protocol):
    """What request handlers read from the running server (`HubServer` provides it)."""

    store: HubStore
    token: str | None
    verbose: bool
    max_upload_bytes: int
    max_json_bytes: int
    instance_id: str  # answered by /api/health; `server_alive` compares it with the state file's
    allowed_hosts: frozenset[str]  # Host names a browser may use to reach this server (loopback, --host, --public-url)
    listings: ListingCache

    @property
    def url(self) -> str: ...

    def signed_upload_url(self, repo_id: str, oid: str, size: int) -> str: ...

    def check_upload_signature(self, repo_id: str, oid: str, size: int, query: dict[str, list[str]]) -> None: ...


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of 200 clients saw SYNs dropped and 60 s timeouts.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], hub: HubSettings, handler: type[BaseHTTPRequestHandler]):
        self.hub = hub
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


def bool_param(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def parse_json(data: bytes | str, what: str = "Request body") -> Any:
    """JSON from a client; malformed or absurdly nested input is the client's mistake (400), never a 500."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise HubError(400, f"{what} is not valid JSON (or is nested too deeply).") from None


def host_name(value: str) -> str | None:
    """The host name of a Host header or an Origin ('127.0.0.1:8742', '[::1]:80', 'http://x:1'), lowercased."""
    try:
        parts = urlsplit(value if "//" in value else f"//{value}")
        return parts.hostname
    except ValueError:
        return None


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

    def __getattr__(self, name: str) -> Any:
        # Any other method (OPTIONS, PATCH, FOO) gets a Hub-style 405 instead of http.server's 501.
        if name.startswith("do_"):
            return lambda: self._dispatch(name[3:])
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own protocol errors: an unsupported HTTP version is the client's mistake, not ours.
        if code == 505:
            code, message = 400, "Unsupported HTTP version: use HTTP/1.0 or HTTP/1.1."
        super().send_error(code, message, explain)

    @property
    def hub(self) -> HubSettings:
        return self.server.hub

    @property
    def store(self) -> HubStore:
        return self.server.hub.store

    def _dispatch(self, method: str) -> None:
        self._body_consumed = False
        self._body_started = False  # part of the body read: what is left cannot be skipped by its Content-Length
        self._responded = False
        try:
            if method not in METHODS:
                raise HubError(
                    405, f"Method {show(method)} is not supported here.", headers={"Allow": ", ".join(METHODS)}
                )
            split = urlsplit(self.path)
            self.query = parse_qs(split.query, keep_blank_values=True)
            # Split before unquoting: an encoded '%2F' stays inside its segment and is then rejected by validation.
            segments = [unquote(s, errors="strict") for s in split.path.split("/")[1:]]
            self._check_browser_request(method)
            self._route(method, segments)
        except HubError as err:
            self._send_error(err)
        except UnicodeDecodeError:
            self._send_error(HubError(400, "The URL is not valid UTF-8 once percent-decoded."))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
                # A full disk is a limit the client can act on (free space, retry): 413 saying so, not a 500 that
                # huggingface_hub retries five times over a 650 MB body.
                self._send_error(disk_full_error(self.store.free_bytes()))
            else:  # a bug or another disk error: report it, keep serving
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
        self._body_started = True
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
        return parse_json(self._read_body() or b"null")

    def _iter_lines(self, limit: int, limit_flag: str, max_line: int) -> Iterator[bytes]:
        """The body line by line as it arrives (NDJSON): memory holds one line, never the whole body."""
        buffer = bytearray()
        searched = 0
        for chunk in self._iter_body(limit, limit_flag):
            buffer += chunk
            del chunk
            while (end := buffer.find(b"\n", searched)) >= 0:
                with memoryview(buffer) as view:
                    held = [bytes(view[:end])]  # one copy, not a bytearray slice and then bytes
                # Drop the line from the buffer before handing it over (a fresh, small bytearray: deleting from
                # the front keeps the old allocation), so the body is in memory once, not twice.
                buffer = bytearray(memoryview(buffer)[end + 1 :])
                searched = 0
                yield held.pop()  # keeps no reference here while the caller works on the line
            searched = len(buffer)
            if len(buffer) > max_line:
                self.close_connection = True
                raise HubError(
                    413,
                    f"A line of the request body exceeds {max_line} bytes: files larger than this hub's LFS threshold "
                    "must be uploaded through LFS (the preupload answer says uploadMode 'lfs').",
                )
        if buffer:  # the last line has no newline
            held = [bytes(buffer)]
            del buffer
            yield held.pop()

    def _drain(self) -> None:
        if self._has_body():
            with contextlib.suppress(HubError):
                for _ in self._iter_body(self.hub.max_json_bytes, "--max-json-bytes"):
                    pass

    def _discard_body(self) -> None:
        """After an early answer: read a small unread body (so the client sees our reply, not a reset), else hang up."""
        if self.close_connection or self._body_started or "chunked" in self._transfer_encoding():
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
        if self._body_started and not self._body_consumed:
            self.close_connection = True  # answered mid-body: say so, the rest of it is never read
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

    # -- browsers and auth ---------------------------------------------------------------------------------------------

    def _check_browser_request(self, method: str) -> None:
        """Refuse what only a hostile web page sends: a foreign Host (DNS rebinding) without a token, and a write with
        another site's Origin (CSRF). huggingface_hub and curl send no Origin, and the loopback Host."""
        allowed = self.hub.allowed_hosts
        host = self.headers.get("Host")
        if self.hub.token is None and host is not None and host_name(host) not in allowed:
            raise HubError(
                403,
                f"Host {show(host)} is not this hub's name ({', '.join(sorted(allowed))}): refused, as a DNS-rebinding "
                "page would be. Reach it by one of those names, or start it with --public-url naming the host.",
            )
        origin = self.headers.get("Origin")
        if origin is not None and method not in ("GET", "HEAD") and not self._own_origin(origin):
            raise HubError(
                403,
                f"Cross-origin write refused (Origin {show(origin)}): this hub only takes writes from API clients "
                "(huggingface_hub, curl), never from a web page.",
            )

    def _own_origin(self, origin: str) -> bool:
        parts = urlsplit(origin)
        try:
            port = parts.port
        except ValueError:
            return False
        own_port = self.server.server_address[1]
        return parts.hostname in self.hub.allowed_hosts and port in (own_port, None) and parts.scheme in ("http",)

    def _supplied_token(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        return header[7:].strip() if header[:7].lower() == "bearer " else None

    def _authorize(self, *, write: bool) -> None:
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

    def _may_read(self, meta: dict[str, Any]) -> bool:
        """Whether this request may see the repo: public, or private with the token (no-token hubs trust everyone)."""
        return not meta.get("private") or self.hub.token is None or self._supplied_token() is not None

    def _authorize_read(self, repo_id: str) -> dict[str, Any]:
        self._authorize(write=False)  # a wrong token is refused (401) whatever the repo
        meta = self.store.repo_meta(repo_id) if self.store.repo_exists(repo_id) else None
        if meta is None or not self._may_read(meta):
            # The same answer for missing and private: without the token a private repo's name does not leak.
            raise HubError(404, f"Repository {repo_id} not found on this hub.", code="RepoNotFound")
        return meta
