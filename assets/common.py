"""Small pieces every model-running asset shares."""

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from neuronforge.artifacts import read_manifest
from neuronforge.records import StageRecord
from neuronforge.registry import ModelSpec
from neuronforge.stage_versions import STAGE_CODE, describe, describe_change
from resources.corpus import CorpusResource
from resources.storage import StorageResource

if TYPE_CHECKING:
    from neuronforge.plots import Plot
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
    """What a corpus-encoding stage's record says of its shards (readers use exactly these, in this order), with each
    shard's sha256 and row count so a reader can tell a damaged file."""
    return {
        "dir": str(out_dir),
        "shards": run.shards,
        "chunks": run.chunks,
        "documents": run.documents,
        "shard_files": run.files,
    }


def neuron_pool_slots(context: dg.AssetExecutionContext) -> int:
    """How many steps the `neuron` pool lets run at once on this instance (1 when it cannot say)."""
    try:
        slots = context.instance.event_log_storage.get_concurrency_info("neuron").slot_count
    except NotImplementedError:
        slots = 0
    return slots or context.instance.get_concurrency_config().pool_config.default_pool_limit or 1


def encode_stage_shards(
    context: dg.AssetExecutionContext,
    spec: ModelSpec,
    neuron: Any,
    corpus: Any,
    artifact_dir: Path,
    manifest: dict[str, Any],
    source: Path,
    out_dir: Path,
    total_documents: int | None = None,
    partition: str | None = None,
) -> tuple["ShardRun", Any, Any]:
    """Encode the corpus `source` (the documents of one corpus `partition`, given its key) into `out_dir` with the
    artifact, on `data_parallel` replicas of the model over the cores it leases
    (neuronforge.data_parallel.encode_corpus_shards); returns the run, the lease and the tokenizer the shards were cut
    with. The step process loads no model unless it encodes in-process itself. Progress lines (done/total chunks,
    rate, ETA) at least every 10 s; the total is estimated from `total_documents` (of the partition)."""
    from transformers import AutoTokenizer

    from neuronforge.data_parallel import ArtifactShardEncoder, encode_corpus_shards
    from neuronforge.progress import Progress

    tokenizer = AutoTokenizer.from_pretrained(artifact_dir)
    shards = corpus.plan_shards(source, tokenizer, int(manifest["shapes"]["sequence_length"]), partition=partition)
    stage = f"{spec.name}/{context.asset_key.path[-1]}" + (f" {partition}" if partition else "")
    with Progress(stage, "chunks", None, context.log) as progress:
        run, lease = encode_corpus_shards(
            shards,
            out_dir,
            manifest["compile_key"],
            ArtifactShardEncoder(str(artifact_dir)),
            allocator=neuron.allocator(),
            holder=f"{stage} run {context.run_id[:8]}",
            cores_per_replica=cores_needed(spec, manifest),
            data_parallel=spec.data_parallel,
            pool_slots=neuron_pool_slots(context),
            log=context.log,
            progress=progress,
            total_documents=total_documents,
        )
    return run, lease, tokenizer


def replica_metadata(run: "ShardRun") -> dict[str, Any]:
    """Replicas, their cores and per-replica throughput, for the UI."""
    columns = [
        ("replica", "int"),
        ("cores", "string"),
        ("shards", "int"),
        ("chunks", "int"),
        ("chunks_per_s", "float"),
        ("load_s", "float"),
        ("restarts", "int"),
    ]
    rows = [dg.TableRecord({name: r[name] for name, _ in columns}) for r in run.replicas]
    return {
        "replicas": len(run.replicas),
        "shards_repaired": run.repaired,
        "replica_throughput": dg.MetadataValue.table(
            rows, schema=dg.TableSchema([dg.TableColumn(name, kind) for name, kind in columns])
        ),
    }


# What the UI shows for each backend: Dagster has icons for `pytorch` and `aws` (Neuron is AWS's), none for onnx.
KINDS_BY_BACKEND = {"neuron": {"neuron", "aws"}, "onnx": {"onnx"}, "torch": {"pytorch"}}


def load_time_backend(spec: ModelSpec) -> str:
    """The backend the model resolves to on this host, judged when the definitions load — from device nodes, without
    importing torch or the Neuron SDK (definitions must load in seconds; the step itself asks BackendResource):
    neuron with a /dev/neuronN, torch with an NVIDIA device or for chat models, otherwise onnx."""
    name = spec.backend
    if name == "auto":
        if glob.glob("/dev/neuron[0-9]*"):
            name = "neuron"
        elif Path("/dev/nvidia0").exists() or spec.kind == "chat":
            name = "torch"
        else:
            name = "onnx"
    return "torch" if spec.kind == "chat" and name == "onnx" else name


def backend_kinds(spec: ModelSpec) -> set[str]:
    return set(KINDS_BY_BACKEND[load_time_backend(spec)])


def cores_needed(spec: ModelSpec, manifest: dict[str, Any]) -> int:
    """A Neuron artifact runs on the cores it was compiled for; other backends take one slot."""
    return spec.tensor_parallel_size if manifest["backend"] == "neuron" else 1


# ------------------------------------------------------------------------------------- code versions, explained
VERSIONED_STAGES = ("corpus", "corpus_embeddings", "sparse_index", "retrieval_eval", "chat_smoke_eval", "publish")


def stage_inputs(stage: str, corpus: CorpusResource | None = None, spec: ModelSpec | None = None) -> dict[str, Any]:
    """What changes a stage's output besides its upstream data: its code (neuronforge/stage_versions.py) and its
    settings (corpus.yaml, models.yaml). The code version is their hash; the materialization describes them."""
    code = STAGE_CODE
    if stage in ("chat_smoke_eval", "publish"):
        return {stage: code[stage]}
    if corpus is None:
        raise ValueError(f"the code version of {stage} depends on the corpus settings: pass the CorpusResource")
    chunking = {
        "chunking": code["chunking"],
        "chunk_overlap": corpus.chunk_overlap,
        "shard_chunks": corpus.shard_chunks,
        "partitions": corpus.partitions,
    }
    if stage == "corpus":
        return {
            "corpus": code["corpus"],
            "source": corpus.source or "builtin",
            "bad_input": corpus.bad_input,
            "max_doc_bytes": corpus.max_doc_bytes,
            "min_body_chars": corpus.min_body_chars,
        }
    if stage == "corpus_embeddings":
        return {"corpus_embeddings": code["corpus_embeddings"], **chunking}
    if stage == "sparse_index":
        return {
            "sparse_index": code["sparse_index"],
            **chunking,
            "max_active_dims": spec.max_active_dims if spec else None,
        }
    if stage == "retrieval_eval":
        return {
            "retrieval_eval": code["retrieval_eval"],
            "rrf_k": corpus.rrf_k,
            "rrf_weights": dict(corpus.rrf_weights),
        }
    raise ValueError(f"no code-version inputs for stage {stage!r}")


def code_version_metadata(context: dg.AssetExecutionContext, inputs: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    """The inputs of the code version and what changed since the asset's previous materialization."""
    previous = context.instance.get_latest_materialization_event(context.asset_key)
    entry = (
        previous.asset_materialization.metadata.get(CODE_VERSION_INPUTS)
        if previous and previous.asset_materialization
        else None
    )
    before = entry.value if entry is not None and isinstance(entry.value, dict) else None
    return {
        CODE_VERSION_INPUTS: dg.MetadataValue.json(inputs),
        "code_version_change": dg.MetadataValue.text(
            f"{describe(inputs)} (since last: {describe_change(before, inputs)})"
        ),
    }


CODE_VERSION_INPUTS = "code_version_inputs"
ROW_COUNT = "dagster/row_count"  # the UI shows it beside the asset (catalog, asset page)


def metadata_table(columns: list[tuple[str, str]], rows: list[list[Any]]) -> dg.MetadataValue:
    """Tabular metadata as Dagster's table type, with a schema: columns are (name, type) with type one of
    string, int, float, bool. The UI renders it as a sortable table."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns])
    records = [dg.TableRecord(dict(zip([name for name, _ in columns], row, strict=True))) for row in rows]
    return dg.MetadataValue.table(records=records, schema=schema)


def image(png: bytes, alt: str) -> dg.MetadataValue:
    """Dagster has no image metadata type: the PNG as a data URI in markdown."""
    import base64

    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def plot_metadata(key: str, plot: "Plot", alt: str) -> dict[str, dg.MetadataValue]:
    """`key`: the small rendering the metadata table shows in place (when there is one); `<key>_full`: the readable
    one, behind a click (neuronforge/plots.py says why two)."""
    if plot.inline is None:
        return {key: image(plot.full, alt)}
    return {key: image(plot.inline, alt), f"{key}_full": image(plot.full, alt)}


def after_upstream_passes() -> dg.AutomationCondition:
    """Declarative automation for stages downstream of export: `eager()`, except that an upstream asset counts as
    updated only when its data version changed, and only once its blocking checks (e.g. export parity) have passed.

    Every stage's data version names its content (compile key, corpus fingerprint, content-addressed shards, the
    Hub commit), so a no-op re-run — the same corpus re-read, 0 chunks encoded — triggers nothing downstream, while
    plain eager() would re-run retrieval_eval after any new materialization of what it reads."""
    condition = dg.AutomationCondition
    deps_changed = condition.any_deps_match(
        (condition.data_version_changed() & ~condition.executed_with_root_target()).with_label(
            "data_version_changed_without_root"
        )
        | condition.will_be_requested()
    ).with_label("any_deps_data_version_changed")
    eager_on_change = (
        condition.in_latest_time_window()
        & (condition.newly_missing() | deps_changed).since_last_handled()
        & ~condition.any_deps_missing()
        & ~condition.any_deps_in_progress()
        & ~condition.in_progress()
    ).with_label("eager (on upstream data version change)")
    return eager_on_change & condition.all_deps_blocking_checks_passed()


def stage_asset(spec: ModelSpec, stage: str, *, reads_corpus: bool, kinds: set[str], description: str, **kwargs: Any):
    """The `@dg.asset` of a model's downstream stage (embeddings, sparse index, chat evaluation): keyed
    `<model>/<stage>` in the model's group, after its export (and the corpus), in the `neuron` pool since it runs the
    model, and run by declarative automation once the blocking checks of what it reads have passed. Its kinds are the
    stage's own plus the backend's the model runs on (`load_time_backend`); its owners the model's."""
    deps = [dg.AssetKey("corpus")] if reads_corpus else []
    return dg.asset(
        key=[spec.name, stage],
        deps=[*deps, dg.AssetKey([spec.name, "export"])],
        group_name=spec.name,
        kinds=kinds | backend_kinds(spec),
        owners=list(spec.owners),
        pool="neuron",
        automation_condition=after_upstream_passes(),
        description=description,
        tags={"model_kind": spec.kind},
        **kwargs,
    )
