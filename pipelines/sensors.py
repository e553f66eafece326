"""Sensors: recompile a model when what its artifact was built from changes, refresh retrieval when the corpus does.

    upstream_revision_sensor  a Hub model's branch moved to a new commit       → source_model, export, stage, publish
    toolchain_sensor          compiler / runtime versions differ from manifests → export, stage, publish
    models_yaml_sensor        models.yaml differs from the loaded definitions  → "reload the code location";
                              a loaded spec differs from its last export         → source_model, export, stage, publish
    corpus_sensor             corpus files added, changed or removed            → corpus, embeddings, sparse index, eval
    default_automation_sensor declarative automation (eager stages once blocking checks pass)
    dead_run_sensor           a STARTED run whose processes are gone (kill -9) → marked failed, pool slots freed
                              (pipelines/dead_runs.py; launches nothing)

All but the automation and dead-run sensors start STOPPED: an operator turns them on in the UI (docs/operations.md).
Each keeps a JSON cursor of what it already requested, and each run request carries a run_key (the new compile key, or
the corpus fingerprint), so one change triggers one run. Ticks stay cheap: a Hub `model_info` call, stage records and manifests,
package metadata and file stats; never torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets.partitions import partition_tags
from neuronforge.artifacts import ManifestError, read_manifest, stable_hash
from neuronforge.backends import Backend, get_backend
from neuronforge.drift import COMMIT_SHA, describe_versions, registry_drift, spec_changes, toolchain_changes
from neuronforge.export import export_key
from neuronforge.records import StageRecord
from neuronforge.registry import ModelSpec, Registry, RegistryError, load_registry
from pipelines.dead_runs import build_dead_run_sensor
from pipelines.jobs import corpus_refresh_job, corpus_refresh_keys, recompile_job_name, recompile_jobs, recompile_keys
from resources.backends import BackendResource
from resources.corpus import CorpusResource
from resources.storage import StorageResource

HUB_TIMEOUT_S = 10.0
TRIGGER_TAG = "neuronforge/trigger"
MODEL_TAG = "neuronforge/model"
RELOAD_HINT = (
    "reload the code location (UI: Deployment → Code locations → Reload, or restart `dagster dev`) so the "
    "definitions follow models.yaml"
)


# ----------------------------------------------------------------------------------------------------------- helpers


def load_cursor(context: dg.SensorEvaluationContext) -> dict[str, Any]:
    """The sensor's JSON cursor; an unreadable one (e.g. from an older version) starts afresh."""
    if not context.cursor:
        return {}
    try:
        data = json.loads(context.cursor)
    except json.JSONDecodeError:
        context.log.warning(f"ignoring an unreadable cursor: {context.cursor[:200]!r}")
        return {}
    return data if isinstance(data, dict) else {}


def dump_cursor(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True)


def current_record(storage: StorageResource, name: str, stage: str) -> StageRecord | None:
    """The last finished output of `<name>/<stage>` (a sensor has no run to follow)."""
    return storage.current_record(dg.AssetKey([name, stage] if name != "default" else [stage]))


def finish(
    run_requests: list[dg.RunRequest], notes: list[str], cursor: Mapping[str, Any], idle: str
) -> dg.SensorResult:
    """Run requests, or a skip reason that says why nothing ran (shown on the tick in the UI)."""
    if run_requests:
        return dg.SensorResult(run_requests=run_requests, cursor=dump_cursor(cursor))
    return dg.SensorResult(skip_reason="; ".join(notes) or idle, cursor=dump_cursor(cursor))


def sensor_backend(spec: ModelSpec, backends: BackendResource, last_backend: str | None) -> Backend:
    """The backend an export of `spec` would use now.

    An "auto" choice probes CUDA by importing torch (seconds, and memory in a long-lived code server); the backend this
    host chose for the last export is the same answer for free, so reuse it when both settings say "auto".
    """
    if last_backend and backends.backend == "auto" and spec.backend == "auto":
        name = last_backend
    else:
        name = backends.backend_name(spec)
    return get_backend(name, onnx_threads=backends.onnx_threads)


def last_compiled_revision(instance: dg.DagsterInstance, storage: StorageResource, name: str) -> str | None:
    """The revision of the model's latest source_model materialization (or, without one, its current record)."""
    event = instance.get_latest_materialization_event(dg.AssetKey([name, "source_model"]))
    materialization = event.asset_materialization if event else None
    if materialization is not None and "revision" in materialization.metadata:
        return str(materialization.metadata["revision"].value)
    record = current_record(storage, name, "source_model")
    return str(record["revision"]) if record and record.get("revision") else None


def hub_revision(repo_id: str, revision: str, endpoint: str | None) -> str:
    """The commit sha `revision` (a branch or tag) points at on the source Hub."""
    from huggingface_hub import HfApi

    # Sources come from HF_ENDPOINT, never from the publish endpoint; the token (if any) comes from HF_TOKEN.
    info = HfApi(endpoint=endpoint, library_name="neuronforge").model_info(
        repo_id, revision=revision, timeout=HUB_TIMEOUT_S
    )
    if not info.sha:
        raise ValueError(f"{endpoint or 'the Hub'} returned no commit sha for {repo_id}@{revision}")
    return info.sha


def model_tags(trigger: str, spec: ModelSpec) -> dict[str, str]:
    return {TRIGGER_TAG: trigger, MODEL_TAG: spec.name}


# ----------------------------------------------------------------------------------------------------------- sensors


def build_upstream_revision_sensor(registry: Registry, partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    hub_models = [m for m in registry.models if not m.is_builtin]

    @dg.sensor(
        name="upstream_revision_sensor",
        jobs=recompile_jobs(registry) or None,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Recompiles a Hub-sourced model when its branch in models.yaml moves to a new commit on "
        "HF_ENDPOINT (run_key = the new compile key). Cursor: {requested: {model: sha}}.",
    )
    def upstream_revision_sensor(
        context: dg.SensorEvaluationContext, storage: StorageResource, backends: BackendResource
    ) -> dg.SensorResult:
        cursor = load_cursor(context)
        requested: dict[str, str] = cursor.setdefault("requested", {})
        endpoint = os.environ.get("HF_ENDPOINT") or None
        run_requests: list[dg.RunRequest] = []
        notes: list[str] = []
        for spec in hub_models:
            if not spec.revision or COMMIT_SHA.match(spec.revision):
                continue  # pinned to a commit: it cannot move (models_yaml_sensor sees an edited pin)
            compiled = last_compiled_revision(context.instance, storage, spec.name)
            if compiled is None:
                notes.append(f"{spec.name}: never materialized (models_yaml_sensor or a manual run builds it first)")
                continue
            try:
                sha = hub_revision(spec.source_id, spec.revision, endpoint)
            except (OSError, ValueError) as exc:  # requests/huggingface_hub errors are OSErrors
                message = f"{spec.name}: cannot read {spec.source_id}@{spec.revision} from {endpoint or 'the Hub'}"
                context.log.warning(f"{message}: {exc}")
                notes.append(f"{message} ({type(exc).__name__}); will retry next tick")
                continue
            if sha == compiled:
                requested.pop(spec.name, None)
                continue
            if requested.get(spec.name) == sha:
                notes.append(f"{spec.name}: recompile at {sha[:12]} already requested")
                continue
            last_export = current_record(storage, spec.name, "export")
            last_backend = last_export.get("backend") if last_export else None
            key = export_key(spec, sha, sensor_backend(spec, backends, last_backend))
            context.log.info(
                f"{spec.name}: {spec.source_id}@{spec.revision} moved {compiled[:12]} → {sha[:12]}; "
                f"requesting a recompile (compile key {key})"
            )
            run_requests.append(
                dg.RunRequest(
                    run_key=key,
                    job_name=recompile_job_name(spec),
                    asset_selection=recompile_keys(spec),
                    tags={
                        **model_tags("upstream_revision", spec),
                        "neuronforge/revision": sha,
                        **partition_tags(recompile_keys(spec), partitions),
                    },
                )
            )
            requested[spec.name] = sha
        idle = (
            "no Hub-sourced model in models.yaml" if not hub_models else "every Hub model is at its compiled revision"
        )
        return finish(run_requests, notes, cursor, idle)

    return upstream_revision_sensor


def build_toolchain_sensor(registry: Registry, partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="toolchain_sensor",
        jobs=recompile_jobs(registry) or None,
        minimum_interval_seconds=600,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Recompiles exported models when the installed compiler/runtime versions (neuronx-cc, "
        "optimum-neuron, torch, onnxruntime, ...) differ from those in their manifests (run_key = the new compile "
        "key). Cursor: {requested: {model: compile_key}}.",
    )
    def toolchain_sensor(
        context: dg.SensorEvaluationContext, storage: StorageResource, backends: BackendResource
    ) -> dg.SensorResult:
        cursor = load_cursor(context)
        requested: dict[str, str] = cursor.setdefault("requested", {})
        run_requests: list[dg.RunRequest] = []
        notes: list[str] = []
        for spec in registry.models:
            exported = current_record(storage, spec.name, "export")
            if exported is None:
                continue  # nothing compiled yet, so nothing compiled with an older toolchain
            try:
                manifest = read_manifest(exported.path_of("artifact_dir"))
                backend = sensor_backend(spec, backends, manifest.get("backend"))
            except (ManifestError, ImportError, ValueError) as exc:
                context.log.warning(f"{spec.name}: cannot compare toolchains: {exc}")
                notes.append(f"{spec.name}: {exc}")
                continue
            changes = toolchain_changes(manifest.get("toolchain") or {}, backend.toolchain())
            if not changes:
                requested.pop(spec.name, None)
                continue
            key = export_key(spec, str(manifest["source"]["revision"]), backend)
            if requested.get(spec.name) == key:
                notes.append(f"{spec.name}: recompile {key} already requested")
                continue
            context.log.info(f"{spec.name}: toolchain changed ({describe_versions(changes)}); recompiling as {key}")
            run_requests.append(
                dg.RunRequest(
                    run_key=key,
                    job_name=recompile_job_name(spec),
                    # The source is unchanged: recompile from the resolved model already on disk.
                    asset_selection=recompile_keys(spec, include_source=False),
                    tags={
                        **model_tags("toolchain", spec),
                        "neuronforge/toolchain": describe_versions(changes)[:200],
                        **partition_tags(recompile_keys(spec), partitions),
                    },
                )
            )
            requested[spec.name] = key
        return finish(run_requests, notes, cursor, "every export matches the installed toolchain")

    return toolchain_sensor


def build_models_yaml_sensor(registry: Registry, partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="models_yaml_sensor",
        jobs=recompile_jobs(registry) or None,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Says when models.yaml differs from the loaded definitions (a new model needs a code-location "
        "reload to become assets) and builds models whose loaded spec differs from their last export, or that were "
        "never exported. Cursor: {requested: {model: run_key}}.",
    )
    def models_yaml_sensor(
        context: dg.SensorEvaluationContext, storage: StorageResource, backends: BackendResource
    ) -> dg.SensorResult:
        cursor = load_cursor(context)
        requested: dict[str, str] = cursor.setdefault("requested", {})
        run_requests: list[dg.RunRequest] = []
        notes: list[str] = []

        # 1. The file against what this code location loaded: only a reload turns edits into (new) assets.
        try:
            on_disk = load_registry(registry.path, check_builtin_limits=False)
        except RegistryError as exc:
            kept = f"its last valid version ({', '.join(registry.names)})" if registry.models else "no models"
            message = f"models.yaml is invalid: {exc}. The code location keeps {kept} until the file is fixed"
            context.log.warning(message)
            # No builds from a file mid-edit: the skip reason on the tick is where the error shows.
            return finish([], [message], cursor, "")
        else:
            drift = registry_drift(registry, on_disk)
            if drift:
                message = f"{registry.path} differs from the loaded definitions: {drift}. To build them, {RELOAD_HINT}."
                context.log.warning(message)
                notes.append(message)

        # 2. The loaded specs against their last exports: those are the runs this code location can launch.
        for spec in registry.models:
            exported = current_record(storage, spec.name, "export")
            if exported is None:
                key, reason = f"{spec.name}-first-build-{stable_hash(spec.to_dict())}", "never exported"
            else:
                try:
                    manifest = read_manifest(exported.path_of("artifact_dir"))
                    backend = sensor_backend(spec, backends, manifest.get("backend"))
                except (ManifestError, ImportError, ValueError) as exc:
                    context.log.warning(f"{spec.name}: cannot compare with the last export: {exc}")
                    notes.append(f"{spec.name}: {exc}")
                    continue
                changes = spec_changes(spec, manifest, backend)
                if not changes:
                    requested.pop(spec.name, None)
                    continue
                revision = spec.revision if spec.revision and COMMIT_SHA.match(spec.revision) else None
                key = export_key(spec, revision or str(manifest["source"]["revision"]), backend)
                reason = "; ".join(changes)
            if requested.get(spec.name) == key:
                notes.append(f"{spec.name}: build {key} already requested ({reason})")
                continue
            context.log.info(f"{spec.name}: {reason}; requesting a build (run_key {key})")
            run_requests.append(
                dg.RunRequest(
                    run_key=key,
                    job_name=recompile_job_name(spec),
                    asset_selection=recompile_keys(spec),
                    tags={
                        **model_tags("models_yaml", spec),
                        "neuronforge/reason": reason[:200],
                        **partition_tags(recompile_keys(spec), partitions),
                    },
                )
            )
            requested[spec.name] = key
        return finish(run_requests, notes, cursor, "every loaded model matches its last export")

    return models_yaml_sensor


def build_corpus_sensor(registry: Registry, partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="corpus_sensor",
        job=corpus_refresh_job(registry),
        minimum_interval_seconds=120,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Refreshes corpus → embeddings / sparse index → retrieval_eval when files of the configured "
        "corpus source are added, changed or removed (run_key = the new corpus fingerprint; embedding is incremental, "
        "so only changed content is encoded). Cursor: {source, stat, requested}.",
    )
    def corpus_sensor(
        context: dg.SensorEvaluationContext, storage: StorageResource, corpus: CorpusResource
    ) -> dg.SensorResult:
        from neuronforge.corpus import changed_files, corpus_fingerprint, corpus_stat_signature, file_fingerprints

        cursor = load_cursor(context)
        try:
            source = corpus.source_path()
        except FileNotFoundError as exc:
            return dg.SensorResult(skip_reason=str(exc), cursor=dump_cursor(cursor))
        if source is None:
            return dg.SensorResult(
                skip_reason="the corpus is the built-in stdlib corpus (source: builtin), which changes only with the "
                "Python installation. Set `source:` in corpus.yaml (or NEURONFORGE_CORPUS) to a folder or file to "
                "watch it.",
                cursor=dump_cursor(cursor),
            )
        # Hash the files only when a name, size or mtime changed: a tick must stay cheap on a large corpus.
        signature = corpus_stat_signature(source)
        if cursor.get("source") == str(source) and cursor.get("stat") == signature:
            return dg.SensorResult(skip_reason=f"no file of {source} changed", cursor=dump_cursor(cursor))
        cursor.update(source=str(source), stat=signature)

        fingerprints = file_fingerprints(source)
        fingerprint = corpus_fingerprint(fingerprints=fingerprints)
        last = current_record(storage, "default", "corpus")
        # A build from another source (corpus.yaml's source was changed) counts as nothing built.
        built = (last.get("files") or {}) if last and last.get("path") == str(source) else {}
        diff = changed_files(built, fingerprints)
        if not any(diff.values()):
            return dg.SensorResult(skip_reason=f"{source} matches the last corpus build", cursor=dump_cursor(cursor))
        if cursor.get("requested") == fingerprint:
            return dg.SensorResult(skip_reason=f"refresh {fingerprint} already requested", cursor=dump_cursor(cursor))
        keys, not_exported = corpus_refresh_keys(registry, storage)
        summary = ", ".join(f"{len(v)} {k}" for k, v in diff.items() if v)
        context.log.info(
            f"{source}: {summary} file(s); requesting {', '.join(k.to_user_string() for k in keys)} "
            f"(fingerprint {fingerprint})"
            + (f"; left out (not exported yet): {', '.join(not_exported)}" if not_exported else "")
        )
        cursor["requested"] = fingerprint
        request = dg.RunRequest(
            run_key=fingerprint,
            asset_selection=keys,
            tags={TRIGGER_TAG: "corpus", "neuronforge/corpus_changes": summary, **partition_tags(keys, partitions)},
        )
        return dg.SensorResult(run_requests=[request], cursor=dump_cursor(cursor))

    return corpus_sensor


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    # Dagster's implicit default_automation_condition_sensor starts stopped; this one replaces it and runs, so eager
    # stages (publish, embeddings, sparse index, evaluations) follow a new export once its blocking checks pass.
    return dg.AutomationConditionSensorDefinition(
        "default_automation_sensor",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Declarative automation: stages downstream of export run when it updates and its blocking checks "
        "have passed.",
    )


def build_sensors(registry: Registry, partitions: dg.PartitionsDefinition) -> list[dg.SensorDefinition]:
    """Every sensor of the code location (`partitions`: the corpus partitions; a request that selects a corpus stage
    covers them all in one run)."""
    return [
        build_upstream_revision_sensor(registry, partitions),
        build_toolchain_sensor(registry, partitions),
        build_models_yaml_sensor(registry, partitions),
        build_corpus_sensor(registry, partitions),
        build_automation_sensor(),
        build_dead_run_sensor(),
    ]
