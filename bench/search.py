"""Sparse search: SparseIndex query latency vs plain scipy scoring of every chunk, and the index build cost.

A document sample of the built-in corpus (Sizes.search_docs: SPLADE encoding of all ~2.2k chunks alone takes about a
minute here) is SPLADE-encoded through the pipeline's path (ONNX artifact, to_csr with max_active_dims), the index is
built and saved as the sparse_index asset does, then opened memory-mapped as the search CLI opens it. Query encoding is
done before timing: the figures are search only. Both sides run single-threaded (numpy / scipy sparse, no BLAS).
The baseline is the fastest plain way: scipy CSR(float32) @ query, per-document max, argpartition (the project's
`brute_force_search` is the exactness reference, untimed). The million-document figures and the peers (PISA,
Seismic, splade-index, bm25s) are the search-scale section's.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.context import SPARSE_MODEL, BenchContext, hash_sample
from bench.harness import Row, cprofile_summary, percentiles


def sparse_search_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    import numpy as np

    from neuronforge.backends import load_encoder
    from neuronforge.corpus import load_queries
    from neuronforge.retrieval import RowGroups
    from neuronforge.sparse_index import SparseIndex, brute_force_search, to_csr

    encoder = load_encoder(ctx.artifact(SPARSE_MODEL))
    docs = hash_sample(ctx.documents, ctx.sizes.search_docs, key=lambda d: d.id)
    with ctx.setup("chunk search sample (sparse tokenizer)"):
        chunks = ctx.chunks(encoder.tokenizer, encoder.sequence_length, docs)
    vocab = int(encoder.manifest["dimension"])

    started = time.perf_counter()
    matrix = to_csr(encoder.encode([c.input_text for c in chunks], truncate=False), encoder.max_active_dims)
    encode_s = time.perf_counter() - started
    ids = [c.doc_id for c in chunks]

    with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as tmp:
        started = time.perf_counter()
        SparseIndex.build(matrix, ids, vocab).save(Path(tmp) / "index")
        build_s = time.perf_counter() - started
        index = SparseIndex.load(Path(tmp) / "index", mmap=True)

        # The corpus's known-item queries: real query text, whether or not its answer is in the sample.
        queries = hash_sample(list(load_queries(ctx.corpus_dir).items()), ctx.sizes.search_queries, key=lambda q: q[0])
        query_rows = to_csr(encoder.encode([text for _, text in queries]))
        rows = [query_rows[i] for i in range(query_rows.shape[0])]
        csr32, groups = matrix.astype(np.float32), RowGroups.from_row_ids(ids)

        def scipy_top10(q):
            scores = groups.doc_scores(csr32 @ q.toarray().ravel().astype(np.float32))
            top = np.argpartition(-scores, min(10, scores.size - 1))[:10]
            return top[np.argsort(-scores[top])]

        for q in rows[:10]:  # warm-up: page in the mapped posting lists, let numpy/scipy settle
            index.search(q, 10)
            scipy_top10(q)

        # Alternate per query, so both sides see the same load at nearly the same moment.
        index_s, brute_s, mismatches = [], [], []
        for i, q in enumerate(rows):
            t0 = time.perf_counter()
            got = index.search(q, 10)
            t1 = time.perf_counter()
            scipy_top10(q)
            t2 = time.perf_counter()
            index_s.append(t1 - t0)
            brute_s.append(t2 - t1)
            want = brute_force_search(matrix, ids, q, 10)  # the exact reference, untimed
            if [d for d, _ in got] != [d for d, _ in want]:
                mismatches.append(queries[i][0])
        index_p, brute_p = percentiles(index_s), percentiles(brute_s)
        missed = index_p["p50"] * 10 > brute_p["p50"]
        profile = cprofile_summary(lambda: [index.search(q, 10) for q in rows]) if missed else ""

    identical = not mismatches
    quality = (
        f"identical top-10 on {len(rows)}/{len(rows)} queries"
        if identical
        else (f"top-10 differs on {len(mismatches)}/{len(rows)} queries")
    )
    info = {
        "chunks": matrix.shape[0],
        "documents": index.n_docs,
        "nnz": int(matrix.nnz),
        "queries": len(rows),
        "index_ms": {k: v * 1e3 for k, v in index_p.items()},
        "scipy_float32_ms": {k: v * 1e3 for k, v in brute_p.items()},
        "encode_s": encode_s,
        "index_build_s": build_s,
        "mismatched_queries": mismatches[:20],
    }
    latency = f"{index_p['p50'] * 1e3:.2f} ms vs {brute_p['p50'] * 1e3:.2f} ms"
    out = [
        Row(
            "search",
            "SparseIndex.search p50 latency",
            "plain scipy CSR(float32) @ query + doc max + argpartition",
            brute_p["p50"] / index_p["p50"],
            10.0,
            quality=quality,
            quality_ok=identical,
            note=f"p50 {latency}; {matrix.shape[0]} chunks, {index.n_docs} docs",
            details=info,
            profile=profile and f"cProfile of index.search over {len(rows)} queries (by cumulative time):\n{profile}",
        ),
        Row(
            "search",
            "SparseIndex.search p99 latency",
            "plain scipy CSR(float32) @ query + doc max + argpartition",
            brute_p["p99"] / index_p["p99"],
            10.0,
            quality=quality,
            quality_ok=identical,
            note=f"p99 {index_p['p99'] * 1e3:.2f} ms vs {brute_p['p99'] * 1e3:.2f} ms",
        ),
        Row(
            "search",
            "index build time / encoding time",
            "SPLADE encoding of the same corpus (pipeline path)",
            build_s / encode_s,
            0.05,
            higher_is_better=False,
            note=f"build+save {build_s:.2f} s vs encode {encode_s:.1f} s",
        ),
    ]
    return out, info
