"""Search the latest materialized embeddings and sparse index: dense, sparse (SPLADE) or hybrid (RRF).

    neuronforge-search "how do I parse json" --mode hybrid -k 5
    neuronforge-search --queries questions.txt > hits.jsonl     # one query per line in, one JSON object per line out
    neuronforge-search --interactive                             # load the models once, then ask away

Reads the current stage records under the data directory (NEURONFORGE_HOME), one per corpus partition, searched as
one corpus (equal scores ordered by document id), so it always uses what the pipeline last produced, through the same exported artifacts (and backends) the pipeline used. Hybrid fusion takes `rrf_k` and
`rrf_weights` from the corpus configuration (corpus.yaml), like retrieval_eval.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from neuronforge.corpus.config import DEFAULT_RRF_K, DEFAULT_RRF_WEIGHTS
from neuronforge.records import (
    RecordMissingError,
    RecordStore,
    StageRecord,
    asset_name,
    partition_name,
    split_partition,
)
from neuronforge.retrieval import dense_search, reciprocal_rank_fusion, run_from_results

Run = dict[str, dict[str, float]]
Hit = tuple[str, float, str]
MODES = ("dense", "sparse", "hybrid")
MAX_K = 10_000
BATCH = 256  # queries encoded per call in --queries mode
FUSION_DEPTH = 100  # each system's top-k that hybrid fuses (at least k)
STAGE_OF_MODE = {
    "dense": ("corpus_embeddings",),
    "sparse": ("sparse_index",),
    "hybrid": ("corpus_embeddings", "sparse_index"),
}
KIND_OF_STAGE = {"corpus_embeddings": "dense", "sparse_index": "sparse"}


class SearchError(RuntimeError):
    """Nothing to search yet, a missing or damaged output, or a bad request; the message says what to do."""


@dataclass(frozen=True)
class Fusion:
    """Reciprocal rank fusion settings: score = sum over systems of weight / (k + rank)."""

    k: int = DEFAULT_RRF_K
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RRF_WEIGHTS))  # kind / model -> weight

    def weight(self, kind: str, model: str) -> float:
        return float(self.weights.get(model, self.weights.get(kind, 1.0)))


def check_request(query: str, k: int) -> str:
    """The query, stripped; SearchError for an empty one or a k outside 1..MAX_K."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise SearchError(f"-k must be an integer from 1 to {MAX_K}, got {k!r}")
    if not isinstance(query, str) or not query.strip():
        raise SearchError("the query is empty: give the words to search for")
    return query.strip()


def _rematerialize(record: StageRecord, what: str, exc: BaseException) -> SearchError:
    asset = asset_name(record.stage, record.name)
    partition = f" --partition {record.partition}" if record.partition else ""
    return SearchError(
        f"{what} of {asset} is missing or damaged ({type(exc).__name__}: {exc}); materialize {asset} again: "
        f"`dagster asset materialize -m pipelines.definitions --select {asset}{partition}`"
    )


def _missing_stage(root: Path, stage: str, models: Sequence[str]) -> SearchError:
    kind = KIND_OF_STAGE[stage]
    if models:
        assets = ", ".join(f"{m}/{stage}" for m in models)
        select = ",".join(f"*{m}/{stage}" for m in models)
        how = f"materialize {assets} (with its export): `dagster asset materialize -m pipelines.definitions --select '{select}'`"
    else:
        how = f"add a {kind} model to models.yaml and materialize its {stage}"
    return SearchError(f"no {kind} {stage} under {root} to search; {how}")


def _registry_models(kind: str) -> list[str]:
    """Model names of `kind` in models.yaml, for hints (empty when the registry cannot be read)."""
    import os

    from neuronforge.registry import RegistryError, load_registry

    try:
        registry = load_registry(os.environ.get("NEURONFORGE_MODELS") or None, check_builtin_limits=False)
    except (RegistryError, OSError):
        return []
    return [m.name for m in registry.of_kind(kind)]


class Searcher:
    """Query → top-k document ids over one dense embeddings output and/or one sparse index output, each given as the
    records of every corpus partition (or a single record).

    `Searcher(dense=records, sparse=records)` searches exactly those outputs (the retrieval evaluation passes the
    records its upstream materializations named); `Searcher.current(root)` takes each partition's current record (the
    CLI). The partitions are searched as one corpus, exactly (neuronforge/partitions.py): results, ties included, do
    not depend on how the corpus was partitioned; equal scores are ordered by document id. Models and arrays load on
    first use and stay loaded, so one Searcher answers many queries.
    """

    def __init__(
        self,
        *,
        dense: StageRecord | Sequence[StageRecord] | None = None,
        sparse: StageRecord | Sequence[StageRecord] | None = None,
        fusion: Fusion | None = None,
    ):
        self.dense_records = _as_list(dense)
        self.sparse_records = _as_list(sparse)
        self.fusion = fusion or Fusion()
        self._dense: tuple[Any, list[str], np.ndarray] | None = None
        self._sparse: tuple[Any, Any] | None = None
        self._snippets: dict[str, str] | None = None

    @classmethod
    def current(
        cls,
        root: Path | None = None,
        *,
        dense_model: str | None = None,
        sparse_model: str | None = None,
        mode: str = "hybrid",
        fusion: Fusion | None = None,
        partitions: Sequence[str] | None = None,
    ) -> Searcher:
        """The latest finished embeddings and sparse index under `root` (default: the data directory) that `mode`
        needs, one record per corpus partition (`partitions`, default: those corpus.yaml configures); SearchError
        naming the asset (and partition) to materialize when one is missing."""
        from neuronforge.paths import data_dir

        if mode not in MODES:
            raise SearchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        root = Path(root) if root else data_dir()
        store = RecordStore(root)
        keys = list(partitions) if partitions is not None else _configured_partitions()
        records: dict[str, list[StageRecord]] = {"corpus_embeddings": [], "sparse_index": []}
        for stage, chosen in (("corpus_embeddings", dense_model), ("sparse_index", sparse_model)):
            available = sorted({split_partition(n)[0] for n in store.names(stage)})
            name = chosen or next(iter(available), None)
            if name is None:
                if stage in STAGE_OF_MODE[mode]:
                    raise _missing_stage(root, stage, _registry_models(KIND_OF_STAGE[stage]))
                continue
            try:
                records[stage] = [store.current(stage, partition_name(name, p)) for p in keys]
            except RecordMissingError as exc:
                if stage not in STAGE_OF_MODE[mode] and chosen is None:
                    continue
                known = f" (models with one: {', '.join(available)})" if available else ""
                raise SearchError(f"{_missing_partition(exc, stage, name, keys, store)}{known}") from exc
            _check_same_build(records[stage])
        return cls(dense=records["corpus_embeddings"], sparse=records["sparse_index"], fusion=fusion)

    # ------------------------------------------------------------------------------------------------------ loading

    def _encoder(self, record: StageRecord):
        from neuronforge.backends import load_encoder

        try:
            return load_encoder(record.path_of("artifact_dir"))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # ManifestError is a RuntimeError
            export = asset_name("export", record.name)
            raise SearchError(
                f"the exported model {record['artifact_dir']} that {asset_name(record.stage, record.name)} was built "
                f"with is missing or damaged ({exc}); materialize {export} and then "
                f"{asset_name(record.stage, record.name)} again"
            ) from exc

    def _shards(self, records: Sequence[StageRecord], columns: list[str] | None):
        import pyarrow as pa

        from neuronforge.shards import ShardDamagedError, read_shards

        tables = []
        for record in records:
            try:
                # The record's sha256s (shard_files) catch a shard replaced since it was written, not only a truncated one.
                names = _shard_names(record["shards"])
                tables.append(read_shards(record.path_of("dir"), columns, names, record.get("shard_files")))
            except (ShardDamagedError, OSError, ValueError, KeyError, pa.ArrowException) as exc:
                raise _rematerialize(record, f"a shard in {record['dir']}", exc) from exc
        tables = [t for t in tables if t.num_rows]  # a partition may hold no document of a small corpus
        if not tables:
            asset = asset_name(records[0].stage, records[0].name)
            raise SearchError(f"nothing to search: {asset} holds no chunks (is the corpus empty?)")
        return pa.concat_tables(tables)

    def _load_dense(self) -> tuple[Any, list[str], np.ndarray]:
        if self._dense is None:
            records = self.dense_records
            if not records:
                raise SearchError("no dense corpus_embeddings to search; materialize a dense model's corpus_embeddings")
            from neuronforge.partitions import rows_by_id
            from neuronforge.shards import dense_matrix

            # Shards before the model: a damaged output is reported without first paying for a model load.
            table = self._shards(records, ["doc_id", "chunk_index", "vector"])
            doc_ids = table.column("doc_id").to_pylist()
            # Rows in (document id, chunk) order: the same matrix however the corpus was partitioned.
            order = rows_by_id(doc_ids, table.column("chunk_index").to_numpy())
            matrix = dense_matrix(table)[order]
            self._dense = (self._encoder(records[0]), [doc_ids[i] for i in order], matrix)
        return self._dense

    def _load_sparse(self) -> tuple[Any, Any]:
        if self._sparse is None:
            records = self.sparse_records
            if not records:
                raise SearchError("no sparse_index to search; materialize a sparse model's sparse_index")
            from neuronforge.sparse_index import IndexFormatError, SegmentedIndex, SparseIndex

            segments = []
            for record in records:  # one segment per partition
                try:
                    segments.append(SparseIndex.load(record.path_of("index_dir")))
                except (IndexFormatError, OSError, ValueError, KeyError) as exc:
                    raise _rematerialize(record, f"the index {record['index_dir']}", exc) from exc
            try:
                index = SegmentedIndex(segments)
            except ValueError as exc:  # a document in two partitions, or two vocabularies
                raise _rematerialize(records[0], "the partitions' indexes", exc) from exc
            self._sparse = (self._encoder(records[0]), index)
        return self._sparse

    def cores_needed(self) -> int:
        """NeuronCores the models searched here run on (a Neuron artifact's tensor_parallel_size; else 1 slot)."""
        from neuronforge.artifacts import ManifestError, read_manifest

        needed = [1]
        for records in (self.dense_records, self.sparse_records):
            if records:
                try:
                    manifest = read_manifest(records[0].path_of("artifact_dir"))
                except (ManifestError, OSError, ValueError):
                    continue  # loading that model reports it, naming the asset to materialize
                if manifest["backend"] == "neuron":
                    needed.append(int(manifest.get("options", {}).get("tensor_parallel_size", 1)))
        return max(needed)

    def load(self, mode: str) -> None:
        """Load what `mode` needs now (interactive mode: pay once, before the first prompt)."""
        if mode in ("dense", "hybrid"):
            self._load_dense()
        if mode in ("sparse", "hybrid"):
            self._load_sparse()
        self.snippets()

    # ------------------------------------------------------------------------------------------------------- search

    def dense(self, queries: Sequence[str], k: int = 10, query_ids: Sequence[str] | None = None) -> Run:
        encoder, doc_ids, matrix = self._load_dense()
        return dense_search(matrix, doc_ids, encoder.encode(list(queries)), k, query_ids=_ids(queries, query_ids))

    def sparse(self, queries: Sequence[str], k: int = 10, query_ids: Sequence[str] | None = None) -> Run:
        from neuronforge.partitions import top_k_by_id
        from neuronforge.sparse_index import to_csr

        encoder, index = self._load_sparse()
        matrix = to_csr(encoder.encode(list(queries)), encoder.max_active_dims)
        results = [top_k_by_id(index, matrix[row], k) for row in range(matrix.shape[0])]
        return run_from_results(_ids(queries, query_ids), results)

    def hybrid(self, queries: Sequence[str], k: int = 10, query_ids: Sequence[str] | None = None) -> Run:
        """Reciprocal rank fusion of the dense and sparse top-100s (ranks only: their scores are not comparable),
        with this Searcher's `fusion` k and weights."""
        depth = max(k, FUSION_DEPTH)
        runs = [self.dense(queries, depth, query_ids), self.sparse(queries, depth, query_ids)]
        weights = [
            self.fusion.weight("dense", _model(self.dense_records)),
            self.fusion.weight("sparse", _model(self.sparse_records)),
        ]
        fused = reciprocal_rank_fusion(runs, k=self.fusion.k, top=depth, weights=weights)
        return {qid: dict(list(hits.items())[:k]) for qid, hits in fused.items()}

    def search_many(self, queries: Sequence[str], mode: str = "hybrid", k: int = 10) -> list[list[Hit]]:
        """Top-k (doc id, score, snippet) for each query, encoded as one batch."""
        if mode not in MODES:
            raise SearchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        texts = [check_request(q, k) for q in queries]
        if not texts:
            return []
        ids = [str(i) for i in range(len(texts))]
        run = getattr(self, mode)(texts, k, ids)
        snippets = self.snippets()
        return [[(doc, score, snippets.get(doc, "")) for doc, score in run.get(qid, {}).items()] for qid in ids]

    def search(self, query: str, mode: str = "hybrid", k: int = 10) -> list[Hit]:
        return self.search_many([query], mode, k)[0]

    def snippets(self, width: int = 160) -> dict[str, str]:
        """First chunk text of each document, from whichever encoded shards exist."""
        if self._snippets is None:
            records = self.dense_records or self.sparse_records
            if not records:
                raise SearchError("nothing to search: no corpus_embeddings or sparse_index has been materialized")
            table = self._shards(records, ["doc_id", "chunk_index", "text"])
            self._snippets = {}
            columns = (table.column(c).to_pylist() for c in ("doc_id", "chunk_index", "text"))
            for doc, index, text in zip(*columns, strict=True):
                if index == 0:
                    self._snippets[doc] = " ".join(text.split())[:width]
        return self._snippets


def _as_list(records: StageRecord | Sequence[StageRecord] | None) -> list[StageRecord]:
    if records is None:
        return []
    return [records] if isinstance(records, StageRecord) else list(records)


def _model(records: Sequence[StageRecord]) -> str:
    return split_partition(records[0].name)[0] if records else ""


def _configured_partitions() -> list[str]:
    from neuronforge.corpus.config import CorpusConfigError, load_corpus_config
    from neuronforge.partitions import partition_keys

    try:
        return partition_keys(load_corpus_config().partitions)
    except CorpusConfigError as exc:
        raise SearchError(f"cannot read the corpus partitions: {exc}") from exc


def _missing_partition(exc: RecordMissingError, stage: str, name: str, keys: Sequence[str], store: RecordStore) -> str:
    """The message for a partition without output: which partitions are missing and the command that builds them."""
    missing = [p for p in keys if store.current_or_none(stage, partition_name(name, p)) is None]
    if len(missing) == len(keys):
        return str(exc)
    asset = asset_name(stage, name)
    return (
        f"{asset} has no output for partition{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {len(keys)} "
        f"under {store.root}; materialize them: `dagster asset materialize -m pipelines.definitions --select {asset} "
        f"--partition {missing[0]}` per partition, or `make run` for all"
    )


def _check_same_build(records: Sequence[StageRecord]) -> None:
    """Every partition's output from one corpus and one export (else they do not make one corpus)."""
    built = {(r.get("corpus_fingerprint"), r.get("compile_key")) for r in records}
    if len(built) > 1:
        asset = asset_name(records[0].stage, records[0].name)
        raise SearchError(
            f"the partitions of {asset} were built from different corpora or exports ({len(built)} combinations of "
            f"corpus fingerprint and compile key): materialize every partition of {asset} again (`make run`)"
        )


def _shard_names(shards: Iterable[Any]) -> list[str]:
    # A shard list entry is a file name, or a mapping that names it (with its checksum and row count).
    return [s if isinstance(s, str) else str(s["name"]) for s in shards]


def _ids(queries: Sequence[str], query_ids: Sequence[str] | None) -> list[str]:
    return list(query_ids) if query_ids is not None else [str(i) for i in range(len(queries))]


# ---------------------------------------------------------------------------------------------------------- the CLI


def _positive_k(value: str) -> int:
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_K}, got {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_K}, got {k}")
    return k


def _hits_json(hits: list[Hit]) -> list[dict[str, Any]]:
    return [{"id": d, "score": s, "snippet": t} for d, s, t in hits]


def _print_table(hits: list[Hit], out: IO[str]) -> None:
    if not hits:
        print("   (no document matches)", file=out)
    for rank, (doc, score, snippet) in enumerate(hits, 1):
        print(f"{rank:>2}. {score:8.4f}  {doc}\n    {snippet}", file=out)


def run_query_file(searcher: Searcher, stream: IO[str], mode: str, k: int, out: IO[str], err: IO[str]) -> int:
    """One JSON object per non-blank input line: {"line", "query", "hits": [{"id", "score", "snippet"}]}."""
    batch: list[tuple[int, str]] = []
    lines = blank = answered = 0

    def flush() -> None:
        nonlocal answered
        for (lineno, query), hits in zip(batch, searcher.search_many([q for _, q in batch], mode, k), strict=True):
            out.write(json.dumps({"line": lineno, "query": query, "hits": _hits_json(hits)}, ensure_ascii=False) + "\n")
        answered += len(batch)
        batch.clear()

    for lineno, line in enumerate(stream, 1):
        lines = lineno
        if not line.strip():
            blank += 1
            continue
        batch.append((lineno, line.strip()))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    print(f"neuronforge-search: {answered} queries answered ({blank} blank lines skipped of {lines})", file=err)
    return 0


INTERACTIVE_HELP = "type a query; ':mode dense|sparse|hybrid', ':k N', ':quit' (or Ctrl-D)"


def run_interactive(searcher: Searcher, stream: IO[str], mode: str, k: int, out: IO[str], err: IO[str]) -> int:
    """Read queries until EOF or :quit; the models load once, before the first prompt."""
    print(f"loading the {mode} models…", file=err)
    searcher.load(mode)
    print(INTERACTIVE_HELP, file=err)
    while True:
        err.write(f"[{mode} k={k}] query> ")
        err.flush()
        line = stream.readline()
        if not line:
            err.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in (":q", ":quit", ":exit"):
            return 0
        try:
            if text.startswith(":mode"):
                new_mode = text.split(maxsplit=1)[1] if " " in text else ""
                if new_mode not in MODES:
                    raise SearchError(f"unknown mode {new_mode!r}; use one of {', '.join(MODES)}")
                searcher.load(new_mode)
                mode = new_mode
            elif text.startswith(":k"):
                value = text.split(maxsplit=1)[1] if " " in text else ""
                try:
                    k = _positive_k(value)
                except argparse.ArgumentTypeError as exc:
                    raise SearchError(f"k {exc}") from None
            elif text.startswith(":"):
                raise SearchError(f"unknown command {text!r}; {INTERACTIVE_HELP}")
            else:
                _print_table(searcher.search(text, mode, k), out)
                out.flush()
        except SearchError as exc:
            print(f"neuronforge-search: {exc}", file=err)


def _answer_file(searcher: Searcher, name: str, stdin: IO[str], mode: str, k: int) -> int:
    if name == "-":
        return run_query_file(searcher, stdin, mode, k, sys.stdout, sys.stderr)
    path = Path(name)
    if not path.is_file():
        raise SearchError(f"--queries {path}: no such file")
    try:
        with open(path, encoding="utf-8") as fh:
            return run_query_file(searcher, fh, mode, k, sys.stdout, sys.stderr)
    except UnicodeDecodeError as exc:
        raise SearchError(f"--queries {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _fusion_from_config() -> Fusion:
    from neuronforge.corpus.config import CorpusConfigError, load_corpus_config

    try:
        config = load_corpus_config()
    except CorpusConfigError as exc:
        raise SearchError(f"cannot read the fusion settings: {exc}") from exc
    return Fusion(k=config.rrf_k, weights=config.rrf_weights)


def main(argv: Sequence[str] | None = None, stdin: IO[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="neuronforge-search",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 found (or nothing matched), 2 bad request or nothing to search.",
    )
    parser.add_argument("query", nargs="?", help="one query (or use --queries / --interactive)")
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--queries", metavar="FILE", help="one query per line ('-' = stdin); prints JSON lines")
    inputs.add_argument("-i", "--interactive", action="store_true", help="prompt for queries; models load once")
    parser.add_argument("--mode", choices=MODES, default="hybrid")
    parser.add_argument("-k", type=_positive_k, default=10, help=f"hits per query, 1 to {MAX_K} (default 10)")
    parser.add_argument("--dense-model", help="registry name (default: the first with embeddings)")
    parser.add_argument("--sparse-model", help="registry name (default: the first with an index)")
    parser.add_argument("--rrf-k", type=int, help="hybrid: fusion constant (default: rrf_k in corpus.yaml)")
    parser.add_argument("--data-dir", type=Path, help="default: NEURONFORGE_HOME or ./.neuronforge")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    stdin = stdin or sys.stdin
    if (args.query is not None) + bool(args.queries) + args.interactive != 1:
        parser.error("give one query, --queries FILE or --interactive")
    if args.rrf_k is not None and args.rrf_k < 0:
        parser.error(f"--rrf-k must be >= 0, got {args.rrf_k}")
    from neuronforge.devices import CoreAllocator, CoreLeaseError

    try:
        query = check_request(args.query, args.k) if args.query is not None else None
        fusion = _fusion_from_config() if args.mode == "hybrid" or args.interactive else Fusion()
        if args.rrf_k is not None:
            fusion = Fusion(k=args.rrf_k, weights=fusion.weights)
        searcher = Searcher.current(
            args.data_dir, dense_model=args.dense_model, sparse_model=args.sparse_model, mode=args.mode, fusion=fusion
        )
        # Encoding the query runs the models here: lease their cores first (held until this process exits, as the
        # Neuron runtime holds them), so a pipeline step on the same host never gets a core this CLI's runtime has.
        with CoreAllocator().lease(searcher.cores_needed(), holder="neuronforge-search"):
            if args.interactive:
                return run_interactive(searcher, stdin, args.mode, args.k, sys.stdout, sys.stderr)
            if args.queries:
                return _answer_file(searcher, args.queries, stdin, args.mode, args.k)
            hits = searcher.search(query, args.mode, args.k)
    except (SearchError, CoreLeaseError) as exc:
        print(f"neuronforge-search: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_hits_json(hits), indent=2, ensure_ascii=False))
    else:
        _print_table(hits, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
