"""What changed since an artifact was built: toolchain versions, models.yaml entries, the loaded registry.

Pure functions over manifests and registry entries, shared by the sensors (which decide what to rebuild) and anything
else that asks whether an export is current. Cheap by design: package metadata and JSON, never torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from neuronforge.artifacts import compile_key
from neuronforge.backends import Backend
from neuronforge.export import export_options
from neuronforge.registry import ModelSpec, Registry

COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


def toolchain_changes(
    recorded: Mapping[str, str | None], current: Mapping[str, str | None]
) -> dict[str, tuple[str | None, str | None]]:
    """Packages whose version differs between an export's manifest and this host: {package: (recorded, current)}."""
    return {
        name: (recorded.get(name), current.get(name))
        for name in sorted(set(recorded) | set(current))
        if recorded.get(name) != current.get(name)
    }


def describe_versions(changes: Mapping[str, tuple[str | None, str | None]]) -> str:
    return ", ".join(f"{name} {old or 'absent'} → {new or 'absent'}" for name, (old, new) in changes.items())


def spec_changes(spec: ModelSpec, manifest: Mapping[str, Any], backend: Backend) -> list[str]:
    """How the loaded spec differs from the inputs its last export was compiled from ([] if it does not).

    The manifest's compile key hashes the source, revision, backend, shapes, options and toolchain; recomputing it with
    the spec's source/shapes/options but the manifest's own revision and toolchain isolates changes of models.yaml
    (new toolchains are the toolchain sensor's, new commits the upstream sensor's).
    """
    source = manifest.get("source") or {}
    changes = []
    if source.get("id") != spec.source:
        changes.append(f"source {source.get('id')} → {spec.source}")
    if spec.revision and COMMIT_SHA.match(spec.revision) and spec.revision != source.get("revision"):
        changes.append(f"revision {source.get('revision')} → {spec.revision}")
    if manifest.get("backend") != backend.name:
        changes.append(f"backend {manifest.get('backend')} → {backend.name}")
    if dict(manifest.get("shapes") or {}) != spec.shapes:
        old = ", ".join(f"{k}={v}" for k, v in (manifest.get("shapes") or {}).items())
        changes.append(f"shapes {old} → " + ", ".join(f"{k}={v}" for k, v in spec.shapes.items()))
    if not changes:
        recomputed = compile_key(
            model_id=spec.source,
            revision=str(source.get("revision")),
            backend=backend.name,
            shapes=spec.shapes,
            options=export_options(spec, backend),
            toolchain=manifest.get("toolchain") or {},
        )
        if recomputed != manifest.get("compile_key"):
            changes.append("export options (auto_cast, quantize, max_active_dims, tensor_parallel_size, ...)")
    return changes


def registry_drift(loaded: Registry, on_disk: Registry) -> str:
    """What models.yaml on disk adds, changes or removes relative to the loaded definitions ('' when nothing)."""
    loaded_by_name = {m.name: m for m in loaded.models}
    disk_by_name = {m.name: m for m in on_disk.models}
    parts = []
    new = [n for n in disk_by_name if n not in loaded_by_name]
    if new:
        parts.append(f"new model(s) {', '.join(new)} (not assets until the code location is reloaded)")
    changed = []
    for name in loaded_by_name.keys() & disk_by_name.keys():
        before, after = loaded_by_name[name].to_dict(), disk_by_name[name].to_dict()
        fields = sorted(k for k in after if before.get(k) != after.get(k))
        if fields:
            changed.append(f"{name} ({', '.join(fields)})")
    if changed:
        parts.append("changed " + "; ".join(sorted(changed)))
    removed = [n for n in loaded_by_name if n not in disk_by_name]
    if removed:
        parts.append(f"removed {', '.join(removed)}")
    return ", ".join(parts)
