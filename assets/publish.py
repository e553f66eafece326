"""publish: upload each exported artifact, with a generated model card, to a Hugging Face Hub repository."""

import dagster as dg

from assets.common import after_upstream_passes, code_version_metadata, stage_inputs
from neuronforge.card_evaluation import CardEvidence, combine, from_chat, from_parity, from_retrieval
from neuronforge.parity import publish_gate, verification_for
from neuronforge.publish import PublishResult
from neuronforge.records import RecordMissingError, StageRecord
from neuronforge.registry import ModelSpec
from resources.hub import HubResource
from resources.storage import StorageResource, record_metadata

RETRIEVAL_EVAL = dg.AssetKey("retrieval_eval")


def publish_metadata(result: PublishResult) -> dict[str, object]:
    """The publish asset's metadata, what the UI shows first (never includes credentials)."""
    return {
        "repo_url": dg.MetadataValue.url(result.repo_url),
        "repo_id": result.repo_id,
        "commit_sha": result.commit_sha,
        "tag": result.tag,
        "new_commit": result.created_commit,
        "files_uploaded": len(result.files_uploaded),
        "files_skipped": len(result.files_skipped),
        "bytes_uploaded": result.bytes_uploaded,
    }


def card_evidence(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    spec: ModelSpec,
    exported: StageRecord,
    verification: StageRecord | None,
) -> CardEvidence:
    """What the pipeline measured about this build, from the records its upstream evaluations named."""
    compile_key = exported["compile_key"]

    def upstream(key: dg.AssetKey) -> dict | None:
        try:
            return storage.record_for(context, key).data
        except RecordMissingError:
            return None  # never evaluated on this data directory: the card says so

    if spec.kind == "chat":
        report = upstream(dg.AssetKey([spec.name, "chat_smoke_eval"]))
        return from_chat(report, compile_key, host=f"the {exported['backend']} backend")
    retrieval = from_retrieval(upstream(RETRIEVAL_EVAL), f"{spec.kind}:{spec.name}", compile_key)
    return combine(retrieval, from_parity(verification.data if verification else None, spec.source))


def build_publish_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    deps = [dg.AssetKey([spec.name, "export"])]
    if spec.kind == "chat":
        # A chat model is published only after its smoke evaluation; the evaluation's blocking check stops this
        # asset from running in the same run when the model fails its expectations.
        deps.append(dg.AssetKey([spec.name, "chat_smoke_eval"]))
    else:
        # Encoders are published after the retrieval evaluation, so their cards carry its figures.
        deps.append(RETRIEVAL_EVAL)

    @dg.asset(
        key=[spec.name, "publish"],
        deps=deps,
        group_name=spec.name,
        kinds={"huggingface"},
        owners=list(spec.owners),
        automation_condition=after_upstream_passes(),
        description="The artifact and its model card (usage snippets, measured evaluation results) in a Hub "
        "repository, tagged with the compile key (idempotent). An encoder whose parity was never measured waits (is "
        "not materialized) unless publish_unverified is set.",
        tags={"model_kind": spec.kind},
        output_required=False,  # a never-verified artifact is not published: the step ends without a materialization
    )
    def publish(context: dg.AssetExecutionContext, storage: StorageResource, hub: HubResource):
        exported = storage.record_for(context, dg.AssetKey([spec.name, "export"]))
        verification = verification_for(storage.records, spec.name, exported.key)
        gate = publish_gate(spec.name, spec.kind, exported.key, verification, spec.publish_unverified)
        if not gate.allowed:
            context.log.warning(gate.reason)
            return
        evidence = card_evidence(context, storage, spec, exported, verification)
        result = hub.publish(
            exported.path_of("artifact_dir"),
            model_name=spec.name,
            log=context.log,
            extra_card={**gate.card_extra(), "evidence": evidence},
        )
        record = storage.write_record(
            context.asset_key,
            exported.key,
            {"repo_id": result.repo_id, "commit_sha": result.commit_sha, "tag": result.tag, "url": result.repo_url},
        )
        yield dg.MaterializeResult(
            metadata={
                **publish_metadata(result),
                **record_metadata(record),
                "verified": gate.verified,
                **code_version_metadata(context, stage_inputs("publish")),
                "card_evaluations": len(evidence.evaluations),
                "card_not_evaluated": dg.MetadataValue.json(evidence.not_evaluated),
            },
            data_version=dg.DataVersion(result.commit_sha),
        )

    return publish
