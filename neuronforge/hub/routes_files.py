"""Routes that read a revision: tree listings, paths-info, refs, commit history and file downloads (resolve)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from neuronforge.hub.handler import BaseHandler, bool_param, parse_json
from neuronforge.hub.listing import file_item, folder_item, folder_oids, last_changes, tree_items
from neuronforge.hub.objects import Entry
from neuronforge.hub.validation import HubError, show, validate_path_in_repo, validate_repo_id

PAGE_SIZE = 1000


class FileRoutes(BaseHandler):
    """The handlers of tree, paths-info, refs, commits (history) and resolve."""

    def _paginate(
        self, items: list[Any], default_limit: int = PAGE_SIZE, expand_at: tuple[str, str] | None = None
    ) -> None:
        """Send one page of `items`, with a GitHub-style Link header to the next (what huggingface_hub follows).

        With `expand_at` (repo id, commit sha), only the page's items get their lastCommit (from the cache)."""
        try:
            limit = max(1, min(int((self.query.get("limit") or [default_limit])[-1]), PAGE_SIZE))
            start = max(0, int((self.query.get("cursor") or ["0"])[-1]))
        except ValueError:
            raise HubError(400, "'limit' and 'cursor' must be integers.") from None
        page = items[start : start + limit]
        if expand_at is not None:
            page = self._with_last_commit(*expand_at, page)
        headers = {}
        if start + limit < len(items):
            query = {k: v[-1] for k, v in self.query.items() if k != "cursor"}
            query["cursor"] = str(start + limit)
            headers["Link"] = f'<{self.hub.url}{urlsplit(self.path).path}?{urlencode(query)}>; rel="next"'
        self._send_json(page, headers=headers)

    def _snapshot(self, repo_id: str, sha: str) -> tuple[dict[str, Entry], dict[str, str]]:
        """A commit's tree and the ids of its folders, computed once per commit."""

        def compute() -> tuple[dict[str, Entry], dict[str, str]]:
            tree = self.store.tree(repo_id, sha)
            return tree, folder_oids({path: entry.oid for path, entry in tree.items()})

        return self.hub.listings.get((repo_id, sha, "snapshot"), compute)

    def _with_last_commit(self, repo_id: str, sha: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """expand=True: the commit that last changed each path, from one walk over the history per commit sha."""

        def compute() -> dict[str, dict[str, str]]:
            return last_changes(self.store.iter_history(repo_id, sha))

        changes = self.hub.listings.get((repo_id, sha, "last_changes"), compute)
        return [{**item, "lastCommit": changes[item["path"]]} for item in items]  # cached items stay unchanged

    def _tree(self, repo_id: str, revision: str, folder: str) -> None:
        self._authorize_read(repo_id)
        sha = self.store.resolve(repo_id, revision)
        if folder:
            validate_path_in_repo(folder)
        recursive = bool_param(self.query.get("recursive"))

        def compute() -> list[dict[str, Any]]:
            tree, folders = self._snapshot(repo_id, sha)
            if folder and folder not in folders:
                raise HubError(404, f"Folder {show(folder)} not found at {revision}.", code="EntryNotFound")
            return tree_items(tree, folders, folder, recursive)

        items = self.hub.listings.get((repo_id, sha, "tree", folder, recursive), compute)
        expand = bool_param(self.query.get("expand"))
        self._paginate(items, 50 if expand else PAGE_SIZE, expand_at=(repo_id, sha) if expand else None)

    def _paths_info(self, repo_id: str, revision: str) -> None:
        self._authorize_read(repo_id)
        raw = self._read_body()
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            body = parse_json(raw or b"{}")
            if not isinstance(body, dict):
                raise HubError(400, "Expected a JSON object with 'paths'.")
            paths, expand = body.get("paths") or [], bool(body.get("expand"))
        else:  # huggingface_hub sends a form: paths=a&paths=b&expand=False
            form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
            paths, expand = form.get("paths", []), bool_param(form.get("expand"))
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise HubError(400, "'paths' must be a list of strings.")
        sha = self.store.resolve(repo_id, revision)
        tree, folders = self._snapshot(repo_id, sha)
        items = []
        for path in paths:
            validate_path_in_repo(path)
            if path in tree:
                items.append(file_item(path, tree[path]))
            elif path in folders:
                items.append(folder_item(path, folders[path]))
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
            raise HubError(404, f"Entry {show(path)} not found at {sha}.", "EntryNotFound", {"X-Repo-Commit": sha})
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
                    416, f"Range {show(range_header)} is outside the file ({entry.size} bytes).", None, headers
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
