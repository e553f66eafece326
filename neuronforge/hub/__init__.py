"""A small Hugging Face Hub-compatible server on loopback: the pipeline's embedded default publishing target.

No Hub server can be installed here (olah is read-only, KohakuHub needs Docker/lakeFS), so this package speaks the
subset of the Hub HTTP API that `huggingface_hub` 0.36 uses to create repos, commit (NDJSON + LFS), tag and download
(the route list is in `neuronforge.hub.routes`).

    validation      client input → repo ids, revisions, paths; `HubError` (answered as the Hub answers)
    objects         tree entries, git blob ids, LFS pointers, .gitattributes rules
    store           `HubStore`: repos, commits, refs and blobs on disk, git-like and crash-safe
    handler         HTTP plumbing: bodies, replies, errors, auth
    routes_*.py     the endpoints by concern (repos, files, commits, lfs); `routes` is the table that combines them
    server          `HubServer`: the server on a background thread
    daemon          `ensure_running` / `server_alive` (one detached server per data dir) and the `neuronforge-hub` CLI
"""

from neuronforge.hub.daemon import ensure_running, main, server_alive
from neuronforge.hub.objects import Entry, git_blob_oid
from neuronforge.hub.server import HubServer
from neuronforge.hub.store import HubStore
from neuronforge.hub.validation import HubError

__all__ = ["Entry", "HubError", "HubServer", "HubStore", "ensure_running", "git_blob_oid", "main", "server_alive"]
