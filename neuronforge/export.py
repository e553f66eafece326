"""Exporting a model to a static-shape artifact with its manifest.

The compile key (`export_key`) names an artifact by everything that changes its binary and nothing else: source,
revision, backend, shapes, the backend's options (for Neuron also the compiler settings read from the environment)
and the versions of the packages that build it (docs/neuron.md lists the Neuron inputs). The export asset, the
sensors (to predict the key a recompile would get) and the benchmarks all go through these functions, so they agree
on what an artifact is. An export reuses, in this order: a verified folder of the same key on disk, the same key
published on the Hub (`reuse_from`, Neuron only: compiles take minutes to hours), and only then compiles.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from neuronforge.artifacts import ManifestError, atomic_dir, compile_key, stable_hash, verify_manifest, write_manifest
from neuronforge.backends import Backend, toolchain_versions
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel

if TYPE_CHECKING:
    from neuronforge.publish import Publisher


class Exported(NamedTuple):
    artifact_dir: Path
    manifest: dict[str, Any]
    reused: str | None  # None: built here; "local": a verified folder on disk; "<repo>@<sha>": downloaded from the Hub


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


def publish_identity(spec: ModelSpec, backend: Backend, key: str) -> dict[str, Any]:
    """The manifest fields a publisher names a repo by, known before anything is built."""
    from neuronforge.backends.neuron import ARTIFACT_FORMAT

    return {
        "model": spec.name,
        "kind": spec.kind,
        "backend": backend.name,
        "format": ARTIFACT_FORMAT,
        "shapes": spec.shapes,
        "compile_key": key,
    }


def export_artifact(
    spec: ModelSpec,
    model: ResolvedModel,
    backend: Backend,
    out_root: Path,
    log: logging.Logger,
    *,
    reuse_from: Publisher | None = None,
) -> Exported:
    """Export into out_root/<compile_key>, atomically; reuse a finished artifact whose files verify, or (Neuron, with
    `reuse_from`) the same compile key published on that Hub."""
    from transformers import AutoTokenizer

    key = export_key(spec, model.revision, backend)
    final = out_root / key
    if final.exists():
        try:
            manifest = verify_manifest(final)
            log.info(f"{spec.name}: artifact {key} already exported and verified; reusing it")
            return Exported(final, manifest, "local")
        except ManifestError as exc:
            log.warning(f"{spec.name}: existing artifact is damaged, exporting again: {exc}")
    if backend.name == "neuron":
        from neuronforge.instances import check_fits

        check_fits(spec, model.path)  # before minutes of compilation
        if reuse_from is not None:
            reused = _download_published(spec, backend, key, final, reuse_from, log)
            if reused is not None:
                return reused
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
    return Exported(final, manifest, None)


def _download_published(
    spec: ModelSpec, backend: Backend, key: str, final: Path, publisher: Publisher, log: logging.Logger
) -> Exported | None:
    from neuronforge.compile_reuse import download_published, find_published

    published = find_published(publisher, publish_identity(spec, backend, key), log)
    if published is None:
        return None
    try:
        with atomic_dir(final) as tmp:
            manifest = download_published(publisher, published, tmp, key)
    except Exception as exc:  # a damaged or unreachable copy: compile instead
        log.warning(f"{spec.name}: could not reuse {published.describe()} ({exc}); compiling instead")
        return None
    log.info(f"{spec.name}: compile key {key} is published as {published.describe()}; downloaded it, not compiling")
    return Exported(final, manifest, published.describe())


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
NOT_EXPORT_FIELDS = ("publish_unverified", "description", "owners")


def export_code_version(spec: ModelSpec) -> str:
    """Changes when the registry entry or the installed toolchain changes, so the UI marks the export stale."""
    fields = {k: v for k, v in spec.to_dict().items() if k not in NOT_EXPORT_FIELDS}
    return stable_hash({"spec": fields, "toolchain": toolchain_versions()})
