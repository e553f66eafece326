"""Exporting a model to a static-shape artifact with its manifest, and checking it against the plain library.

The compile key (`export_key`) names an artifact by everything that changes its binary: source, revision, backend,
shapes, backend options and toolchain versions. The export asset, the sensors (to predict the key a recompile would
get) and the benchmarks all go through these functions, so they agree on what an artifact is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from neuronforge.artifacts import ManifestError, atomic_dir, compile_key, stable_hash, verify_manifest, write_manifest
from neuronforge.backends import Backend, toolchain_versions
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel


def export_options(spec: ModelSpec, backend: Backend) -> dict[str, Any]:
    options = dict(backend.export_options(spec))
    if spec.kind == "sparse":
        options["max_active_dims"] = spec.max_active_dims
    return options


def export_key(spec: ModelSpec, revision: str, backend: Backend) -> str:
    return compile_key(
        model_id=spec.source,
        revision=revision,
        backend=backend.name,
        shapes=spec.shapes,
        options=export_options(spec, backend),
        toolchain=backend.toolchain(),
    )


def output_dimension(spec: ModelSpec, model_dir: Path) -> int:
    if spec.kind == "dense":
        from neuronforge.backends.heads import load_library_model

        return int(load_library_model("dense", model_dir).get_embedding_dimension())
    return int(json.loads((model_dir / "config.json").read_text())["vocab_size"])


def export_artifact(
    spec: ModelSpec, model: ResolvedModel, backend: Backend, out_root: Path, log: logging.Logger
) -> tuple[Path, dict[str, Any], bool]:
    """Export into out_root/<compile_key>, atomically; reuse a finished artifact whose files verify.

    Returns (artifact_dir, manifest, reused).
    """
    from transformers import AutoTokenizer

    key = export_key(spec, model.revision, backend)
    final = out_root / key
    if final.exists():
        try:
            manifest = verify_manifest(final)
            log.info(f"{spec.name}: artifact {key} already exported and verified; reusing it")
            return final, manifest, True
        except ManifestError as exc:
            log.warning(f"{spec.name}: existing artifact is damaged, exporting again: {exc}")
    tokenizer = AutoTokenizer.from_pretrained(model.path, trust_remote_code=spec.trust_remote_code)
    with atomic_dir(final) as tmp:
        result = backend.export(spec, model, tmp, log)
        manifest = write_manifest(
            tmp,
            {
                "model": spec.name,
                "kind": spec.kind,
                "backend": backend.name,
                "format": result.format,
                "shapes": spec.shapes,
                "options": {**export_options(spec, backend), **result.options},
                "target": {"target": spec.target, "instance_type": spec.instance_type},
                "toolchain": backend.toolchain(),
                "source": {"id": spec.source, "revision": model.revision, "base_model": spec.base_model},
                "compile_key": key,
                "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                "dimension": output_dimension(spec, model.path) if spec.kind != "chat" else None,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **result.extra,
            },
        )
    return final, manifest, False


def manifest_summary(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """The manifest fields a person reads first, as (field, value) rows."""
    return [
        ("backend / format", f"{manifest['backend']} / {manifest['format']}"),
        ("static shapes", ", ".join(f"{k}={v}" for k, v in manifest["shapes"].items())),
        ("options", ", ".join(f"{k}={v}" for k, v in manifest["options"].items())),
        ("source", f"{manifest['source']['id']} @ {manifest['source']['revision']}"),
        ("compile key", manifest["compile_key"]),
        ("toolchain", ", ".join(f"{k} {v}" for k, v in manifest["toolchain"].items() if v)),
    ]


# Registry fields that change what happens after the export, not the artifact.
NOT_EXPORT_FIELDS = ("publish_unverified",)


def export_code_version(spec: ModelSpec) -> str:
    """Changes when the registry entry or the installed toolchain changes, so the UI marks the export stale."""
    fields = {k: v for k, v in spec.to_dict().items() if k not in NOT_EXPORT_FIELDS}
    return stable_hash({"spec": fields, "toolchain": toolchain_versions()})
