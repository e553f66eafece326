"""export: compile or export each model to a static-shape artifact with a manifest (neuron | onnx | torch)."""

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import dagster as dg

from neuronforge.artifacts import ManifestError, atomic_dir, compile_key, stable_hash, verify_manifest, write_manifest
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel
from resources.backends import Backend, BackendResource, toolchain_versions
from resources.neuron import NeuronResource
from resources.storage import StorageResource

PARITY_TEXTS = [
    "Neuron compiles models for static shapes.",
    "A short one.",
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun by the river bank.",
    "Inverted indexes map each term to the documents that contain it.",
]


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
        from resources.backends.heads import load_library_model

        return int(load_library_model("dense", model_dir).get_embedding_dimension())
    import json

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


def manifest_markdown(manifest: dict[str, Any]) -> str:
    rows = [
        ("backend / format", f"{manifest['backend']} / {manifest['format']}"),
        ("static shapes", ", ".join(f"{k}={v}" for k, v in manifest["shapes"].items())),
        ("options", ", ".join(f"{k}={v}" for k, v in manifest["options"].items())),
        ("source", f"{manifest['source']['id']} @ {manifest['source']['revision']}"),
        ("compile key", manifest["compile_key"]),
        ("toolchain", ", ".join(f"{k} {v}" for k, v in manifest["toolchain"].items() if v)),
    ]
    files = "\n".join(f"| `{name}` | `{digest[:16]}…` |" for name, digest in manifest["files"].items())
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"| field | value |\n|---|---|\n{table}\n\n| file | sha256 |\n|---|---|\n{files}\n"


def export_code_version(spec: ModelSpec) -> str:
    """Changes when the registry entry or the installed toolchain changes, so the UI marks the export stale."""
    return stable_hash({"spec": spec.to_dict(), "toolchain": toolchain_versions()})


def build_export_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    kinds = {"neuron", "onnx"} if spec.kind != "chat" else {"neuron", "pytorch"}

    @dg.asset(
        key=[spec.name, "export"],
        deps=[dg.AssetKey([spec.name, "source_model"])],
        group_name=spec.name,
        kinds=kinds,
        pool="neuron",
        code_version=export_code_version(spec),
        description=f"Static-shape artifact (batch {spec.batch_size} × seq {spec.sequence_length}) with manifest.json",
        tags={"model_kind": spec.kind},
    )
    def export(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        backends: BackendResource,
        neuron: NeuronResource,
    ):
        source = storage.read_pointer("source_model", spec.name)
        model = ResolvedModel(spec.name, Path(source["path"]), source["revision"], spec.source, spec.base_model)
        backend = backends.for_model(spec)
        # Only a Neuron compile/run needs the model's cores; other backends take a single slot.
        cores = spec.tensor_parallel_size if backend.name == "neuron" else 1
        with neuron.lease(cores, holder=f"{spec.name}/export run {context.run_id[:8]}", log=context.log) as lease:
            artifact_dir, manifest, reused = export_artifact(
                spec, model, backend, storage.path("artifacts", spec.name), context.log
            )
        storage.write_pointer(
            "export",
            spec.name,
            {"artifact_dir": str(artifact_dir), "compile_key": manifest["compile_key"], "backend": backend.name},
        )
        size = sum(p.stat().st_size for p in artifact_dir.rglob("*") if p.is_file())
        return dg.MaterializeResult(
            metadata={
                "artifact_dir": dg.MetadataValue.path(str(artifact_dir)),
                "compile_key": manifest["compile_key"],
                "backend": backend.name,
                "format": manifest["format"],
                "batch_size": spec.batch_size,
                "sequence_length": spec.sequence_length,
                "reused_existing": reused,
                "size_mb": round(size / 2**20, 1),
                "manifest": dg.MetadataValue.md(manifest_markdown(manifest)),
                **lease.metadata(),
            },
            # The compile key is the data version: downstream publish/embedding runs go stale when it changes.
            data_version=dg.DataVersion(manifest["compile_key"]),
        )

    return export


def parity(artifact_dir: Path, model_dir: Path, kind: str, sequence_length: int) -> dict[str, float]:
    """Compare an encoder artifact with the plain library on texts of mixed lengths (rows must stay in order)."""
    import numpy as np

    from resources.backends import load_encoder
    from resources.backends.heads import reference_encode

    got = load_encoder(artifact_dir).encode(PARITY_TEXTS)
    want = reference_encode(kind, model_dir, PARITY_TEXTS, sequence_length)
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1) + 1e-12)
    return {
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "max_abs_diff": float(np.abs(got - want).max()),
    }


def build_export_checks(spec: ModelSpec) -> list[dg.AssetChecksDefinition]:
    if spec.kind == "chat":
        return []

    @dg.asset_check(
        asset=dg.AssetKey([spec.name, "export"]),
        name="matches_reference",
        blocking=True,
        description="The artifact's outputs equal the plain sentence-transformers library's on mixed-length texts "
        "(cosine >= 0.9999 for fp32, mean >= 0.98 for int8).",
    )
    def matches_reference(storage: StorageResource) -> dg.AssetCheckResult:
        from neuronforge.artifacts import read_manifest
        from resources.backends import neuron_available

        pointer = storage.read_pointer("export", spec.name)
        manifest = read_manifest(Path(pointer["artifact_dir"]))
        if manifest["backend"] == "neuron" and not neuron_available():
            return dg.AssetCheckResult(
                passed=True,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"not_run": "compiled on a host without a Neuron device; run the check on an inf2/trn1 host"},
            )
        source = storage.read_pointer("source_model", spec.name)
        scores = parity(Path(pointer["artifact_dir"]), Path(source["path"]), spec.kind, spec.sequence_length)
        int8 = manifest["format"].endswith("int8")
        passed = scores["mean_cosine"] >= 0.98 if int8 else scores["min_cosine"] >= 0.9999
        return dg.AssetCheckResult(passed=passed, metadata={**scores, "format": manifest["format"]})

    return [matches_reference]
