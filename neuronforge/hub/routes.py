"""The hub's HTTP API: one route table over the route mixins, combined into the request handler.

The subset of the Hub HTTP API that `huggingface_hub` 0.36 uses to create repos, commit (NDJSON + LFS), tag and
download:

    GET  /api/whoami-v2                                GET  /api/health (liveness, used by `ensure_running`)
    POST /api/repos/create      DELETE /api/repos/delete      POST /api/validate-yaml
    GET  /api/models/{repo}[/revision/{rev}]           GET  /api/models/{repo}/tree/{rev}[/{path}]
    POST /api/models/{repo}/paths-info/{rev}           GET  /api/models/{repo}/refs
    GET  /api/models/{repo}/commits/{rev}              POST|DELETE /api/models/{repo}/branch/{branch}
    POST /api/models/{repo}/tag/{rev}  DELETE /api/models/{repo}/tag/{tag}
    POST /api/models/{repo}/preupload/{rev}            POST /api/models/{repo}/commit/{branch}
    POST /{repo}.git/info/lfs/objects/batch|verify     PUT  /{repo}.git/info/lfs/objects/upload/{oid}/{size}?sig=
    GET|HEAD /{repo}/resolve/{rev}/{path}              (ETag, X-Repo-Commit, X-Linked-Size/Etag, Range → 206)
    GET  /{repo}   /{repo}/tree/{rev}   /{repo}/commit/{sha}   the repo's web page (card, files, commits, tags)
    GET  /                                             the index page (every repo the caller may see)

Where each is handled: routes_repos (account, repos, model info), routes_files (tree, paths-info, refs, commits,
resolve), routes_commits (branch, tag, preupload, commit), routes_lfs (LFS batch, upload, verify), routes_page (pages).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from neuronforge.hub.handler import SERVER_NAME
from neuronforge.hub.routes_commits import CommitRoutes
from neuronforge.hub.routes_files import FileRoutes
from neuronforge.hub.routes_lfs import LfsRoutes
from neuronforge.hub.routes_page import PageRoutes
from neuronforge.hub.routes_repos import RepoRoutes
from neuronforge.hub.validation import HubError, show, validate_repo_id


class Handler(RepoRoutes, FileRoutes, CommitRoutes, LfsRoutes, PageRoutes):
    """One request: `BaseHandler` parses it, `_route` picks the route mixin's method that answers it."""

    def _route(self, method: str, seg: list[str]) -> None:
        if seg[:1] == ["api"]:
            rest = seg[1:]
            if rest == ["health"] and method in ("GET", "HEAD"):
                # Anonymous: no data dir, no pid. `server_alive` recognises its server by the random instance id,
                # which only the state file in the data dir also holds.
                return self._send_json({"status": "ok", "server": SERVER_NAME, "instance": self.hub.instance_id})
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
        elif method in ("GET", "HEAD") and seg in ([""], []):
            return self._index_page()
        elif method in ("GET", "HEAD") and (len(seg) == 2 or (len(seg) == 3 and seg[2] == "")):
            return self._repo_page(f"{seg[0]}/{seg[1]}", None)
        elif method in ("GET", "HEAD") and len(seg) >= 4 and seg[2] in ("tree", "commit") and seg[3]:
            return self._repo_page(f"{seg[0]}/{seg[1]}", "/".join(seg[3:]))
        raise HubError(404, f"No such endpoint: {method} {show(urlsplit(self.path).path)}.")

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

    def _route_lfs(self, method: str, repo_id: str, rest: list[str]) -> None:
        validate_repo_id(repo_id)
        if rest == ["batch"] and method == "POST":
            return self._lfs_batch(repo_id)
        if rest == ["verify"] and method == "POST":
            return self._lfs_verify(repo_id)
        if len(rest) == 3 and rest[0] == "upload" and method == "PUT":
            return self._lfs_upload(repo_id, rest[1], rest[2])
        raise HubError(404, f"No such LFS endpoint: {method} {'/'.join(rest)}.")
