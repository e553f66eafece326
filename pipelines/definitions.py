"""The Dagster code location: one group of assets per model in models.yaml, plus the shared corpus stages."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets.chat_eval import build_chat_eval_asset
from assets.common import VERSIONED_STAGES, stage_inputs
from assets.corpus import corpus
from assets.embeddings import build_embeddings_asset, build_embeddings_checks
from assets.export import build_export_asset, build_export_checks
from assets.partitions import corpus_partitions
from assets.publish import build_publish_asset
from assets.retrieval import build_retrieval_eval
from assets.source_models import build_source_model_asset
from assets.sparse_index import build_sparse_index_asset, build_sparse_index_checks
from neuronforge.partitions import DEFAULT_PARTITIONS
from neuronforge.paths import data_dir
from neuronforge.quiet import route_third_party_output
from neuronforge.registry import ModelSpec, Registry
from neuronforge.registry_snapshot import load_registry_or_last_valid
from neuronforge.stage_versions import code_version
from pipelines.schedules import build_schedules
from pipelines.sensors import build_sensors
from resources.backends import BackendResource
from resources.corpus import CorpusResource
from resources.devices import NeuronResource
from resources.hub import HubResource
from resources.storage import StorageResource

# Torch/transformers warnings and progress bars go to <data dir>/logs/third_party.log, not into every step's stderr.
route_third_party_output(data_dir() / "logs")


def default_resources() -> dict[str, object]:
    # HF_TOKEN only ever travels as an EnvVar: Dagster resolves it at run time and never shows its value.
    token = dg.EnvVar("HF_TOKEN") if os.environ.get("HF_TOKEN") else None
    return {
        "storage": StorageResource(),
        "backends": BackendResource(),
        "neuron": NeuronResource(),
        "corpus": CorpusResource.configured(),  # corpus.yaml / NEURONFORGE_CORPUS: one place for every entry point
        "hub": HubResource(endpoint=os.environ.get("NEURONFORGE_HUB_ENDPOINT") or None, token=token),
    }


def model_definitions(
    spec: ModelSpec,
    registry: Registry,
    partitions: dg.PartitionsDefinition,
    corpus_backfill: dg.BackfillPolicy | None = None,
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    assets = [build_source_model_asset(spec, registry.path), build_export_asset(spec), build_publish_asset(spec)]
    checks = build_export_checks(spec)
    if spec.kind == "dense":
        assets.append(build_embeddings_asset(spec, partitions, corpus_backfill))
        checks += build_embeddings_checks(spec, partitions)
    elif spec.kind == "sparse":
        assets.append(build_sparse_index_asset(spec, partitions, corpus_backfill))
        checks += build_sparse_index_checks(spec, partitions)
    else:
        assets.append(build_chat_eval_asset(spec))  # emits its own checks (check_specs)
    return assets, checks


def load_models() -> Registry:
    """models.yaml (or NEURONFORGE_MODELS); while it is invalid, its last valid version, so a broken edit never takes
    the code location down. The error is logged here, shown by models_yaml_sensor and by each model's
    matches_models_yaml check."""
    loaded = load_registry_or_last_valid(os.environ.get("NEURONFORGE_MODELS") or None)
    if loaded.error:
        kept = f"the last valid version ({loaded.snapshot})" if loaded.snapshot else "no models (no valid version yet)"
        dg.get_dagster_logger().error(f"{loaded.error}; the code location loads {kept} until the file is fixed")
    return loaded.registry


def with_code_versions(
    assets: list[dg.AssetsDefinition], registry: Registry, corpus_settings: CorpusResource
) -> list[dg.AssetsDefinition]:
    """Every computing stage gets a code version from what changes its output (assets/common.stage_inputs), so
    editing chunking settings or a stage's code marks it — and what follows — stale; source_model and export
    carry their own (revision; compile inputs)."""
    models = {spec.name: spec for spec in registry.models}

    def versioned(asset: dg.AssetSpec) -> dg.AssetSpec:
        stage = asset.key.path[-1]
        if stage not in VERSIONED_STAGES or asset.code_version is not None:
            return asset
        spec = models.get(asset.key.path[0]) if len(asset.key.path) > 1 else None
        return asset.replace_attributes(code_version=code_version(stage_inputs(stage, corpus_settings, spec)))

    return list(dg.map_asset_specs(versioned, assets))


def build_definitions(
    registry: Registry | None = None,
    resources: dict[str, object] | None = None,
    corpus_backfill: dg.BackfillPolicy | None = None,
) -> dg.Definitions:
    """The code location. `corpus_backfill`: how a backfill runs the partitioned corpus stages (default single run,
    so `make run` is one run; a fleet passes `dg.BackfillPolicy.multi_run(1)`: one run, or pod, per partition)."""
    registry = registry or load_models()
    resources = {**default_resources(), **(resources or {})}
    corpus_settings = resources["corpus"]
    count = corpus_settings.partitions if isinstance(corpus_settings, CorpusResource) else DEFAULT_PARTITIONS
    partitions = corpus_partitions(count)  # hash buckets of the document id (corpus.yaml `partitions`)
    shared, checks = build_retrieval_eval(registry, partitions)
    # The shared stages answer to everyone whose models read them.
    owners = sorted({owner for spec in registry.models for owner in spec.owners})
    assets = list(dg.map_asset_specs(lambda spec: spec.replace_attributes(owners=owners), [corpus, *shared]))
    for spec in registry.models:
        model_assets, model_checks = model_definitions(spec, registry, partitions, corpus_backfill)
        assets += model_assets
        checks += model_checks
    if isinstance(corpus_settings, CorpusResource):
        assets = with_code_versions(assets, registry, corpus_settings)
    default_pipeline = dg.define_asset_job(
        "default_pipeline",
        selection=dg.AssetSelection.all(),
        description="Every model: source → export → evaluate → publish, and the corpus stages.",
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[default_pipeline],
        sensors=build_sensors(registry, partitions),
        schedules=build_schedules(registry, partitions),
        resources=resources,
    )


def registry_path() -> Path:
    return Path(os.environ.get("NEURONFORGE_MODELS") or Path(__file__).resolve().parent.parent / "models.yaml")


defs = build_definitions()
