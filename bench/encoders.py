"""Encoding throughput: the pipeline's encoders (ONNX artifacts via load_encoder) vs the plain sentence-transformers
library, on chunks of the built-in corpus cut exactly as the pipeline's shards cut them.

The pipeline's runner keeps the static-shape contract (at most batch_size x sequence_length per call, like a Neuron
model); SentenceTransformer pads each length-sorted batch to its longest text. Both get the same chunk lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.context import DENSE_MODEL, SPARSE_MODEL, BenchContext, hash_sample
from bench.harness import Row, alternate, length_stats, paired_ratio
from bench.layouts import layout_rows
from neuronforge.parity import row_cosines

ST_BATCH = 32


def throughput_inputs(ctx: BenchContext, chunks: list, rounds: int) -> list[list[str]]:
    """`rounds` slices of `encode_chunks` chunk texts each, spread over the corpus, in corpus order within a slice."""
    need = rounds * ctx.sizes.encode_chunks
    picked = hash_sample(chunks, need, key=lambda c: c.id)
    texts = [c.input_text for c in picked]
    size = ctx.sizes.encode_chunks
    return [texts[i * size : (i + 1) * size] for i in range(rounds)]


def padding_stats(encoder: Any, slices: list[list[str]]) -> dict[str, Any]:
    """Token lengths of the inputs, and how many of the positions each path computes are real tokens."""
    lengths: list[int] = []
    static = bucketed = library = 0
    runner = encoder.runner
    for texts in slices:
        _, mask = encoder.tokenize(texts, truncate=False)
        row_lengths = mask.sum(axis=1)
        lengths.extend(int(n) for n in row_lengths)
        by_length = np.sort(row_lengths)[::-1]  # the library sorts by length, then pads each batch to its longest
        library += sum(len(by_length[i : i + ST_BATCH]) * int(by_length[i]) for i in range(0, len(by_length), ST_BATCH))
        for start in range(0, len(row_lengths), runner.batch_size):
            batch = np.sort(row_lengths[start : start + runner.batch_size])
            static += runner.batch_size * runner.sequence_length
            sub = getattr(runner, "sub_batch", runner.batch_size)
            bucket = getattr(runner, "bucket_length", lambda n: runner.sequence_length)
            for s in range(0, batch.size, sub):
                bucketed += sub * bucket(int(batch[s : s + sub].max()))
    real = sum(lengths)
    return {
        "tokens_per_chunk": length_stats(lengths),
        "real_token_share_static": round(real / static, 3),
        "real_token_share_bucketed": round(real / bucketed, 3),
        "real_token_share_library": round(real / library, 3),
    }


def miss_profile(encoder: Any, texts: list[str], library_call, padding: dict[str, Any]) -> str:
    """Why an encoder row missed: how much of each side's work is padding, and where each side spends its time."""
    from bench.profiles import onnx_op_profile, torch_op_profile

    share = (
        f"real tokens / computed positions: pipeline {padding['real_token_share_bucketed']:.0%} "
        f"(static shape alone {padding['real_token_share_static']:.0%}), library {padding['real_token_share_library']:.0%}"
    )
    return "\n".join([share, onnx_op_profile(encoder, texts), torch_op_profile(lambda: library_call(texts))])


def input_note(inputs: dict[str, Any]) -> str:
    tokens = inputs["tokens_per_chunk"]
    return (
        f"{tokens['count']} chunks, tokens mean {tokens['mean']:.0f} (p10 {tokens['p10']:.0f}, p90 {tokens['p90']:.0f}, "
        f"max {tokens['max']:.0f}); real tokens / computed: pipeline {inputs['real_token_share_bucketed']:.0%}, "
        f"library {inputs['real_token_share_library']:.0%}"
    )


def dense_ndcg(ctx: BenchContext, encoders: dict[str, Any]) -> dict[str, float]:
    """nDCG@10 of each encoder on a document sample of the built-in corpus and its known-item queries."""
    from neuronforge.corpus import load_qrels, load_queries
    from neuronforge.retrieval import dense_search, evaluate

    docs = hash_sample(ctx.documents, ctx.sizes.retrieval_docs, key=lambda d: d.id)
    doc_ids = {d.id for d in docs}
    qrels = {q: j for q, j in load_qrels(ctx.corpus_dir).items() if set(j) <= doc_ids}
    queries = {q: t for q, t in load_queries(ctx.corpus_dir).items() if q in qrels}
    any_encoder = next(iter(encoders.values()))
    chunks = ctx.chunks(any_encoder.tokenizer, any_encoder.sequence_length, docs)
    scores = {}
    for name, encoder in encoders.items():
        vectors = encoder.encode([c.input_text for c in chunks], truncate=False)
        query_vecs = encoder.encode(list(queries.values()))
        run = dense_search(vectors, [c.doc_id for c in chunks], query_vecs, 10, query_ids=list(queries))
        scores[name] = evaluate(run, qrels)["ndcg@10"]
    scores["documents"], scores["queries"], scores["chunks"] = len(docs), len(queries), len(chunks)
    return scores


def dense_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    from neuronforge.backends import load_encoder
    from neuronforge.backends.heads import load_library_model

    encoders = {
        "fp32": load_encoder(ctx.artifact(DENSE_MODEL)),
        "int8": load_encoder(ctx.artifact(DENSE_MODEL, quantize="int8")),
    }
    fp32 = encoders["fp32"]
    library = load_library_model("dense", ctx.model_dir(DENSE_MODEL))
    library.max_seq_length = fp32.sequence_length
    with ctx.setup("chunk corpus (dense tokenizer)"):
        chunks = ctx.chunks(fp32.tokenizer, fp32.sequence_length)
    slices = throughput_inputs(ctx, chunks, ctx.sizes.encode_rounds)

    contenders = {
        "library": lambda r: library.encode(slices[r], batch_size=ST_BATCH, show_progress_bar=False),
        # truncate=False: the corpus_embeddings asset encodes chunks that must already fit the static shape.
        **{name: (lambda r, e=enc: e.encode(slices[r], truncate=False)) for name, enc in encoders.items()},
    }
    seconds, outputs = alternate(contenders, ctx.sizes.encode_rounds)
    reference = np.concatenate(outputs["library"])
    cos = {name: row_cosines(np.concatenate(outputs[name]), reference) for name in encoders}
    with ctx.setup("dense nDCG@10 (fp32 and int8 encode of the retrieval sample)"):
        ndcg = dense_ndcg(ctx, encoders)
    texts = sum(len(s) for s in slices)
    info = {
        "inputs": {"chunks_per_round": ctx.sizes.encode_chunks, **padding_stats(fp32, slices)},
        "seconds": seconds,
        "chunks_per_s": {name: round(texts / sum(s), 1) for name, s in seconds.items()},
        "ndcg@10": ndcg,
    }
    baseline = f"SentenceTransformer.encode(batch_size={ST_BATCH}) torch fp32"
    stats_fp32, stats_int8 = (
        paired_ratio(seconds["library"], seconds["fp32"]),
        paired_ratio(seconds["library"], seconds["int8"]),
    )
    ndcg_gap = ndcg["int8"] - ndcg["fp32"]
    rows = [
        Row(
            "dense",
            "MiniLM ONNX fp32 throughput",
            baseline,
            stats_fp32["median"],
            1.3,
            quality=f"min cosine {cos['fp32'].min():.6f} (>= 0.9999)",
            quality_ok=bool(cos["fp32"].min() >= 0.9999),
            note=input_note(info["inputs"]),
            details={"paired_ratio": stats_fp32, "chunks_per_s": info["chunks_per_s"]},
        ),
        Row(
            "dense",
            "MiniLM ONNX int8 throughput",
            baseline,
            stats_int8["median"],
            2.0,
            # nDCG: int8 may not lose more than 0.01 against fp32 (being better is no quality problem).
            quality=f"mean cosine {cos['int8'].mean():.4f} (>= 0.99); nDCG@10 {ndcg['int8']:.4f} vs fp32 "
            f"{ndcg['fp32']:.4f} ({ndcg_gap:+.4f}, >= -0.01)",
            quality_ok=bool(cos["int8"].mean() >= 0.99 and ndcg_gap >= -0.01),
            details={"paired_ratio": stats_int8, "min_cosine": float(cos["int8"].min()), "ndcg@10": ndcg},
        ),
    ]
    for row, name in zip(rows, encoders, strict=True):
        if row.status == "MISS":
            row.profile = miss_profile(encoders[name], slices[0], contenders_library(library), info["inputs"])
    layout_rows_, info["layout"] = layout_rows(ctx, encoders, slices)
    return rows + layout_rows_, info


def contenders_library(library: Any):
    return lambda texts: library.encode(texts, batch_size=ST_BATCH, show_progress_bar=False)


def sparse_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    from neuronforge.backends import load_encoder
    from neuronforge.backends.heads import load_library_model
    from neuronforge.sparse_index import to_csr

    encoder = load_encoder(ctx.artifact(SPARSE_MODEL))
    library = load_library_model("sparse", ctx.model_dir(SPARSE_MODEL))
    library.max_seq_length = encoder.sequence_length
    with ctx.setup("chunk corpus (sparse tokenizer)"):
        chunks = ctx.chunks(encoder.tokenizer, encoder.sequence_length)
    slices = throughput_inputs(ctx, chunks, ctx.sizes.encode_rounds)
    k = encoder.max_active_dims

    # Both sides produce the same thing: sparse vectors pruned to the registry's max_active_dims. The library's
    # default output (a torch sparse tensor) is part of what it costs.
    contenders = {
        "library": lambda r: library.encode(slices[r], batch_size=ST_BATCH, max_active_dims=k, show_progress_bar=False),
        "onnx": lambda r: to_csr(encoder.encode(slices[r], truncate=False), k),
    }
    seconds, _ = alternate(contenders, ctx.sizes.encode_rounds)

    # Activations compared before pruning, on the first round's chunks.
    texts = slices[0]
    got = encoder.encode(texts, truncate=False)
    want = library.encode(texts, batch_size=ST_BATCH, convert_to_tensor=True, convert_to_sparse_tensor=False)
    want = want.float().cpu().numpy()
    same_dims = bool(((got > 0) == (want > 0)).all())
    max_diff = float(np.abs(got - want).max())
    stats = paired_ratio(seconds["library"], seconds["onnx"])
    info = {
        "inputs": {"chunks_per_round": ctx.sizes.encode_chunks, **padding_stats(encoder, slices)},
        "seconds": seconds,
        "chunks_per_s": {name: round(len(texts) * len(s) / sum(s), 1) for name, s in seconds.items()},
        "max_active_dims": k,
        "active_dims_identical": same_dims,
        "max_abs_diff": max_diff,
    }
    row = Row(
        "sparse",
        "SPLADE-tiny ONNX fp32 encode",
        f"SparseEncoder.encode(batch_size={ST_BATCH}, max_active_dims={k})",
        stats["median"],
        2.5,
        quality=f"identical active dims: {same_dims}, max |diff| {max_diff:.1e}",
        quality_ok=same_dims and max_diff <= 5e-5,
        note=input_note(info["inputs"]),
        details={"paired_ratio": stats, "chunks_per_s": info["chunks_per_s"]},
    )
    if row.status == "MISS":
        row.profile = miss_profile(encoder, slices[0], contenders_library(library), info["inputs"])
    return [row], info
