"""Routes of the web pages: `/` (the repos) and `/<org>/<repo>[/tree/<rev> | /commit/<sha>]` (one repo)."""

from __future__ import annotations

import itertools

from neuronforge.hub.handler import BaseHandler
from neuronforge.hub.page import CSP, MAX_CARD_BYTES, MAX_COMMITS_SHOWN, render_index, render_repo_page
from neuronforge.hub.validation import validate_repo_id


class PageRoutes(BaseHandler):
    """The handlers of the repo page and the index page."""

    def _send_html(self, body: bytes) -> None:
        headers = {
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        self._send(200, body, headers, "text/html; charset=utf-8")

    def _repo_page(self, repo_id: str, revision: str | None) -> None:
        validate_repo_id(repo_id)
        meta = self._authorize_read(repo_id)
        revision = revision or "main"
        sha = self.store.resolve(repo_id, revision)
        tree = self.store.tree(repo_id, sha)
        history = list(itertools.islice(self.store.iter_history(repo_id, sha), MAX_COMMITS_SHOWN + 1))
        readme = None
        if "README.md" in tree:
            with open(self.store.blob_path(repo_id, tree["README.md"].sha256), "rb") as fh:
                readme = fh.read(MAX_CARD_BYTES + 1)
        page = render_repo_page(
            repo_id=repo_id,
            revision=revision,
            sha=sha,
            tree=tree,
            history=history,
            refs=self.store.refs(repo_id),
            readme=readme,
            endpoint=self.hub.url,
            private=bool(meta.get("private")),
        )
        self._send_html(page)

    def _index_page(self) -> None:
        self._authorize(write=False)
        repos = [(repo_id, meta) for repo_id, meta in self.store.list_repos() if self._may_read(meta)]
        self._send_html(render_index(repos, self.hub.url))
