"""corpus: the documents, queries and relevance judgements the retrieval stages embed, index and evaluate."""

import dagster as dg

from assets.common import code_version_metadata, stage_inputs
from resources.corpus import CorpusResource
from resources.storage import StorageResource, record_metadata


@dg.asset(
    key="corpus",
    group_name="corpus",  # its own group, first: the group graph reads corpus → models → retrieval
    kinds={"python", "json"},
    description="A BEIR-format corpus: the configured source, or the built-in one made of stdlib docstrings "
    "(the summary sentence of each docstring is a query whose answer is the rest of it).",
)
def corpus(context: dg.AssetExecutionContext, storage: StorageResource, corpus: CorpusResource):
    from neuronforge.corpus import (
        BadInputReport,
        build_stdlib_corpus,
        corpus_fingerprint,
        file_fingerprints,
        iter_documents,
        load_qrels,
        load_queries,
        qrels_splits,
    )

    source = corpus.source_path()
    stats = {}
    if source is None:
        source = storage.stage_dir("corpus", "stdlib")
        built = build_stdlib_corpus(source, min_body_chars=corpus.min_body_chars)
        stats = {f"stdlib_{k}": v for k, v in built.as_metadata().items() if k in ("modules_scanned", "python_version")}
        context.log.info(f"built-in corpus: {built.documents} documents, {built.queries} queries in {source}")
    # One streaming pass validates every record now, so bad input is reported here, once, with line numbers.
    report = BadInputReport()
    for _ in iter_documents(source, corpus.policy(), report=report):
        pass
    if report.bad:
        context.log.warning(report.summary())
    has_qrels = source.is_dir() and bool(qrels_splits(source))
    queries = len(load_queries(source)) if has_qrels else 0
    judged = len(load_qrels(source, qrels_splits(source)[0])) if has_qrels else 0
    fingerprints = file_fingerprints(source)
    fingerprint = corpus_fingerprint(fingerprints=fingerprints)
    record = storage.write_record(
        context.asset_key,
        fingerprint,
        {
            "path": str(source),
            "fingerprint": fingerprint,
            "files": fingerprints,
            "documents": report.documents,
            "judged_queries": judged,
        },
    )
    bad = report.as_metadata()
    return dg.MaterializeResult(
        metadata={
            **record_metadata(record),
            **code_version_metadata(context, stage_inputs("corpus", corpus)),
            "path": dg.MetadataValue.path(str(source)),
            "documents": report.documents,
            "dagster/row_count": dg.MetadataValue.int(report.documents),
            "queries": queries,
            "judged_queries": judged,
            "bad_records": report.bad,
            "blank_lines": report.blank_lines,
            "bad_by_reason": dg.MetadataValue.json(bad["bad_by_reason"]),
            "bad_examples": dg.MetadataValue.json(bad["bad_examples"]),
            "fingerprint": fingerprint,
            **stats,
        },
        data_version=dg.DataVersion(fingerprint),
    )
