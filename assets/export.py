"""export: compile or export each model to a static-shape artifact with a manifest (neuron | onnx | torch)."""

from typing import Any

import dagster as dg

from neuronforge.export import export_artifact, export_code_version, manifest_summary, parity
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel
from resources.backends import BackendResource
from resources.devices import NeuronResource
from resources.storage import StorageResource, record_metadata


def manifest_markdown(manifest: dict[str, Any]) -> str:
    files = "\n".join(f"| `{name}` | `{digest[:16]}…` |" for name, digest in manifest["files"].items())
    table = "\n".join(f"| {k} | {v} |" for k, v in manifest_summary(manifest))
    return f"| field | value |\n|---|---|\n{table}\n\n| file | sha256 |\n|---|---|\n{files}\n"


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
        source = storage.record_for(context, dg.AssetKey([spec.name, "source_model"]))
        model = ResolvedModel(spec.name, source.path_of("path"), source["revision"], spec.source, spec.base_model)
        backend = backends.for_model(spec)
        # Only a Neuron compile/run needs the model's cores; other backends take a single slot.
        cores = spec.tensor_parallel_size if backend.name == "neuron" else 1
        with neuron.lease(cores, holder=f"{spec.name}/export run {context.run_id[:8]}", log=context.log) as lease:
            artifact_dir, manifest, reused = export_artifact(
                spec, model, backend, storage.path("artifacts", spec.name), context.log
            )
        record = storage.write_record(
            context.asset_key,
            manifest["compile_key"],
            {
                "artifact_dir": str(artifact_dir),
                "compile_key": manifest["compile_key"],
                "backend": backend.name,
                "format": manifest["format"],
                "source_path": str(model.path),
                "source_revision": model.revision,
            },
        )
        size = sum(p.stat().st_size for p in artifact_dir.rglob("*") if p.is_file())
        return dg.MaterializeResult(
            metadata={
                **record_metadata(record),
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
            # The compile key (= the record key) is the data version: downstream stages go stale when it changes.
            data_version=dg.DataVersion(manifest["compile_key"]),
        )

    return export


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
    def matches_reference(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        from neuronforge.artifacts import read_manifest
        from neuronforge.backends import neuron_available

        # The artifact this run exported (a check judges its own run's output, whatever ran since).
        record = storage.record_for(context, dg.AssetKey([spec.name, "export"]))
        artifact_dir = record.path_of("artifact_dir")
        manifest = read_manifest(artifact_dir)
        if manifest["backend"] == "neuron" and not neuron_available():
            return dg.AssetCheckResult(
                passed=True,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"not_run": "compiled on a host without a Neuron device; run the check on an inf2/trn1 host"},
            )
        scores = parity(artifact_dir, record.path_of("source_path"), spec.kind, spec.sequence_length)
        int8 = manifest["format"].endswith("int8")
        passed = scores["mean_cosine"] >= 0.98 if int8 else scores["min_cosine"] >= 0.9999
        return dg.AssetCheckResult(
            passed=passed, metadata={**scores, "format": manifest["format"], "compile_key": record.key}
        )

    return [matches_reference]
