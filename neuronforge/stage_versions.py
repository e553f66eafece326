"""What each stage's output depends on besides its inputs' data: its code's version and its settings.

Dagster marks an asset stale when its code version changes; the code version here is a hash of these inputs, and the
materialization describes them (and what changed since the last one: "chunk_overlap 16 → 32"), so the UI says why.

Bump a stage's number in STAGE_CODE when a change to its code changes what it produces — not for a refactor. Settings
come from the configuration the code location loads (corpus.yaml, models.yaml).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from neuronforge.artifacts import stable_hash

STAGE_CODE = {
    "corpus": 1,  # neuronforge/corpus: readers, bad-input rules, the built-in stdlib corpus
    "chunking": 1,  # neuronforge/corpus/chunking.py and the shard plan in neuronforge/shards.py
    "corpus_embeddings": 1,  # the dense table written per shard
    "sparse_index": 1,  # the SPLADE table per shard (the index format has its own FORMAT_VERSION)
    "retrieval_eval": 2,  # neuronforge/retrieval.py metrics and fusion; v2: equal scores ranked by document id
    "chat_smoke_eval": 1,  # the suite runner and its judges
    "publish": 1,  # what goes into the Hub repo and its card
}


def code_version(inputs: Mapping[str, Any]) -> str:
    return stable_hash(dict(inputs))


def describe(inputs: Mapping[str, Any]) -> str:
    """'chunking v1, chunk_overlap 16, shard_chunks 512': versions as vN, settings as name value."""
    parts = []
    for name, value in inputs.items():
        if name in STAGE_CODE:
            parts.append(f"{name} v{value}")
        else:
            parts.append(f"{name} {_show(value)}")
    return ", ".join(parts)


def describe_change(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str:
    """What differs from the previous materialization's inputs: 'chunk_overlap 16 → 32; chunking v1 → v2'."""
    if before is None:
        return "first materialization with recorded code-version inputs"
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name in STAGE_CODE:
            changes.append(f"{name} v{old} → v{new}")
        else:
            changes.append(f"{name} {_show(old)} → {_show(new)}")
    return "; ".join(changes) or "unchanged"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return "none" if value is None else str(value)
