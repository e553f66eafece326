"""export: compile or export each model to a static-shape artifact with a manifest (neuron | onnx | torch)."""

from pathlib import Path
from typing import Any

import dagster as dg

from assets.common import backend_kinds, cores_needed, metadata_table
from neuronforge.export import export_artifact, export_code_version, manifest_summary
from neuronforge.parity import PARITY_TEXTS
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel
from resources.backends import BackendResource
from resources.devices import NeuronResource
from resources.hub import HubResource
from resources.storage import StorageResource, record_metadata


def manifest_files(artifact_dir: Path, manifest: dict[str, Any]) -> dg.MetadataValue:
    rows = [
        [
            name,
            round((artifact_dir / name).stat().st_size / 2**20, 3) if (artifact_dir / name).is_file() else 0.0,
            digest,
        ]
        for name, digest in manifest["files"].items()
    ]
    return metadata_table([("file", "string"), ("size_mb", "float"), ("sha256", "string")], rows)


def build_export_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "export"],
        deps=[dg.AssetKey([spec.name, "source_model"])],
        group_name=spec.name,
        kinds=backend_kinds(spec),
        owners=list(spec.owners),
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
        hub: HubResource,
    ):
        source = storage.record_for(context, dg.AssetKey([spec.name, "source_model"]))
        model = ResolvedModel(spec.name, source.path_of("path"), source["revision"], spec.source, spec.base_model)
        backend = backends.for_model(spec)
        # Only a Neuron compile/run needs the model's cores; other backends take a single slot.
        cores = spec.tensor_parallel_size if backend.name == "neuron" else 1
        with neuron.lease(cores, holder=f"{spec.name}/export run {context.run_id[:8]}", log=context.log) as lease:
            # A Neuron compile takes minutes to hours: first look for the same compile key on the configured Hub.
            reuse_from = hub.publisher() if backend.name == "neuron" and backends.reuse_published else None
            artifact_dir, manifest, reused = export_artifact(
                spec, model, backend, storage.path("artifacts", spec.name), context.log, reuse_from=reuse_from
            )
        origin = {None: "built here", "local": "reused the verified local artifact"}.get(
            reused, f"reused from {reused}"
        )
        compile_cache = {}
        if backend.name == "neuron" and spec.kind == "chat":  # only decoder compiles use the persistent cache
            compile_cache["neuron_compile_cache_url"] = backend.compile_cache_url()
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
                "origin": origin,
                **compile_cache,
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
                "reused_existing": reused is not None,
                "origin": origin,
                **compile_cache,
                "size_mb": round(size / 2**20, 1),
                "manifest": metadata_table([("field", "string"), ("value", "string")], manifest_summary(manifest)),
                "files": manifest_files(artifact_dir, manifest),
                **lease.metadata(),
            },
            # The compile key (= the record key) is the data version: downstream stages go stale when it changes.
            data_version=dg.DataVersion(manifest["compile_key"]),
        )

    return export


def not_evaluated(reason: str, metadata: dict[str, Any]) -> dg.AssetCheckResult:
    """A check that could not run does not pass: a failed WARN result that says why (publishing waits on it)."""
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"Not evaluated: {reason}",
        metadata={"not_evaluated": reason, **metadata},
    )


def build_export_checks(spec: ModelSpec) -> list[dg.AssetChecksDefinition]:
    if spec.kind == "chat":
        return []

    @dg.asset_check(
        asset=dg.AssetKey([spec.name, "export"]),
        name="matches_reference",
        blocking=True,
        pool="neuron",  # it loads the model: a step of the neuron pool with a lease, like every model step
        description="The artifact's outputs equal the plain sentence-transformers library's on mixed-length texts, "
        "within the tolerance of how it was compiled (fp32: min cosine >= 0.9999; int8: mean >= 0.98; Neuron "
        "auto_cast: the table in neuronforge/parity.py). Not evaluated (failed, WARN) where the artifact cannot run.",
    )
    def matches_reference(
        context: dg.AssetCheckExecutionContext, storage: StorageResource, neuron: NeuronResource
    ) -> dg.AssetCheckResult:
        from neuronforge.artifacts import read_manifest
        from neuronforge.backends import neuron_host_problem
        from neuronforge.backends.neuron import NeuronSDKError, NeuronToolchainMismatch
        from neuronforge.parity import parity, record_verification, tolerance_for

        # The artifact this run exported (a check judges its own run's output, whatever ran since).
        record = storage.record_for(context, dg.AssetKey([spec.name, "export"]))
        artifact_dir = record.path_of("artifact_dir")
        manifest = read_manifest(artifact_dir)
        facts = {"format": manifest["format"], "compile_key": record.key}
        try:
            tolerance = tolerance_for(manifest)
        except ValueError as exc:
            return not_evaluated(f"{exc}; measure one on a device (docs/neuron.md)", facts)
        facts["threshold"] = tolerance.describe()
        problem = neuron_host_problem() if manifest["backend"] == "neuron" else None
        if problem:
            return not_evaluated(
                f"the Neuron artifact cannot run here ({problem}); run `neuronforge-validate` on an inf2/trn1 host",
                facts,
            )
        holder = f"{spec.name}/matches_reference run {context.run.run_id[:8]}"
        try:
            with neuron.lease(cores_needed(spec, manifest), holder=holder, log=context.log):
                scores = parity(artifact_dir, record.path_of("source_path"), spec.kind, spec.sequence_length)
        except (NeuronSDKError, NeuronToolchainMismatch) as exc:
            return not_evaluated(f"the artifact did not load on this host: {exc}", facts)
        device = "neuron" if manifest["backend"] == "neuron" else "cpu"
        verification = record_verification(
            storage.records, spec.name, manifest, scores, evaluated_by="matches_reference", device=device
        )
        passed = bool(verification["passed"])
        value = scores[tolerance.metric]
        return dg.AssetCheckResult(
            passed=passed,
            description=f"{tolerance.metric.replace('_', ' ')} {value:.6f} "
            f"{'>=' if passed else '<'} {tolerance.threshold} ({tolerance.basis}) on {len(PARITY_TEXTS)} texts.",
            metadata={**scores, **facts, "verification": dg.MetadataValue.path(str(verification.path))},
        )

    return [matches_reference]
