"""A small Hugging Face Hub-compatible server on loopback: the pipeline's embedded default publishing target.

No Hub server can be installed here (olah is read-only, KohakuHub needs Docker/lakeFS), so this module speaks the
subset of the Hub HTTP API that `huggingface_hub` 0.36 uses to create repos, commit (NDJSON + LFS), tag and download:

    GET  /api/whoami-v2                                GET  /api/health (liveness, used by `ensure_running`)
    POST /api/repos/create      DELETE /api/repos/delete      POST /api/validate-yaml
    GET  /api/models/{repo}[/revision/{rev}]           GET  /api/models/{repo}/tree/{rev}[/{path}]
    POST /api/models/{repo}/paths-info/{rev}           GET  /api/models/{repo}/refs
    GET  /api/models/{repo}/commits/{rev}              POST|DELETE /api/models/{repo}/branch/{branch}
    POST /api/models/{repo}/tag/{rev}  DELETE /api/models/{repo}/tag/{tag}
    POST /api/models/{repo}/preupload/{rev}            POST /api/models/{repo}/commit/{branch}
    POST /{repo}.git/info/lfs/objects/batch|verify     PUT  /{repo}.git/info/lfs/objects/upload/{oid}/{size}?sig=
    GET|HEAD /{repo}/resolve/{rev}/{path}              (ETag, X-Repo-Commit, X-Linked-Size/Etag, Range → 206)

Only model repos exist here. Storage (under the data dir) is git-like and crash-safe:

    repos/{ns}/{name}/repo.json             id, private, createdAt
    repos/{ns}/{name}/refs.json             {"branches": {name: sha}, "tags": {name: sha}}
    repos/{ns}/{name}/commits/{sha}.json    immutable snapshot: parent, full tree {path: sha256/size/lfs/oid}, message
    repos/{ns}/{name}/blobs/{aa}/{sha256}   content-addressed file bodies (regular and LFS alike)

A commit writes its blobs, then its commit object, then replaces refs.json atomically: a crash at any point leaves the
previous revision (and every tag) exactly as it was; at worst an unreferenced blob or commit object is left behind.

Auth: with a token configured every write needs `Authorization: Bearer <token>` (compared with hmac.compare_digest);
reads of public repos stay open, private repos need the token too, and a wrong token is always refused (401), so a
misconfigured client fails on its first call instead of at the first write. Without a token the server trusts every
caller, which is why it binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from neuronforge.artifacts import write_bytes_atomic, write_json_atomic
from neuronforge.locks import file_lock

SERVER_NAME = "neuronforge-hub"
STATE_FILE = "server.json"
DEFAULT_USER = "neuronforge"  # whoami name, and the namespace of `create_repo("name")` without an organization
TOKEN_ENV = "NEURONFORGE_HUB_TOKEN"
LFS_THRESHOLD_BYTES = 10 * 1024 * 1024  # the Hub stores anything above 10 MB in LFS whatever its name
DEFAULT_MAX_UPLOAD_BYTES = 2 << 30  # one LFS PUT
DEFAULT_MAX_JSON_BYTES = 256 << 20  # any other body (the NDJSON commit carries small files base64-encoded)
PAGE_SIZE = 1000
UPLOAD_URL_TTL_S = 3600
STATE_WATCH_S = 2.0  # how often a detached server checks that its state file still names it
# The Hub's default .gitattributes, plus the binaries our exporters write (.data = ONNX external weights, .neff, .gguf).
DEFAULT_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz *.onnx "
    "*.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar *.tflite *.tgz "
    "*.wasm *.xz *.zip *.zst *tfevents* *.data *.neff *.gguf"
).split()

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_REV_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class HubError(Exception):
    """An error answered to the client as the Hub does: JSON `{"error": ...}` plus X-Error-Message/X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


# ---------------------------------------------------------------------------------------------------------------------
# Validation: everything that becomes part of a filesystem path, a ref name or a tree key goes through these.


def validate_repo_id(repo_id: str) -> str:
    parts = repo_id.split("/")
    if (
        len(parts) != 2
        or not all(_NAME_RE.fullmatch(part) for part in parts)
        or ".." in repo_id
        or repo_id.endswith(".git")
    ):
        raise HubError(
            400,
            f"Invalid repo id {_show(repo_id)}: expected 'namespace/name' made of letters, digits, '-', '_' and '.' "
            "(starting with a letter or digit, no '..', at most 96 characters each).",
        )
    return repo_id


def validate_revision(revision: str) -> str:
    segments = revision.split("/")
    if (
        not revision
        or len(revision) > 256
        or ".." in revision
        or not all(_REV_SEGMENT_RE.fullmatch(s) and not s.endswith(".lock") for s in segments)
    ):
        raise HubError(
            400,
            f"Invalid revision {_show(revision)}: use a branch or tag name (letters, digits, '-', '_', '.', '/'-separated"
            " segments, no '..') or a 40-hex commit sha.",
        )
    return revision


def validate_path_in_repo(path: str) -> str:
    parts = path.split("/")
    if (
        not path
        or len(path) > 1024
        or "\\" in path
        or path.startswith("/")
        or any(ord(c) < 32 or ord(c) == 127 for c in path)
        or any(part in ("", ".", "..") for part in parts)
        or parts[0] == ".git"
    ):
        raise HubError(
            400,
            f"Invalid path in repo {_show(path)}: use a relative POSIX path without '..'/'.' segments, backslashes, "
            "control characters or a leading '/'.",
        )
    return path


def _show(value: str) -> str:
    """A short, printable rendering of untrusted input for error messages."""
    return repr(value[:120])


def _bool_param(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def _utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob, which is what the Hub reports as a regular file's oid/ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def default_gitattributes() -> bytes:
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS).encode()


def lfs_patterns(gitattributes: bytes) -> list[tuple[str, bool]]:
    """(pattern, is_lfs) rules from a .gitattributes file, in order (the last matching rule wins, as in git)."""
    rules = []
    for line in gitattributes.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        attrs = fields[1:]
        if "filter=lfs" in attrs:
            rules.append((fields[0], True))
        elif "-filter" in attrs or "!filter" in attrs:
            rules.append((fields[0], False))
    return rules


def matches_lfs(path: str, rules: list[tuple[str, bool]]) -> bool:
    result = False
    for pattern, is_lfs in rules:
        # git: a pattern without '/' matches the file name at any depth, one with '/' the path from the root.
        target = path if "/" in pattern else path.rsplit("/", 1)[-1]
        if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
            result = is_lfs
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Storage


@dataclass(frozen=True)
class Entry:
    """One file in a commit's tree."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git blob id: of the content for regular files, of the LFS pointer for LFS files

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Entry:
        return cls(sha256=raw["sha256"], size=raw["size"], lfs=raw["lfs"], oid=raw["oid"])

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "lfs": self.lfs, "oid": self.oid}

    @property
    def etag(self) -> str:
        # What huggingface_hub compares against its local oid: sha256 for LFS files, git blob sha1 otherwise.
        return self.sha256 if self.lfs else self.oid


class HubStore:
    """Repos, commits, refs and blobs on disk. Knows nothing about HTTP; raises HubError for client mistakes.

    `fault_hook`, when set, is called with "blob", "commit" or "refs" just before each of those writes of a commit
    (and "blob" before an LFS upload lands): tests make it raise to simulate a crash at that point.
    """

    def __init__(self, root: Path, *, lfs_threshold: int = LFS_THRESHOLD_BYTES):
        self.root = Path(root).resolve()
        self.lfs_threshold = lfs_threshold
        self.fault_hook: Callable[[str], None] | None = None
        for sub in ("repos", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------------------------------------

    def _inside(self, path: Path) -> Path:
        # Second line of defence after validation: refuse anything that resolves outside the data dir (symlinks too).
        if not path.resolve().is_relative_to(self.root):
            raise HubError(400, "Refusing a path outside the hub's data directory.")
        return path

    def repo_dir(self, repo_id: str) -> Path:
        validate_repo_id(repo_id)
        return self._inside(self.root / "repos" / repo_id)

    def _blob_path(self, repo_id: str, sha256: str) -> Path:
        if not _SHA256_RE.fullmatch(sha256):
            raise HubError(400, f"Invalid sha256 oid {_show(sha256)}: expected 64 lowercase hex characters.")
        return self._inside(self.repo_dir(repo_id) / "blobs" / sha256[:2] / sha256)

    def _commit_path(self, repo_id: str, sha: str) -> Path:
        if not _SHA1_RE.fullmatch(sha):
            raise HubError(400, f"Invalid commit sha {_show(sha)}.")
        return self._inside(self.repo_dir(repo_id) / "commits" / f"{sha}.json")

    @contextlib.contextmanager
    def lock(self, repo_id: str) -> Iterator[None]:
        """Serialise writers of one repo across threads and processes (flock on a sibling lock file)."""
        repo_dir = self.repo_dir(repo_id)
        repo_dir.parent.mkdir(parents=True, exist_ok=True)
        # Names cannot start with '.', so the lock file never collides with a repo folder.
        with file_lock(self._inside(repo_dir.parent / f".{repo_dir.name}.lock")):
            yield

    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    # -- repos ---------------------------------------------------------------------------------------------------------

    def repo_exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "repo.json").is_file()

    def repo_meta(self, repo_id: str) -> dict[str, Any]:
        path = self.repo_dir(repo_id) / "repo.json"
        if not path.is_file():
            raise HubError(404, f"Repository {repo_id} not found on this hub.", code="RepoNotFound")
        return json.loads(path.read_text())

    def create_repo(self, repo_id: str, *, private: bool, author: str) -> bool:
        """Create a repo with the Hub's initial commit (.gitattributes); False when it already exists."""
        with self.lock(repo_id):
            if self.repo_exists(repo_id):
                return False
            # Build the whole repo in tmp/ and rename it into place, so a crash never leaves a half-created repo.
            staging = Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix="repo-"))
            try:
                content = default_gitattributes()
                sha256 = hashlib.sha256(content).hexdigest()
                blob = staging / "blobs" / sha256[:2] / sha256
                blob.parent.mkdir(parents=True)
                blob.write_bytes(content)
                tree = {".gitattributes": Entry(sha256, len(content), False, git_blob_oid(content)).to_json()}
                commit = self._make_commit(parent=None, tree=tree, title="initial commit", message="", author=author)
                write_json_atomic(staging / "commits" / f"{commit['id']}.json", commit)
                write_json_atomic(staging / "refs.json", {"branches": {"main": commit["id"]}, "tags": {}})
                write_json_atomic(staging / "repo.json", {"id": repo_id, "private": private, "createdAt": _utcnow()})
                target = self.repo_dir(repo_id)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():  # leftovers of a crashed delete: repo.json is gone, so it is not a repo
                    shutil.rmtree(target)
                os.replace(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return True

    def delete_repo(self, repo_id: str) -> None:
        with self.lock(repo_id):
            self.repo_meta(repo_id)
            target = self.repo_dir(repo_id)
            # Rename first so readers never see a half-deleted repo.
            trash = Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix="deleted-"))
            os.replace(target, trash / "repo")
            shutil.rmtree(trash, ignore_errors=True)

    # -- refs and commits ----------------------------------------------------------------------------------------------

    def refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        self.repo_meta(repo_id)
        return json.loads((self.repo_dir(repo_id) / "refs.json").read_text())

    def _write_refs(self, repo_id: str, refs: dict[str, dict[str, str]]) -> None:
        self._fault("refs")
        write_json_atomic(self.repo_dir(repo_id) / "refs.json", refs)

    def resolve(self, repo_id: str, revision: str) -> str:
        """Branch, tag or full commit sha → commit sha (404 RevisionNotFound otherwise)."""
        refs = self.refs(repo_id)
        validate_revision(revision)
        if revision in refs["branches"]:
            return refs["branches"][revision]
        if revision in refs["tags"]:
            return refs["tags"][revision]
        if _SHA1_RE.fullmatch(revision) and self._commit_path(repo_id, revision).is_file():
            return revision
        raise HubError(404, f"Revision {_show(revision)} not found in {repo_id}.", code="RevisionNotFound")

    def commit(self, repo_id: str, sha: str) -> dict[str, Any]:
        path = self._commit_path(repo_id, sha)
        if not path.is_file():
            raise HubError(404, f"Commit {sha} not found in {repo_id}.", code="RevisionNotFound")
        return json.loads(path.read_text())

    def tree(self, repo_id: str, sha: str) -> dict[str, Entry]:
        return {path: Entry.from_json(raw) for path, raw in self.commit(repo_id, sha)["tree"].items()}

    def history(self, repo_id: str, sha: str) -> list[dict[str, Any]]:
        commits = []
        current: str | None = sha
        while current is not None:
            commit = self.commit(repo_id, current)
            commits.append(commit)
            current = commit["parent"]
        return commits

    @staticmethod
    def _make_commit(
        *, parent: str | None, tree: dict[str, Any], title: str, message: str, author: str
    ) -> dict[str, Any]:
        body = {"parent": parent, "tree": tree, "title": title, "message": message, "author": author, "date": _utcnow()}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return {"id": hashlib.sha1(canonical).hexdigest(), **body}

    def set_ref(self, repo_id: str, kind: str, name: str, sha: str | None, *, create_only: bool = False) -> None:
        """Create/move (sha) or delete (None) a branch or tag, atomically."""
        validate_revision(name)
        if _SHA1_RE.fullmatch(name):
            raise HubError(400, f"Ref name {name} looks like a commit sha; pick another name.")
        with self.lock(repo_id):
            refs = self.refs(repo_id)
            table = refs[kind]
            label = "Branch" if kind == "branches" else "Tag"
            if sha is None:
                if name not in table:
                    raise HubError(404, f"{label} {name} not found in {repo_id}.", code="RevisionNotFound")
                if kind == "branches" and name == "main":
                    raise HubError(403, "The main branch cannot be deleted.")
                del table[name]
            else:
                other = refs["tags" if kind == "branches" else "branches"]
                if create_only and (name in table or name in other):
                    raise HubError(409, f"{label} {name} already exists in {repo_id}.")
                table[name] = sha
            self._write_refs(repo_id, refs)

    # -- blobs ---------------------------------------------------------------------------------------------------------

    def has_blob(self, repo_id: str, sha256: str, size: int | None = None) -> bool:
        path = self._blob_path(repo_id, sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def blob_path(self, repo_id: str, sha256: str) -> Path:
        return self._blob_path(repo_id, sha256)

    def put_blob_bytes(self, repo_id: str, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(repo_id, sha256, len(data)):
            self._fault("blob")
            write_bytes_atomic(self._blob_path(repo_id, sha256), data)
        return sha256

    def put_blob_stream(self, repo_id: str, chunks: Iterator[bytes], *, sha256: str, size: int) -> None:
        """Store an LFS upload: streamed to tmp/, checked against its announced sha256 and size, then renamed in."""
        final = self._blob_path(repo_id, sha256)
        digest = hashlib.sha256()
        received = 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    received += len(chunk)
                    if received > size:
                        raise HubError(400, f"Upload is larger than the announced {size} bytes.")
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if received != size:
                raise HubError(400, f"Upload has {received} bytes, the LFS batch request announced {size}.")
            if digest.hexdigest() != sha256:
                raise HubError(400, f"Upload content does not match its oid sha256:{sha256}; nothing was stored.")
            self._fault("blob")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- LFS classification --------------------------------------------------------------------------------------------

    def upload_mode(self, tree: dict[str, Entry], repo_id: str, path: str, size: int) -> str:
        if size > self.lfs_threshold:
            return "lfs"
        rules = lfs_patterns(default_gitattributes())
        attributes = tree.get(".gitattributes")
        if attributes is not None:
            rules = lfs_patterns(self.blob_path(repo_id, attributes.sha256).read_bytes())
        return "lfs" if matches_lfs(path, rules) else "regular"

    # -- commits -------------------------------------------------------------------------------------------------------

    def create_commit(
        self,
        repo_id: str,
        branch: str,
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None,
        files: list[tuple[str, bytes]],
        lfs_files: list[tuple[str, str, int | None]],
        deleted_files: list[str],
        deleted_folders: list[str],
    ) -> str:
        """Apply operations on top of `branch` and move it to the new commit; returns the commit sha."""
        with self.lock(repo_id):
            refs = self.refs(repo_id)
            if branch not in refs["branches"]:
                if branch in refs["tags"] or _SHA1_RE.fullmatch(branch):
                    raise HubError(400, f"Commits go to a branch; {branch} is not one.")
                raise HubError(
                    404,
                    f"Branch {_show(branch)} not found in {repo_id}: create it first (create_branch).",
                    code="RevisionNotFound",
                )
            head = refs["branches"][branch]
            if parent_commit is not None and not head.startswith(parent_commit):
                raise HubError(
                    412,
                    f"Branch {branch} moved: it is at {head}, the commit was prepared on {parent_commit}. "
                    "Re-read the repo and retry.",
                )
            tree = self.tree(repo_id, head)
            for path in deleted_files:
                if path not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                del tree[path]
            for folder in deleted_folders:
                prefix = folder.rstrip("/") + "/"
                doomed = [p for p in tree if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {folder}", code="EntryNotFound")
                for path in doomed:
                    del tree[path]
            for path, oid, size in lfs_files:
                if size is None and self.has_blob(repo_id, oid):
                    size = self.blob_path(repo_id, oid).stat().st_size
                if size is None or not self.has_blob(repo_id, oid, size):
                    raise HubError(
                        422,
                        f"LFS object sha256:{oid} for {path} was not uploaded (or has another size): "
                        "upload it through the LFS batch API before committing.",
                    )
                tree[path] = Entry(oid, size, True, git_blob_oid(lfs_pointer(oid, size)))
            for path, data in files:
                sha256 = self.put_blob_bytes(repo_id, data)
                tree[path] = Entry(sha256, len(data), False, git_blob_oid(data))
            clashes = sorted(_folders(tree) & set(tree))
            if clashes:  # git trees cannot hold a file and a folder under one name (downloads would collide)
                raise HubError(400, f"{clashes[0]} would be both a file and a folder; delete one of them first.")
            commit = self._make_commit(
                parent=head,
                tree={p: e.to_json() for p, e in sorted(tree.items())},
                title=title,
                message=message,
                author=author,
            )
            self._fault("commit")
            write_json_atomic(self._commit_path(repo_id, commit["id"]), commit)
            refs["branches"][branch] = commit["id"]
            self._write_refs(repo_id, refs)  # the single step that makes the commit visible
            return commit["id"]


# ---------------------------------------------------------------------------------------------------------------------
# Listing helpers shared by tree, paths-info and model info.


def _dir_oid(tree: dict[str, Entry], folder: str) -> str:
    prefix = folder + "/"
    listing = sorted((p, e.oid) for p, e in tree.items() if p.startswith(prefix))
    return hashlib.sha1(json.dumps(listing).encode()).hexdigest()


def _folders(tree: dict[str, Entry]) -> set[str]:
    folders = set()
    for path in tree:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
    return folders


def _file_item(path: str, entry: Entry) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if entry.lfs:
        item["lfs"] = {
            "oid": entry.sha256,
            "size": entry.size,
            "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
        }
    return item


def _folder_item(path: str, tree: dict[str, Entry]) -> dict[str, Any]:
    return {"type": "directory", "oid": _dir_oid(tree, path), "size": 0, "path": path}


def _front_matter(readme: bytes) -> dict[str, Any] | None:
    """The YAML metadata block of a model card, or None when absent."""
    text = readme.decode("utf-8", "replace").replace("\r\n", "\n")
    if not text.startswith("---\n"):
        return None
    end = text.find("\n---", 4)
    if end < 0:
        raise ValueError("the metadata block opened with '---' is never closed")
    import yaml  # a project dependency already (huggingface_hub needs it); imported lazily to keep startup light

    data = yaml.safe_load(text[4:end]) or {}
    if not isinstance(data, dict):
        raise ValueError("the metadata block must be a YAML mapping")
    return data


# ---------------------------------------------------------------------------------------------------------------------
# HTTP


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: HubServer):
        self.hub = hub
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: huggingface_hub reuses one session for dozens of small calls
    server_version = f"{SERVER_NAME}/1"
    timeout = 120  # idle keep-alive connections give their thread back
    server: _HTTPServer

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
    def hub(self) -> HubServer:
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
            self.hub.request_log.append((method, split.path))
            injected = self.hub._take_failure(split.path)
            if injected is not None:
                self._drain()
                raise HubError(injected, f"Injected failure (HTTP {injected}) for testing.")
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

    # -- routing -------------------------------------------------------------------------------------------------------

    def _route(self, method: str, seg: list[str]) -> None:
        if seg[:1] == ["api"]:
            rest = seg[1:]
            if rest == ["health"] and method in ("GET", "HEAD"):
                return self._send_json(
                    {"status": "ok", "server": SERVER_NAME, "data_dir": str(self.store.root), "pid": os.getpid()}
                )
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if rest == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if len(rest) >= 3 and rest[0] == "models":
                return self._route_repo_api(method, f"{rest[1]}/{rest[2]}", rest[3:])
            if len(rest) >= 3 and rest[0] in ("datasets", "spaces"):
                raise HubError(404, "This hub only hosts model repositories.", code="RepoNotFound")
        elif len(seg) >= 6 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"]:
            return self._route_lfs(method, f"{seg[0]}/{seg[1][:-4]}", seg[5:])
        elif len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        raise HubError(404, f"No such endpoint: {method} {_show(urlsplit(self.path).path)}.")

    def _route_repo_api(self, method: str, repo_id: str, rest: list[str]) -> None:
        validate_repo_id(repo_id)
        action = rest[0] if rest else None
        if action is None and method == "GET":
            return self._model_info(repo_id, None)
        if action == "revision" and len(rest) == 2 and method == "GET":
            return self._model_info(repo_id, rest[1])
        if action == "tree" and len(rest) >= 2 and method == "GET":
            return self._tree(repo_id, rest[1], "/".join(rest[2:]))
        if action == "paths-info" and len(rest) == 2 and method == "POST":
            return self._paths_info(repo_id, rest[1])
        if action == "refs" and len(rest) == 1 and method == "GET":
            return self._refs(repo_id)
        if action == "commits" and len(rest) == 2 and method == "GET":
            return self._commits(repo_id, rest[1])
        if action == "branch" and len(rest) == 2 and method in ("POST", "DELETE"):
            return self._branch(method, repo_id, rest[1])
        if action == "tag" and len(rest) == 2 and method in ("POST", "DELETE"):
            return self._tag(method, repo_id, rest[1])
        if action == "preupload" and len(rest) == 2 and method == "POST":
            return self._preupload(repo_id, rest[1])
        if action == "commit" and len(rest) == 2 and method == "POST":
            return self._commit(repo_id, rest[1])
        raise HubError(404, f"No such endpoint: {method} /api/models/{repo_id}/{'/'.join(rest)}.")

    # -- account and repos ---------------------------------------------------------------------------------------------

    def _whoami(self) -> None:
        if self.hub.token is not None:
            self._authorize(write=True)  # whoami is how clients test a token: require one
        self._send_json(
            {
                "type": "user",
                "id": DEFAULT_USER,
                "name": DEFAULT_USER,
                "fullname": "neuronforge local hub",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            }
        )

    def _repo_id_from_body(self, body: Any) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise HubError(400, "Expected a JSON object with 'name' (and optionally 'organization').")
        if body.get("type", "model") not in ("model", None):
            raise HubError(400, "This hub only hosts model repositories (type 'model').")
        organization = body.get("organization") or DEFAULT_USER
        if not isinstance(organization, str):
            raise HubError(400, "'organization' must be a string.")
        return validate_repo_id(f"{organization}/{body['name']}")

    def _create_repo(self) -> None:
        self._authorize(write=True)
        body = self._read_json()
        repo_id = self._repo_id_from_body(body)
        url = f"{self.hub.url}/{repo_id}"
        if not self.store.create_repo(repo_id, private=bool(body.get("private")), author=DEFAULT_USER):
            # create_repo(exist_ok=True) treats 409 as success; the Hub's body also carries the url.
            message = "You already created this model repo"
            return self._send_json({"error": message, "url": url}, 409, {"X-Error-Message": message})
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        self._authorize(write=True)
        self.store.delete_repo(self._repo_id_from_body(self._read_json()))
        self._send_json({})

    def _validate_yaml(self) -> None:
        body = self._read_json()
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, str):
            raise HubError(400, "Expected a JSON object with 'content'.")
        try:
            _front_matter(content.encode())
        except Exception as exc:
            # huggingface_hub turns `errors` into "Invalid metadata in README.md" before uploading anything.
            message = " ".join(f"Invalid YAML metadata in the model card: {exc}".split())
            return self._send_json(
                {"error": message, "errors": [{"message": message}], "warnings": []}, 400, {"X-Error-Message": message}
            )
        self._send_json({"errors": [], "warnings": []})

    # -- reads ---------------------------------------------------------------------------------------------------------

    def _model_info(self, repo_id: str, revision: str | None) -> None:
        meta = self._authorize_read(repo_id)
        sha = self.store.resolve(repo_id, revision or "main")
        commit = self.store.commit(repo_id, sha)
        tree = {p: Entry.from_json(raw) for p, raw in commit["tree"].items()}
        blobs = _bool_param(self.query.get("blobs"))
        siblings = []
        for path, entry in sorted(tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    pointer = len(lfs_pointer(entry.sha256, entry.size))
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": pointer}
            siblings.append(sibling)
        card: dict[str, Any] | None = None
        if "README.md" in tree:
            with contextlib.suppress(Exception):  # a broken card must not break model_info
                card = _front_matter(self.store.blob_path(repo_id, tree["README.md"].sha256).read_bytes())
        tags = list(dict.fromkeys([t for t in (card or {}).get("tags") or [] if isinstance(t, str)]))
        payload: dict[str, Any] = {
            "_id": repo_id,
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": meta["createdAt"],
            "private": bool(meta.get("private")),
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "siblings": siblings,
        }
        if card is not None:
            payload["cardData"] = card
            for key in ("library_name", "pipeline_tag"):
                if isinstance(card.get(key), str):
                    payload[key] = card[key]
        self._send_json(payload)

    def _paginate(self, items: list[Any], default_limit: int = PAGE_SIZE) -> None:
        """Send one page of `items`, with a GitHub-style Link header to the next (what huggingface_hub follows)."""
        try:
            limit = max(1, min(int((self.query.get("limit") or [default_limit])[-1]), PAGE_SIZE))
            start = max(0, int((self.query.get("cursor") or ["0"])[-1]))
        except ValueError:
            raise HubError(400, "'limit' and 'cursor' must be integers.") from None
        page = items[start : start + limit]
        headers = {}
        if start + limit < len(items):
            query = {k: v[-1] for k, v in self.query.items() if k != "cursor"}
            query["cursor"] = str(start + limit)
            headers["Link"] = f'<{self.hub.url}{urlsplit(self.path).path}?{urlencode(query)}>; rel="next"'
        self._send_json(page, headers=headers)

    def _with_last_commit(self, repo_id: str, sha: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """expand=True: the commit that last changed each path (walks history; fine for our small repos)."""
        history = self.store.history(repo_id, sha)
        trees = [{p: Entry.from_json(raw) for p, raw in c["tree"].items()} for c in history]

        def state(tree: dict[str, Entry], item: dict[str, Any]) -> Any:
            path = item["path"]
            if item["type"] == "file":
                return tree.get(path)
            return _dir_oid(tree, path) if any(p.startswith(path + "/") for p in tree) else None

        for item in items:
            target = state(trees[0], item)
            last = history[0]
            for commit, tree in zip(history[1:], trees[1:], strict=True):
                if state(tree, item) != target:
                    break
                last = commit
            item["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
        return items

    def _tree(self, repo_id: str, revision: str, folder: str) -> None:
        self._authorize_read(repo_id)
        sha = self.store.resolve(repo_id, revision)
        tree = self.store.tree(repo_id, sha)
        folders = _folders(tree)
        if folder:
            validate_path_in_repo(folder)
            if folder not in folders:
                raise HubError(404, f"Folder {_show(folder)} not found at {revision}.", code="EntryNotFound")
        prefix = f"{folder}/" if folder else ""
        recursive = _bool_param(self.query.get("recursive"))

        def wanted(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        items = [_folder_item(p, tree) for p in sorted(folders) if wanted(p)]
        items += [_file_item(p, e) for p, e in sorted(tree.items()) if wanted(p)]
        expand = _bool_param(self.query.get("expand"))
        if expand:
            items = self._with_last_commit(repo_id, sha, items)
        self._paginate(items, 50 if expand else PAGE_SIZE)

    def _paths_info(self, repo_id: str, revision: str) -> None:
        self._authorize_read(repo_id)
        raw = self._read_body()
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise HubError(400, "Request body is not valid JSON.") from None
            if not isinstance(body, dict):
                raise HubError(400, "Expected a JSON object with 'paths'.")
            paths, expand = body.get("paths") or [], bool(body.get("expand"))
        else:  # huggingface_hub sends a form: paths=a&paths=b&expand=False
            form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
            paths, expand = form.get("paths", []), _bool_param(form.get("expand"))
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise HubError(400, "'paths' must be a list of strings.")
        sha = self.store.resolve(repo_id, revision)
        tree = self.store.tree(repo_id, sha)
        folders = _folders(tree)
        items = []
        for path in paths:
            validate_path_in_repo(path)
            if path in tree:
                items.append(_file_item(path, tree[path]))
            elif path in folders:
                items.append(_folder_item(path, tree))
        if expand:
            items = self._with_last_commit(repo_id, sha, items)
        self._send_json(items)

    def _refs(self, repo_id: str) -> None:
        self._authorize_read(repo_id)
        refs = self.store.refs(repo_id)

        def rows(kind: str, prefix: str) -> list[dict[str, str]]:
            return [
                {"name": name, "ref": f"{prefix}{name}", "targetCommit": sha}
                for name, sha in sorted(refs[kind].items())
            ]

        self._send_json(
            {
                "branches": rows("branches", "refs/heads/"),
                "tags": rows("tags", "refs/tags/"),
                "converts": [],
                "pullRequests": [],
            }
        )

    def _commits(self, repo_id: str, revision: str) -> None:
        self._authorize_read(repo_id)
        sha = self.store.resolve(repo_id, revision)
        items = [
            {
                "id": c["id"],
                "title": c["title"],
                "message": c["message"],
                "date": c["date"],
                "authors": [{"user": c["author"]}],
            }
            for c in self.store.history(repo_id, sha)
        ]
        self._paginate(items, 50)

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        validate_repo_id(repo_id)
        self._authorize_read(repo_id)
        sha = self.store.resolve(repo_id, revision)
        validate_path_in_repo(path)
        tree = self.store.tree(repo_id, sha)
        if path not in tree:
            # X-Repo-Commit lets huggingface_hub cache the miss (.no_exist) for this exact commit.
            raise HubError(404, f"Entry {_show(path)} not found at {sha}.", "EntryNotFound", {"X-Repo-Commit": sha})
        entry = tree[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        start, end = 0, entry.size - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header and entry.size > 0:
            parsed = _parse_range(range_header, entry.size)
            if parsed == "unsatisfiable":
                headers["Content-Range"] = f"bytes */{entry.size}"
                raise HubError(
                    416, f"Range {_show(range_header)} is outside the file ({entry.size} bytes).", None, headers
                )
            if parsed is not None:
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = max(0, end - start + 1)
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        with open(self.store.blob_path(repo_id, entry.sha256), "rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining > 0:
                chunk = fh.read(min(remaining, 1 << 20))
                if not chunk:
                    raise OSError(f"blob {entry.sha256} is shorter than its recorded size")
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # -- writes --------------------------------------------------------------------------------------------------------

    def _branch(self, method: str, repo_id: str, branch: str) -> None:
        self._authorize(write=True)
        self.store.repo_meta(repo_id)
        if method == "DELETE":
            self.store.set_ref(repo_id, "branches", branch, None)
            return self._send_json({})
        body = self._read_json() or {}
        start = body.get("startingPoint") if isinstance(body, dict) else None
        sha = self.store.resolve(repo_id, start or "main")
        self.store.set_ref(repo_id, "branches", branch, sha, create_only=True)
        self._send_json({})

    def _tag(self, method: str, repo_id: str, name: str) -> None:
        self._authorize(write=True)
        self.store.repo_meta(repo_id)
        if method == "DELETE":  # DELETE /tag/{tag}
            self.store.set_ref(repo_id, "tags", name, None)
            return self._send_json({})
        body = self._read_json()  # POST /tag/{revision} {"tag": ..., "message": ...}
        if not isinstance(body, dict) or not isinstance(body.get("tag"), str):
            raise HubError(400, "Expected a JSON object with 'tag'.")
        sha = self.store.resolve(repo_id, name)
        self.store.set_ref(repo_id, "tags", body["tag"], sha, create_only=True)
        self._send_json({})

    def _reject_pr(self) -> None:
        if _bool_param(self.query.get("create_pr")):
            raise HubError(400, "Pull requests are not supported by this hub; commit to a branch instead.")

    def _preupload(self, repo_id: str, revision: str) -> None:
        self._authorize(write=True)
        self._reject_pr()
        body = self._read_json()
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list):
            raise HubError(400, "Expected a JSON object with a 'files' list.")
        sha = self.store.resolve(repo_id, revision)
        tree = self.store.tree(repo_id, sha)
        answer = []
        for item in files:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("path"), str)
                or not isinstance(item.get("size"), int)
            ):
                raise HubError(400, "Each file needs 'path' (string) and 'size' (integer).")
            path = validate_path_in_repo(item["path"])
            mode = self.store.upload_mode(tree, repo_id, path, item["size"])
            row: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            if path in tree:
                # huggingface_hub drops a file from the commit when this equals its local oid: unchanged files are
                # neither re-uploaded nor re-committed.
                row["oid"] = tree[path].etag
            answer.append(row)
        self._send_json({"files": answer, "commitOid": sha})

    def _commit(self, repo_id: str, branch: str) -> None:
        self._authorize(write=True)
        self._reject_pr()
        self.store.repo_meta(repo_id)
        validate_revision(branch)
        lines = [line for line in self._read_body().splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except ValueError:
            raise HubError(400, "Commit payload must be NDJSON (one JSON object per line).") from None
        if not items or not isinstance(items[0], dict) or items[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a 'header' line.")
        header = items[0].get("value")
        if not isinstance(header, dict):
            raise HubError(400, "The commit 'header' line needs a 'value' object.")
        title = header.get("summary")
        if not isinstance(title, str) or not title.strip():
            raise HubError(400, "Commit header needs a non-empty 'summary'.")
        parent = header.get("parentCommit")
        if parent is not None and not (isinstance(parent, str) and re.fullmatch(r"[0-9a-f]{7,40}", parent)):
            raise HubError(400, "'parentCommit' must be a hex commit sha.")
        files: list[tuple[str, bytes]] = []
        lfs_files: list[tuple[str, str, int | None]] = []
        deleted_files: list[str] = []
        deleted_folders: list[str] = []
        for item in items[1:]:
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, dict) or not isinstance(value.get("path"), str):
                raise HubError(400, "Each commit operation needs a 'value' object with a 'path'.")
            key = item.get("key")
            if key == "deletedFolder":
                deleted_folders.append(validate_path_in_repo(value["path"].rstrip("/")))
                continue
            path = validate_path_in_repo(value["path"])
            if key == "file":
                content = value.get("content", "")
                encoding = value.get("encoding", "base64")
                if not isinstance(content, str) or encoding not in ("base64", "utf-8"):
                    raise HubError(400, f"File {path}: 'content' must be a string encoded as base64 or utf-8.")
                try:
                    data = base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
                except ValueError:
                    raise HubError(400, f"File {path}: content is not valid base64.") from None
                files.append((path, data))
            elif key == "lfsFile":
                oid, size = value.get("oid"), value.get("size")
                if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not _SHA256_RE.fullmatch(oid):
                    raise HubError(400, f"LFS file {path}: 'oid' must be a sha256 hex digest.")
                if size is not None and (not isinstance(size, int) or size < 0):
                    raise HubError(400, f"LFS file {path}: 'size' must be a non-negative integer.")
                lfs_files.append((path, oid, size))
            elif key == "deletedFile":
                deleted_files.append(path)
            else:
                raise HubError(400, f"Unknown commit operation {_show(str(key))}.")
        sha = self.store.create_commit(
            repo_id,
            branch,
            title=title.strip(),
            message=str(header.get("description") or ""),
            author=DEFAULT_USER,
            parent_commit=parent,
            files=files,
            lfs_files=lfs_files,
            deleted_files=deleted_files,
            deleted_folders=deleted_folders,
        )
        self._send_json(
            {
                "success": True,
                "commitOid": sha,
                # Repo-relative on purpose: huggingface_hub parses this URL against its global HF_ENDPOINT, not the
                # HfApi(endpoint=...) it was called with, and rejects a full URL to any other host.
                "commitUrl": f"{repo_id}/commit/{sha}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    # -- LFS -----------------------------------------------------------------------------------------------------------

    def _route_lfs(self, method: str, repo_id: str, rest: list[str]) -> None:
        validate_repo_id(repo_id)
        if rest == ["batch"] and method == "POST":
            return self._lfs_batch(repo_id)
        if rest == ["verify"] and method == "POST":
            return self._lfs_verify(repo_id)
        if len(rest) == 3 and rest[0] == "upload" and method == "PUT":
            return self._lfs_upload(repo_id, rest[1], rest[2])
        raise HubError(404, f"No such LFS endpoint: {method} {'/'.join(rest)}.")

    def _lfs_batch(self, repo_id: str) -> None:
        self._authorize(write=True)
        body = self._read_json()
        self.store.repo_meta(repo_id)
        if not isinstance(body, dict) or body.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported; download files via /resolve/.")
        if body.get("hash_algo", "sha256") != "sha256":
            raise HubError(400, "Only sha256 LFS objects are supported.")
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, "Expected an 'objects' list.")
        answer = []
        for obj in objects:
            oid = obj.get("oid") if isinstance(obj, dict) else None
            size = obj.get("size") if isinstance(obj, dict) else None
            if not isinstance(oid, str) or not _SHA256_RE.fullmatch(oid) or not isinstance(size, int) or size < 0:
                raise HubError(400, "Each LFS object needs a sha256 'oid' and a non-negative integer 'size'.")
            row: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if size > self.hub.max_upload_bytes:
                message = f"Object is {size} bytes; this hub accepts at most {self.hub.max_upload_bytes} per file"
                row["error"] = {"code": 413, "message": message + " (restart it with a larger --max-upload-bytes)."}
            elif not self.store.has_blob(repo_id, oid, size):  # already stored → no actions → client skips the PUT
                row["actions"] = {
                    "upload": {"href": self.hub._signed_upload_url(repo_id, oid, size), "header": {}},
                    "verify": {"href": f"{self.hub.url}/{repo_id}.git/info/lfs/objects/verify", "header": {}},
                }
            answer.append(row)
        self._send_json({"transfer": "basic", "objects": answer, "hash_algo": "sha256"})

    def _lfs_upload(self, repo_id: str, oid: str, size_text: str) -> None:
        # The client PUTs without its Authorization header (upload URLs are pre-signed, as S3's are on the Hub).
        if not size_text.isdigit():
            raise HubError(400, "Invalid upload size.")
        size = int(size_text)
        self.hub._check_upload_signature(repo_id, oid, size, self.query)
        self.store.repo_meta(repo_id)
        if size > self.hub.max_upload_bytes:
            raise HubError(413, f"Object exceeds this hub's limit of {self.hub.max_upload_bytes} bytes.")
        chunks = self._iter_body(self.hub.max_upload_bytes, "--max-upload-bytes")
        self.store.put_blob_stream(repo_id, chunks, sha256=oid, size=size)
        self._send_json({})

    def _lfs_verify(self, repo_id: str) -> None:
        self._authorize(write=True)
        body = self._read_json()
        oid = body.get("oid") if isinstance(body, dict) else None
        size = body.get("size") if isinstance(body, dict) else None
        if not isinstance(oid, str) or not isinstance(size, int):
            raise HubError(400, "Expected 'oid' and 'size'.")
        if not self.store.has_blob(repo_id, oid, size):
            raise HubError(404, f"LFS object sha256:{oid} ({size} bytes) is not stored; upload it again.")
        self._send_json({})


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One `bytes=` range → (start, end) inclusive; None to ignore it (multi-range, junk); 'unsatisfiable'."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.groups()
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


# ---------------------------------------------------------------------------------------------------------------------
# Public API


@dataclass
class _Failure:
    remaining: int
    status: int
    path_prefix: str


class HubServer:
    """The loopback Hub, served from a background thread.

    >>> with HubServer(tmp_path / "hub") as srv:
    ...     HfApi(endpoint=srv.url).create_repo("me/model")
    """

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
        self.failures_served = 0
        # The last requests as (method, path without query): lets tests check what a client actually sent.
        self.request_log: collections.deque[tuple[str, str]] = collections.deque(maxlen=2000)
        self._public_url = public_url.rstrip("/") if public_url else None
        self._secret = secrets.token_bytes(32)  # signs LFS upload URLs; new per process, URLs live an hour at most
        self._failures: list[_Failure] = []
        self._failures_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

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
        self._httpd = _HTTPServer((self.host, self.port), self)
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

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- failure injection (tests) -------------------------------------------------------------------------------------

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

    # -- signed upload URLs --------------------------------------------------------------------------------------------

    def _signature(self, repo_id: str, oid: str, size: int, expires: int) -> str:
        message = f"{repo_id}\n{oid}\n{size}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _signed_upload_url(self, repo_id: str, oid: str, size: int) -> str:
        expires = int(time.time()) + UPLOAD_URL_TTL_S
        query = urlencode({"expires": expires, "sig": self._signature(repo_id, oid, size, expires)})
        return f"{self.url}/{repo_id}.git/info/lfs/objects/upload/{oid}/{size}?{query}"

    def _check_upload_signature(self, repo_id: str, oid: str, size: int, query: dict[str, list[str]]) -> None:
        try:
            expires = int((query.get("expires") or ["0"])[-1])
        except ValueError:
            expires = 0
        supplied = (query.get("sig") or [""])[-1]
        if expires < time.time() or not hmac.compare_digest(supplied, self._signature(repo_id, oid, size, expires)):
            raise HubError(403, "Upload URL is invalid or expired: request a new one from the LFS batch endpoint.")


def _read_state(state_file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None


def server_alive(url: str, data_dir: Path, timeout_s: float = 2.0) -> bool:
    """True when `url` answers /api/health as a neuronforge hub serving `data_dir` (not some other process)."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout_s) as resp:
            health = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return health.get("server") == SERVER_NAME and Path(str(health.get("data_dir"))).resolve() == data_dir.resolve()


def ensure_running(data_dir: Path | str, *, timeout_s: float = 30.0) -> str:
    """URL of a live hub serving `data_dir`, starting a detached server process on a free port if none answers.

    The url and pid are recorded in `<data_dir>/server.json`; the process outlives the caller (it serves the next
    pipeline run too) and logs to `<data_dir>/server.log`. Stop it with `kill <pid>`.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state_file = data_dir / STATE_FILE
    # One starter at a time per data dir, across processes (several Dagster step processes may ask at once).
    with file_lock(data_dir / ".server.lock"):
        state = _read_state(state_file)
        if state and server_alive(state.get("url", ""), data_dir):
            return state["url"]
        from neuronforge.paths import REPO_ROOT

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "neuronforge.hub_server", "--host", "127.0.0.1", "--port", "0"]
        command += ["--data-dir", str(data_dir), "--state-file", str(state_file)]
        started = time.time()
        with open(data_dir / "server.log", "ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,  # detached: a Ctrl-C or the end of the calling step does not stop it
            )
        while time.time() - started < timeout_s:
            state = _read_state(state_file)
            if state and state.get("pid") == proc.pid and server_alive(state["url"], data_dir):
                return state["url"]
            if proc.poll() is not None:
                raise RuntimeError(
                    f"The embedded hub server exited with code {proc.returncode} before serving {data_dir}; "
                    f"see {data_dir / 'server.log'}."
                )
            time.sleep(0.1)
        proc.terminate()
        raise TimeoutError(
            f"The embedded hub server did not answer within {timeout_s:.0f}s; see {data_dir}/server.log."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuronforge-hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port; the URL is printed)")
    parser.add_argument("--data-dir", type=Path, default=None, help="storage folder (default: <NEURONFORGE_HOME>/hub)")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require this bearer token for writes (default: ${TOKEN_ENV}; prefer the variable: argv is visible)",
    )
    parser.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES, help="largest LFS file")
    parser.add_argument("--max-json-bytes", type=int, default=DEFAULT_MAX_JSON_BYTES, help="largest other request")
    parser.add_argument("--lfs-threshold-bytes", type=int, default=LFS_THRESHOLD_BYTES, help="files above go to LFS")
    parser.add_argument("--public-url", default=None, help="URL clients use, when behind a proxy")
    parser.add_argument("--state-file", type=Path, default=None, help="write {url, pid, data_dir} here once serving")
    parser.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        from neuronforge.paths import subdir

        args.data_dir = subdir("hub")
    server = HubServer(
        args.data_dir,
        host=args.host,
        port=args.port,
        token=args.token,
        max_upload_bytes=args.max_upload_bytes,
        max_json_bytes=args.max_json_bytes,
        lfs_threshold=args.lfs_threshold_bytes,
        public_url=args.public_url,
        verbose=args.verbose,
    )
    # Block the stop signals in every thread (threads inherit the mask) and wait for them here. A Python handler
    # would only run once the main thread wakes up, and a signal the kernel delivers to a server thread never wakes
    # a main thread parked on a lock: the process would ignore SIGTERM now and then.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    with server:
        if args.state_file is not None:
            write_json_atomic(
                args.state_file, {"url": server.url, "pid": os.getpid(), "data_dir": str(server.data_dir)}
            )
        print(server.url, flush=True)
        print(
            f"{SERVER_NAME}: serving {server.data_dir} (token {'required' if server.token else 'off'})", file=sys.stderr
        )
        while signal.sigtimedwait(stop_signals, STATE_WATCH_S) is None:
            # A detached server (ensure_running) leaves when its state file is gone (data dir wiped) or names another
            # process (it was taken for dead and replaced): orphans never pile up.
            if args.state_file is not None and (_read_state(args.state_file) or {}).get("pid") != os.getpid():
                print(f"{SERVER_NAME}: {args.state_file} no longer names this process; exiting", file=sys.stderr)
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
