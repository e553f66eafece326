"""Compile reuse: before compiling, look for the same compile key already published, and download it instead.

Every published artifact is one commit tagged `ck-<compile_key>` in the repo the publisher's template names
(neuronforge/publish.py). A Neuron compile takes minutes to an hour, so an export first asks the configured Hub for
that tag; if it exists, the files its manifest lists are downloaded at the tagged commit, their sha256s checked
against that manifest, and the artifact is used as if compiled here. Any failure (no repo, no tag, Hub down, a file
that does not match) falls back to compiling: reuse saves time, it never decides correctness.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronforge.artifacts import MANIFEST, ManifestError, verify_manifest

if TYPE_CHECKING:
    from neuronforge.publish import Publisher

TAG_PREFIX = "ck-"  # neuronforge.publish.TAG_PREFIX


@dataclass(frozen=True)
class PublishedArtifact:
    repo_id: str
    commit_sha: str
    tag: str

    def describe(self) -> str:
        return f"{self.repo_id}@{self.commit_sha}"


def find_published(publisher: Publisher, identity: dict[str, Any], log: logging.Logger) -> PublishedArtifact | None:
    """The published commit tagged with `identity`'s compile key, or None (also when the Hub cannot be asked)."""
    repo_id = publisher.repo_id_for(identity)
    tag = f"{TAG_PREFIX}{identity['compile_key']}"
    try:
        refs = publisher.api().list_repo_refs(repo_id)
    except Exception as exc:  # no repo yet, no access, Hub down: compile instead
        log.info(f"compile reuse: no {tag} found in {repo_id} ({type(exc).__name__}); compiling")
        return None
    sha = {ref.name: ref.target_commit for ref in refs.tags}.get(tag)
    if sha is None:
        log.info(f"compile reuse: {repo_id} has no tag {tag}; compiling")
        return None
    return PublishedArtifact(repo_id, sha, tag)


def download_published(
    publisher: Publisher, published: PublishedArtifact, dest: Path, compile_key: str
) -> dict[str, Any]:
    """Download the artifact's files into the empty folder `dest` and verify them against its manifest.

    Raises ManifestError when the manifest names another compile key or a file differs from its sha256.
    """
    api = publisher.api()
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as staging:
        manifest_file = api.hf_hub_download(
            published.repo_id, MANIFEST, revision=published.commit_sha, local_dir=staging
        )
        manifest = json.loads(Path(manifest_file).read_text())
        if manifest.get("compile_key") != compile_key:
            raise ManifestError(
                f"{published.describe()} is tagged {published.tag} but its {MANIFEST} says compile key "
                f"{manifest.get('compile_key')!r}"
            )
        files = sorted(manifest.get("files") or {})
        api.snapshot_download(published.repo_id, revision=published.commit_sha, local_dir=staging, allow_patterns=files)
        # local_dir downloads keep Hub metadata under .cache/: move only the artifact's own files.
        for name in [*files, MANIFEST]:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(staging) / name), target)
    return verify_manifest(dest)
