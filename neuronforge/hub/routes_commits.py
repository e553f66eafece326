"""Routes that write: branches, tags, the preupload check and the NDJSON commit itself."""

from __future__ import annotations

import base64
import re
from typing import Any

from neuronforge.hub.handler import DEFAULT_USER, BaseHandler, bool_param, parse_json
from neuronforge.hub.objects import Entry
from neuronforge.hub.validation import SHA256_RE, HubError, show, validate_path_in_repo, validate_revision


class CommitRoutes(BaseHandler):
    """The handlers of branch, tag, preupload and commit."""

    def _branch(self, method: str, repo_id: str, branch: str) -> None:
        self._authorize(write=True)
        self.store.repo_meta(repo_id)
        if method == "DELETE":
            self.store.set_ref(repo_id, "branches", branch, None)
            return self._send_json({})
        body = self._read_json() or {}
        start = body.get("startingPoint") if isinstance(body, dict) else None
        if start is not None and not isinstance(start, str):
            raise HubError(400, "'startingPoint' must be a branch, tag or commit sha (a string).")
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
        if bool_param(self.query.get("create_pr")):
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
        # Streamed: each line is parsed, and a file's content decoded and stored, as it arrives, so memory holds one
        # line (at most one regular file, which is capped at the LFS threshold), not the whole body three times over.
        max_line = 2 * self.store.lfs_threshold + (1 << 20)  # base64 (4/3) or JSON-escaped utf-8, plus the keys
        lines = self._iter_lines(self.hub.max_json_bytes, "--max-json-bytes", max_line)
        first = next((line for line in lines if line.strip()), None)
        item = parse_json(first, "A commit line") if first is not None else None
        if not isinstance(item, dict) or item.get("key") != "header":
            raise HubError(400, "Commit payload must be NDJSON (one JSON object per line) starting with a 'header'.")
        header = item.get("value")
        if not isinstance(header, dict):
            raise HubError(400, "The commit 'header' line needs a 'value' object.")
        title = header.get("summary")
        if not isinstance(title, str) or not title.strip():
            raise HubError(400, "Commit header needs a non-empty 'summary'.")
        parent = header.get("parentCommit")
        if parent is not None and not (isinstance(parent, str) and re.fullmatch(r"[0-9a-f]{7,40}", parent)):
            raise HubError(400, "'parentCommit' must be a hex commit sha.")
        files: list[tuple[str, Entry]] = []
        lfs_files: list[tuple[str, str, int | None]] = []
        deleted_files: list[str] = []
        deleted_folders: list[str] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                text = line.decode()
            except UnicodeDecodeError:
                raise HubError(400, "Commit payload must be UTF-8 NDJSON.") from None
            del line  # the text replaces it: one copy of the line while it is parsed
            item = parse_json(text, "A commit line")
            del text
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
                del content, item, value  # one copy of the file at a time
                files.append((path, self.store.stage_file(repo_id, data)))
                del data
            elif key == "lfsFile":
                oid, size = value.get("oid"), value.get("size")
                if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not SHA256_RE.fullmatch(oid):
                    raise HubError(400, f"LFS file {path}: 'oid' must be a sha256 hex digest.")
                if size is not None and (not isinstance(size, int) or size < 0):
                    raise HubError(400, f"LFS file {path}: 'size' must be a non-negative integer.")
                lfs_files.append((path, oid, size))
            elif key == "deletedFile":
                deleted_files.append(path)
            else:
                raise HubError(400, f"Unknown commit operation {show(str(key))}.")
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
