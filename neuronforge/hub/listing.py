"""Tree listings and "the commit that last changed each path" (`expand=True`), in time linear in the files.

Commits are immutable, so both are computed once per commit sha and cached (`ListingCache`): a paged listing of N files
then costs one walk over the history plus O(page) per page, where recomputing everything for every page of 50 was
quadratic (1.5k files / 122 commits: 24 s for `list_repo_tree(expand=True)`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from neuronforge.hub.objects import Entry, lfs_pointer

CACHE_ENTRIES = 32  # (repo, commit) listings kept in memory; each is O(files)


def folder_oids(oids: dict[str, str]) -> dict[str, str]:
    """An id for every folder of a tree ({path: blob oid}), from the paths and oids under it, in one pass."""
    listing: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path, oid in sorted(oids.items()):
        parts = path.split("/")
        for i in range(1, len(parts)):
            listing["/".join(parts[:i])].append((path, oid))
    return {folder: hashlib.sha1(json.dumps(rows).encode()).hexdigest() for folder, rows in listing.items()}


def file_item(path: str, entry: Entry) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if entry.lfs:
        item["lfs"] = {
            "oid": entry.sha256,
            "size": entry.size,
            "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
        }
    return item


def folder_item(path: str, oid: str) -> dict[str, Any]:
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


def tree_items(tree: dict[str, Entry], folders: dict[str, str], folder: str, recursive: bool) -> list[dict[str, Any]]:
    """What the Hub lists for `folder`: its folders first, then its files, each sorted by path."""
    prefix = f"{folder}/" if folder else ""

    def wanted(path: str) -> bool:
        return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

    items = [folder_item(p, oid) for p, oid in sorted(folders.items()) if wanted(p)]
    return items + [file_item(p, e) for p, e in sorted(tree.items()) if wanted(p)]


def last_changes(history: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """For every file and folder of the first commit's tree: the commit (id, title, date) that last changed it.

    `history` holds the stored commits from the head back to the root. A path's last change is the oldest commit of
    the unbroken run, from the head back, in which it looks as it does at the head (same blob, or same folder id).
    One pass over each commit's tree, stopping as soon as every path is placed.
    """
    result: dict[str, dict[str, str]] = {}
    head: dict[str, str] = {}
    pending: set[str] = set()
    newer: dict[str, Any] | None = None
    for commit in history:
        state = {path: raw["oid"] for path, raw in commit["tree"].items()}
        if newer is None or any(key.endswith("/") for key in pending):
            state.update({f"{p}/": oid for p, oid in folder_oids(state).items()})  # '/' keeps folders apart
        if newer is None:
            head = state
            pending = set(head)
        else:
            for key in [k for k in pending if state.get(k) != head[k]]:
                result[key] = _summary(newer)
                pending.discard(key)
        if not pending:
            break
        newer = commit
    if newer is not None:
        for key in pending:
            result[key] = _summary(newer)  # unchanged since the root commit
    return {key.rstrip("/") if key.endswith("/") else key: summary for key, summary in result.items()}


def _summary(commit: dict[str, Any]) -> dict[str, str]:
    return {"id": commit["id"], "title": commit["title"], "date": commit["date"]}


class ListingCache:
    """A small thread-safe LRU of values computed per (repo, commit sha, …): valid forever, as commits never change."""

    def __init__(self, size: int = CACHE_ENTRIES):
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()  # outside the lock: two threads may compute the same value once each, never block others
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value
