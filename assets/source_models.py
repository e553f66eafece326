"""source_model: resolve each registry entry to a local model folder and the revision it was taken at."""

import json
import os
from pathlib import Path

import dagster as dg

from neuronforge.artifacts import stable_hash
from neuronforge.registry import ModelSpec
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


def build_source_model_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "source_model"],
        group_name=spec.name,
        kinds={"huggingface"},
        code_version=stable_hash({"source": spec.source, "revision": spec.revision}),
        description=f"{spec.source}" + (f" @ {spec.revision}" if spec.revision else "") + f" — {spec.description}",
        tags={"model_kind": spec.kind},
    )
    def source_model(context: dg.AssetExecutionContext, storage: StorageResource, hub: HubResource):
        from neuronforge.sources import resolve

        # Sources come from HF_ENDPOINT (huggingface_hub's own setting), read now rather than at import.
        resolved = resolve(spec, endpoint=os.environ.get("HF_ENDPOINT"), token=hub.token)
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
        )

    return source_model
