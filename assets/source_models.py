"""source_model: resolve each registry entry to a local model folder and the revision it was taken at."""

import json
import os
from pathlib import Path

import dagster as dg

from neuronforge.artifacts import stable_hash
from neuronforge.progress import PERCENT, Progress
from neuronforge.registry import DEFAULT_REGISTRY, ModelSpec, RegistryError, load_registry
from resources.hub import HubResource
from resources.storage import StorageResource, record_metadata


def folder_summary(path: Path) -> dict[str, object]:
    files = [p for p in path.rglob("*") if p.is_file()]
    config_file = path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return {
        "files": len(files),
        "size_mb": round(sum(p.stat().st_size for p in files) / 2**20, 1),
        "architecture": ", ".join(config.get("architectures", [])) or config.get("model_type", "unknown"),
        "max_position_embeddings": config.get("max_position_embeddings"),
        "vocab_size": config.get("vocab_size"),
    }


def matches_models_yaml(spec: ModelSpec, registry_path: Path) -> dg.AssetCheckResult:
    """Whether the entry this run built from is what models.yaml says now (a broken or edited file keeps the code
    location on its last valid version until it is fixed and reloaded)."""
    try:
        on_disk = load_registry(registry_path, check_builtin_limits=False)
    except RegistryError as exc:
        return dg.AssetCheckResult(
            check_name="matches_models_yaml",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"models.yaml is invalid, so this run built {spec.name} from the last valid version: {exc}. "
            "Fix the file, then reload the code location.",
            metadata={"registry": dg.MetadataValue.path(str(registry_path)), "error": str(exc)},
        )
    now = on_disk.get(spec.name).to_dict() if spec.name in on_disk.names else None
    built = spec.to_dict()
    changed = sorted(k for k in built if now is not None and now.get(k) != built[k])
    if now is None or changed:
        what = "no longer lists it" if now is None else f"changes {', '.join(changed)}"
        return dg.AssetCheckResult(
            check_name="matches_models_yaml",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{registry_path} {what} since the code location loaded: this run built the loaded entry. "
            "Reload the code location to build the file's version.",
            metadata={"registry": dg.MetadataValue.path(str(registry_path)), "changed_fields": changed},
        )
    return dg.AssetCheckResult(
        check_name="matches_models_yaml",
        passed=True,
        description=f"{registry_path.name} validates and its {spec.name} entry equals the one this run built "
        f"({len(built)} fields compared).",
        metadata={"registry": dg.MetadataValue.path(str(registry_path))},
    )


def build_source_model_asset(spec: ModelSpec, registry_path: Path = DEFAULT_REGISTRY) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "source_model"])

    @dg.asset(
        key=key,
        group_name=spec.name,
        kinds={"huggingface"},
        owners=list(spec.owners),
        code_version=stable_hash({"source": spec.source, "revision": spec.revision}),
        description=f"{spec.source}" + (f" @ {spec.revision}" if spec.revision else "") + f" — {spec.description}",
        tags={"model_kind": spec.kind},
        check_specs=[
            dg.AssetCheckSpec(
                "matches_models_yaml",
                asset=key,
                description="models.yaml validates and this model's entry equals the one the run built (WARN).",
            )
        ],
    )
    def source_model(context: dg.AssetExecutionContext, storage: StorageResource, hub: HubResource):
        from neuronforge.sources import resolve

        # Sources come from HF_ENDPOINT (huggingface_hub's own setting), read now rather than at import.
        # Only a first-time conversion (SmolLM2's GGUF) reports; a resolved folder returns at once and says nothing.
        with Progress(f"{spec.name}/source_model", PERCENT, None, context.log) as progress:
            resolved = resolve(spec, endpoint=os.environ.get("HF_ENDPOINT"), token=hub.token, progress=progress)
        context.log.info(f"{spec.name}: {spec.source} resolved to {resolved.path} at {resolved.revision}")
        record = storage.write_record(
            context.asset_key,
            stable_hash({"source": spec.source, "revision": resolved.revision}),
            {"path": str(resolved.path), "revision": resolved.revision, "source": spec.source},
        )
        return dg.MaterializeResult(
            metadata={
                **record_metadata(record),
                "path": dg.MetadataValue.path(str(resolved.path)),
                "revision": resolved.revision,
                "source": spec.source,
                "base_model": spec.base_model or "",
                **folder_summary(resolved.path),
            },
            # The revision is this asset's data version: a new upstream commit marks the export stale.
            data_version=dg.DataVersion(resolved.revision),
            check_results=[matches_models_yaml(spec, registry_path)],
        )

    return source_model
