"""The hub's storage: repos, commits, refs and blobs under the data dir, git-like and crash-safe.

Only model repos exist here. The layout:

    repos/{ns}/{name}/repo.json             id, private, createdAt
    repos/{ns}/{name}/refs.json             {"branches": {name: sha}, "tags": {name: sha}}
    repos/{ns}/{name}/commits/{sha}.json    immutable snapshot: parent, full tree {path: sha256/size/lfs/oid}, message
    repos/{ns}/{name}/blobs/{aa}/{sha256}   content-addressed file bodies (regular and LFS alike)

A commit writes its blobs, then its commit object, then replaces refs.json atomically: a crash at any point leaves the
previous revision (and every tag) exactly as it was; at worst an unreferenced blob or commit object is left behind.
Uploads and repo creations are staged in tmp/, which a server cleans when it starts alone (`clean_tmp`).

A full disk is the client's limit to hear about, not a server error: an LFS upload that would leave less than
`DISK_RESERVE_BYTES` free is refused up front (413, naming the free space), and a write that still hits ENOSPC/EDQUOT
mid-way answers the same 413 (`disk_full_error`), never a 500 that clients retry.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neuronforge.artifacts import write_bytes_atomic, write_json_atomic
from neuronforge.hub.objects import (
    LFS_THRESHOLD_BYTES,
    Entry,
    default_gitattributes,
    git_blob_oid,
    lfs_patterns,
    lfs_pointer,
    matches_lfs,
    tree_folders,
)
from neuronforge.hub.validation import (
    SHA1_RE,
    SHA256_RE,
    SHORT_SHA_RE,
    HubError,
    show,
    validate_repo_id,
    validate_revision,
)
from neuronforge.locks import file_lock

DISK_RESERVE_BYTES = 64 << 20  # an upload may not leave less free: commits, refs and the rest of the machine need some
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def disk_full_error(free: int, needed: int | None = None) -> HubError:
    """The 413 for a full disk: what was needed, what is free, and how to make room (the data dir's path stays out)."""
    what = (
        f"storing {needed} bytes needs {needed + DISK_RESERVE_BYTES} free (the object plus a {DISK_RESERVE_BYTES}-byte "
        "reserve)"
        if needed is not None
        else "the disk filled up while storing this request, nothing of it was kept"
    )
    return HubError(
        413,
        f"Not enough disk space on this hub: {what}; the disk holding its data dir has {free} bytes free. Free space "
        "on that disk (or restart the hub with --data-dir on a larger one), then upload again.",
        code="InsufficientStorage",
    )


def _utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubStore:
    """Repos, commits, refs and blobs on disk. Knows nothing about HTTP; raises HubError for client mistakes.

    Each durable write of a commit goes through one method (`_write_blob`, `_land_upload`, `_write_commit`,
    `_write_refs`), so the order that makes a commit crash-safe is visible in one place.
    """

    def __init__(self, root: Path, *, lfs_threshold: int = LFS_THRESHOLD_BYTES):
        self.root = Path(root).resolve()
        self.lfs_threshold = lfs_threshold
        for sub in ("repos", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def clean_tmp(self) -> int:
        """Remove everything staged in tmp/ (partial uploads of a killed server); only safe with no server running.
        Returns how many entries were removed."""
        removed = 0
        for entry in (self.root / "tmp").iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed

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
        if not SHA256_RE.fullmatch(sha256):
            raise HubError(400, f"Invalid sha256 oid {show(sha256)}: expected 64 lowercase hex characters.")
        return self._inside(self.repo_dir(repo_id) / "blobs" / sha256[:2] / sha256)

    def _commit_path(self, repo_id: str, sha: str) -> Path:
        if not SHA1_RE.fullmatch(sha):
            raise HubError(400, f"Invalid commit sha {show(sha)}.")
        return self._inside(self.repo_dir(repo_id) / "commits" / f"{sha}.json")

    @contextlib.contextmanager
    def lock(self, repo_id: str) -> Iterator[None]:
        """Serialise writers of one repo across threads and processes (flock on a sibling lock file)."""
        repo_dir = self.repo_dir(repo_id)
        repo_dir.parent.mkdir(parents=True, exist_ok=True)
        # Names cannot start with '.', so the lock file never collides with a repo folder.
        with file_lock(self._inside(repo_dir.parent / f".{repo_dir.name}.lock")):
            yield

    # -- repos ---------------------------------------------------------------------------------------------------------

    def repo_exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "repo.json").is_file()

    def list_repos(self) -> list[tuple[str, dict[str, Any]]]:
        """Every repo as (repo id, repo.json), sorted by id."""
        found = []
        for meta_file in sorted((self.root / "repos").glob("*/*/repo.json")):
            with contextlib.suppress(OSError, ValueError):  # a repo being deleted right now
                found.append(
                    (f"{meta_file.parent.parent.name}/{meta_file.parent.name}", json.loads(meta_file.read_text()))
                )
        return found

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
        write_json_atomic(self.repo_dir(repo_id) / "refs.json", refs)

    def _write_commit(self, repo_id: str, commit: dict[str, Any]) -> None:
        write_json_atomic(self._commit_path(repo_id, commit["id"]), commit)

    def resolve(self, repo_id: str, revision: str) -> str:
        """Branch, tag, commit sha or a unique prefix of one (7+ hex digits, as git and the Hub accept) → commit sha
        (404 RevisionNotFound otherwise)."""
        refs = self.refs(repo_id)
        validate_revision(revision)
        if revision in refs["branches"]:
            return refs["branches"][revision]
        if revision in refs["tags"]:
            return refs["tags"][revision]
        if SHA1_RE.fullmatch(revision) and self._commit_path(repo_id, revision).is_file():
            return revision
        if SHORT_SHA_RE.fullmatch(revision):
            found = sorted(p.stem for p in (self.repo_dir(repo_id) / "commits").glob(f"{revision}*.json"))
            if len(found) == 1:
                return found[0]
            if found:
                raise HubError(
                    400, f"Revision {revision} is ambiguous in {repo_id} ({len(found)} commits): use more digits."
                )
        raise HubError(404, f"Revision {show(revision)} not found in {repo_id}.", code="RevisionNotFound")

    def commit(self, repo_id: str, sha: str) -> dict[str, Any]:
        path = self._commit_path(repo_id, sha)
        if not path.is_file():
            raise HubError(404, f"Commit {sha} not found in {repo_id}.", code="RevisionNotFound")
        return json.loads(path.read_text())

    def tree(self, repo_id: str, sha: str) -> dict[str, Entry]:
        return {path: Entry.from_json(raw) for path, raw in self.commit(repo_id, sha)["tree"].items()}

    def iter_history(self, repo_id: str, sha: str) -> Iterator[dict[str, Any]]:
        """The commits from `sha` back to the root, read one at a time (a caller may stop early)."""
        current: str | None = sha
        while current is not None:
            commit = self.commit(repo_id, current)
            yield commit
            current = commit["parent"]

    def history(self, repo_id: str, sha: str) -> list[dict[str, Any]]:
        return list(self.iter_history(repo_id, sha))

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
        if SHA1_RE.fullmatch(name):
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
            self._write_blob(repo_id, sha256, data)
        return sha256

    def stage_file(self, repo_id: str, data: bytes) -> Entry:
        """Store a regular file's content before its commit (a streamed commit then holds one file at a time).
        A commit that fails afterwards leaves at most an unreferenced, content-addressed blob."""
        if len(data) > self.lfs_threshold:
            raise HubError(
                413,
                f"A regular (non-LFS) file is {len(data)} bytes; this hub takes at most {self.lfs_threshold} outside "
                "LFS: upload it through LFS (preupload answers uploadMode 'lfs' for it).",
            )
        return Entry(self.put_blob_bytes(repo_id, data), len(data), False, git_blob_oid(data))

    def _write_blob(self, repo_id: str, sha256: str, data: bytes) -> None:
        write_bytes_atomic(self._blob_path(repo_id, sha256), data)

    def free_bytes(self) -> int:
        """Free bytes on the disk holding the data dir (where tmp/ uploads and blobs land)."""
        return shutil.disk_usage(self.root / "tmp").free

    def check_space(self, size: int) -> None:
        """Refuse (413) an upload of `size` bytes that would leave less than the reserve free."""
        free = self.free_bytes()
        if size + DISK_RESERVE_BYTES > free:
            raise disk_full_error(free, size)

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
            self._land_upload(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _land_upload(self, tmp: str, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

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
        files: list[tuple[str, Entry]],
        lfs_files: list[tuple[str, str, int | None]],
        deleted_files: list[str],
        deleted_folders: list[str],
    ) -> str:
        """Apply operations on top of `branch` and move it to the new commit; returns the commit sha.

        `files` are regular files already stored with `stage_file`; `lfs_files` name uploaded LFS objects."""
        with self.lock(repo_id):
            refs = self.refs(repo_id)
            if branch not in refs["branches"]:
                if branch in refs["tags"] or SHA1_RE.fullmatch(branch):
                    raise HubError(400, f"Commits go to a branch; {branch} is not one.")
                raise HubError(
                    404,
                    f"Branch {show(branch)} not found in {repo_id}: create it first (create_branch).",
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
            for path, entry in files:  # staged already (stage_file)
                if not self.has_blob(repo_id, entry.sha256, entry.size):
                    raise HubError(409, f"{path}: its content vanished before the commit; send the commit again.")
                tree[path] = entry
            clashes = sorted(tree_folders(tree) & set(tree))
            if clashes:  # git trees cannot hold a file and a folder under one name (downloads would collide)
                raise HubError(400, f"{clashes[0]} would be both a file and a folder; delete one of them first.")
            commit = self._make_commit(
                parent=head,
                tree={p: e.to_json() for p, e in sorted(tree.items())},
                title=title,
                message=message,
                author=author,
            )
            self._write_commit(repo_id, commit)
            refs["branches"][branch] = commit["id"]
            self._write_refs(repo_id, refs)  # the single step that makes the commit visible
            return commit["id"]
