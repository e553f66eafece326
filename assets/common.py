"""Small pieces every model-running asset shares."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from neuronforge.artifacts import read_manifest
from neuronforge.records import StageRecord
from neuronforge.registry import ModelSpec
from resources.storage import StorageResource

if TYPE_CHECKING:
    from neuronforge.shards import ShardRun  # pyarrow: not at definitions load


def exported_artifact(
    context: dg.AssetExecutionContext, storage: StorageResource, spec: ModelSpec
) -> tuple[StageRecord, Path, dict[str, Any]]:
    """The export this step reads (the record its upstream materialization named), its folder and manifest."""
    record = storage.record_for(context, dg.AssetKey([spec.name, "export"]))
    artifact_dir = record.path_of("artifact_dir")
    return record, artifact_dir, read_manifest(artifact_dir)


def upstream_records(
    context: dg.AssetExecutionContext, storage: StorageResource, spec: ModelSpec
) -> tuple[StageRecord, StageRecord]:
    """The export and corpus records a corpus stage of `spec` encodes from."""
    return (
        storage.record_for(context, dg.AssetKey([spec.name, "export"])),
        storage.record_for(context, dg.AssetKey("corpus")),
    )


def shard_record(out_dir: Path, run: "ShardRun") -> dict[str, Any]:
    """What a corpus-encoding stage's record says of its shards (readers use exactly these, in this order)."""
    return {"dir": str(out_dir), "shards": run.shards, "chunks": run.chunks, "documents": run.documents}


def cores_needed(spec: ModelSpec, manifest: dict[str, Any]) -> int:
    """A Neuron artifact runs on the cores it was compiled for; other backends take one slot."""
    return spec.tensor_parallel_size if manifest["backend"] == "neuron" else 1


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def png_markdown(figure: Any, alt: str) -> str:
    """Dagster has no image metadata type: embed the PNG as base64 in markdown."""
    import base64
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def after_upstream_passes() -> dg.AutomationCondition:
    """Declarative automation for stages downstream of export: run when an upstream asset updates, but only once
    its blocking checks (e.g. export parity with the reference library) have passed."""
    return dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def stage_asset(spec: ModelSpec, stage: str, *, reads_corpus: bool, kinds: set[str], description: str, **kwargs: Any):
    """The `@dg.asset` of a model's downstream stage (embeddings, sparse index, chat evaluation): keyed
    `<model>/<stage>` in the model's group, after its export (and the corpus), in the `neuron` pool since it runs the
    model, and run by declarative automation once the blocking checks of what it reads have passed."""
    deps = [dg.AssetKey("corpus")] if reads_corpus else []
    return dg.asset(
        key=[spec.name, stage],
        deps=[*deps, dg.AssetKey([spec.name, "export"])],
        group_name=spec.name,
        kinds=kinds,
        pool="neuron",
        automation_condition=after_upstream_passes(),
        description=description,
        tags={"model_kind": spec.kind},
        **kwargs,
    )
