"""The last valid models.yaml, so that a broken edit never takes the code location down.

Every load that validates saves a byte copy of the file in the data directory; when a later load fails (bad YAML, an
unknown field, a typo in a value), the definitions are built from that copy instead and carry the error — naming the
file, the model and the field — so the UI keeps every asset, check and sensor and says what to fix. With no valid
copy yet (a first load of a broken file), the registry is empty: the location still loads, showing the error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from neuronforge.artifacts import stable_hash, write_bytes_atomic
from neuronforge.paths import data_dir
from neuronforge.registry import DEFAULT_REGISTRY, Registry, RegistryError, load_registry

SNAPSHOT_DIR = "registry"


@dataclass(frozen=True)
class LoadedRegistry:
    registry: Registry  # what the definitions are built from; its `path` is always the real models.yaml
    error: str | None = None  # why models.yaml itself could not be used (None: it was)
    snapshot: Path | None = None  # the copy the registry came from, when it did


def snapshot_path(path: Path, root: Path | None = None) -> Path:
    """Where the last valid copy of `path` lives: one per registry file (tests use their own)."""
    return (root or data_dir()) / SNAPSHOT_DIR / f"last-valid-{stable_hash(str(path.resolve()))}.yaml"


def load_registry_or_last_valid(path: Path | str | None = None, *, root: Path | None = None) -> LoadedRegistry:
    """models.yaml if it validates (saving it as the last valid copy), else the last valid copy and the error."""
    path = Path(path or DEFAULT_REGISTRY)
    snapshot = snapshot_path(path, root)
    try:
        before = path.read_bytes() if path.is_file() else b""
        registry = load_registry(path)
    except RegistryError as exc:
        return _fallback(path, snapshot, str(exc))
    # Saved only if the bytes validated are still the file's: an edit racing this load must not be kept as valid.
    if path.read_bytes() == before and (not snapshot.is_file() or snapshot.read_bytes() != before):
        write_bytes_atomic(snapshot, before)
    return LoadedRegistry(registry)


def _fallback(path: Path, snapshot: Path, error: str) -> LoadedRegistry:
    if snapshot.is_file():
        try:
            last = load_registry(snapshot)
        except RegistryError as exc:  # e.g. a built-in package it names was uninstalled since
            error = f"{error} (the last valid copy {snapshot} no longer loads either: {exc})"
        else:
            return LoadedRegistry(replace(last, path=path), error=error, snapshot=snapshot)
    return LoadedRegistry(Registry(path=path, models=()), error=error)
