"""search-scale: exact sparse search at a million documents beside PISA, Seismic, splade-index and bm25s on the same
postings, the plain scipy baseline, index size and build memory; dense exact search at scale.

Data (cached in <bench cache>/search-scale between runs):
- real: every chunk of the built-in stdlib corpus SPLADE-encoded through the pipeline's path (ONNX artifact, to_csr
  with max_active_dims), one row per chunk; chunks are the documents of this section, so all engines rank the same
  units. Queries: the corpus's queries encoded by the same model (Sizes.scale_queries of them).
- synthetic N (1M by default, `--scale-docs` for more): documents drawn from the real rows' statistics. A document's
  number of active terms is drawn from the real rows' counts, its terms (without repeats) with probability
  proportional to their real document frequency, and each weight from that term's real weights. Synthetic text has no
  topical structure: approximate (Seismic) and pruning (PISA) engines do worse on it than on real text, exhaustive
  ones are unaffected (see docs/sparse_search.md). The same real queries are used.
- every index is written by `neuronforge.sparse_build.write_index` (streaming, as the sparse_index asset does) in a
  child process whose peak RSS (VmHWM) is the build's memory figure.

Timing: k = 10, one query at a time, p50/p99 over all queries. Ours and the scipy baseline alternate per query in the
bench process (same load at the same moment); the peers run after them in the peer venv (`make bench-peers`,
bench/peers_worker.py) on the same postings and the same queries. Every row records the load average around its
measurement and the CPU model; a row measured with load above the core count is marked UNRELIABLE.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.context import BenchContext
from bench.harness import Row, percentiles
from bench.search_scale_data import REPO, SEED, built_index, dense_matrix, real_data, real_matrix

K = 10
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
PEER_ENGINES = ["splade_index", "pisa", "seismic", "bm25s"]
SEISMIC_RECALLS = (0.9, 0.95, 0.99)


# ---------------------------------------------------------------------------------------------------- machine load


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


class LoadWatch:
    """Load average (1 min) before and after a measurement, and whether it exceeded the cores at either end."""

    def __enter__(self) -> LoadWatch:
        self.start = os.getloadavg()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = os.getloadavg()[0]

    @staticmethod
    def of(loads: list[float]) -> dict[str, Any]:
        cores = os.cpu_count() or 1
        peak = max(loads)
        info = {"load_average": [round(x, 2) for x in loads], "cores": cores, "cpu": cpu_model()}
        if peak > cores:
            info["unreliable"] = f"UNRELIABLE: load {peak:.1f} > {cores} cores"
            print(f"[bench] warning: {info['unreliable']} during a search-scale row", file=sys.stderr, flush=True)
        return info

    def info(self) -> dict[str, Any]:
        return self.of([self.start, self.end])


def row(name, baseline, ratio, target, load: dict[str, Any], **kw) -> Row:
    note = kw.pop("note", "")
    note = f"{load['unreliable']}; {note}" if "unreliable" in load else note
    details = {**kw.pop("details", {}), **load}
    return Row("search-scale", name, baseline, ratio, target, note=note, details=details, **kw)


# ------------------------------------------------------------------------------------------------------ real data


# -------------------------------------------------------------------------------------------- synthetic documents


# ----------------------------------------------------------------------------------------------------- measuring


def query_list(z, with_ids: bool = False) -> list:
    """The encoded queries as (term ids, float64 weights), empty ones dropped; with ids: (query id, query)."""
    ptr = z["q_indptr"]
    out = []
    for qid, a, b in zip(z["query_ids"].tolist(), ptr[:-1], ptr[1:], strict=True):
        if b > a:
            q = (z["q_terms"][a:b].astype(np.int64), z["q_weights"][a:b].astype(np.float64))
            out.append((qid, q) if with_ids else q)
    return out


def exact_reference(csc, query, k: int) -> tuple[list[int], list[float]]:
    """Independent of the kernel: scipy's float64 product over the query's columns, the index's tie rule."""
    from neuronforge.retrieval import top_k_indices

    terms, weights = query
    scores = np.asarray(csc[:, terms].astype(np.float64) @ weights).ravel()
    top = top_k_indices(scores, k)
    top = top[scores[top] > 0]
    return top.tolist(), scores[top].tolist()


def measure_ours(folder: Path, queries) -> dict[str, Any]:
    """Ours on 1 and 2 threads and plain scipy float32, alternating per query; exactness against float64 scipy."""
    import scipy.sparse as sp

    from bench.peers_worker import load_csc
    from neuronforge.sparse_index import SparseIndex

    index = SparseIndex.load(folder)
    indptr, rows, weights, n_rows, vocab = load_csc(folder)
    csc = sp.csc_matrix((weights, rows, indptr), shape=(n_rows, vocab))
    csr32 = csc.tocsr()
    # The same postings with uint16-quantised weights: would such an index rank like float? (reference only)
    step = float(weights.max()) / 65535 if weights.size else 1.0
    csc16 = sp.csc_matrix(((np.rint(weights / step) * step).astype(np.float32), rows, indptr), shape=csc.shape)
    same16 = 0

    def scipy32(query):
        dense = np.zeros(vocab, dtype=np.float32)
        dense[query[0]] = query[1]
        scores = csr32 @ dense
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    contenders = {
        "ours": lambda q: index.top_k(q, K, threads=1),
        "ours_2_threads": lambda q: index.top_k(q, K, threads=2),
        "scipy_float32": scipy32,
    }
    for q in queries[:10]:  # warm-up: compile, page in the posting lists
        for fn in contenders.values():
            fn(q)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    identical = {"ours": 0, "ours_2_threads": 0}
    ours_top: list[list[int]] = []
    with LoadWatch() as watch:
        for i, q in enumerate(queries):
            names = list(contenders)
            names = names[i % len(names) :] + names[: i % len(names)]
            for name in names:
                started = time.perf_counter()
                got = contenders[name](q)
                seconds[name].append(time.perf_counter() - started)
                if name in identical:
                    want = exact_reference(csc, q, K)
                    identical[name] += got[0].tolist() == want[0] and got[1].tolist() == want[1]
                    if name == "ours":
                        ours_top.append(got[0].tolist())
                        same16 += exact_reference(csc16, q, K)[0] == want[0]
    return {
        "ms": {name: {p: v * 1e3 for p, v in percentiles(s).items()} for name, s in seconds.items()},
        "identical": identical,
        "uint16_identical": same16,
        "queries": len(queries),
        "top": ours_top,
        "load": watch.info(),
        "rows": n_rows,
        "nnz": int(rows.size),
    }


def run_peers(ctx: BenchContext, folder: Path, queries, engines: list[str]) -> dict[str, Any]:
    if not PEERS_PYTHON.is_file():
        return {e: {"error": f"peer venv missing ({PEERS_PYTHON}): run `make bench-peers`"} for e in engines}
    work = folder.with_name(folder.name + ".peers")
    work.mkdir(parents=True, exist_ok=True)
    qpath = work / "queries.npz"
    np.savez(
        qpath,
        indptr=np.cumsum([0] + [q[0].size for q in queries]),
        terms=np.concatenate([q[0] for q in queries]),
        weights=np.concatenate([q[1] for q in queries]),
    )
    spec = {"index_dir": str(folder), "queries": str(qpath), "work_dir": str(work), "k": K, "engines": engines}
    (work / "spec.json").write_text(json.dumps(spec))
    out = work / "results.json"
    out.unlink(missing_ok=True)
    log = ctx.out_dir / f"peers-{folder.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        done = subprocess.run(
            [str(PEERS_PYTHON), str(REPO / "bench" / "peers_worker.py"), str(work / "spec.json"), str(out)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=3600,
        )
    results = json.loads(out.read_text()) if out.is_file() else {}
    for e in engines:
        results.setdefault(e, {"error": f"peer worker exited {done.returncode} before {e}; see {log}"})
    return results


def peer_stats(result: dict[str, Any], exact_top: list[list[int]]) -> dict[str, dict[str, Any]]:
    out = {}
    for setting, r in result.get("settings", {}).items():
        found = sum(len(set(a) & set(b)) for a, b in zip(r["top"], exact_top, strict=True))
        wanted = sum(len(b) for b in exact_top) or 1
        out[setting] = {
            "ms": {p: v * 1e3 for p, v in percentiles(r["seconds"]).items()},
            "recall@10": found / wanted,
            "load": LoadWatch.of(r["load"][0][:1] + r["load"][1][:1]),
        }
    return out


# ---------------------------------------------------------------------------------------------------------- rows


def scale_rows(label: str, build: dict[str, Any], ours: dict[str, Any], peers: dict[str, Any]) -> list[Row]:
    o = ours["ms"]["ours"]
    load = ours["load"]
    n = ours["queries"]
    same = ours["identical"]["ours"]
    exact = f"identical top-10 (ids and float64 scores, ties included) on {same}/{n} queries"
    out = [
        row(
            f"{label}: exact p50, 1 thread",
            "plain scipy CSR(float32) @ q + argpartition",
            ours["ms"]["scipy_float32"]["p50"] / o["p50"],
            10.0,
            load,
            quality=exact,
            quality_ok=same == n,
            note=f"p50/p99 {o['p50']:.2f}/{o['p99']:.2f} ms vs {ours['ms']['scipy_float32']['p50']:.2f} ms; "
            f"{ours['rows']} docs, {ours['nnz']} postings",
            details={"ms": ours["ms"]},
        ),
        row(
            f"{label}: identical top-10 to brute force",
            "float64 scipy over the query's columns",
            same / n,
            1.0,
            load,
            quality=exact,
            quality_ok=same == n,
            note=f"2 threads: {ours['identical']['ours_2_threads']}/{n} identical",
        ),
        row(
            f"{label}: exact p50, 2 threads (doc-range shards)",
            "ours, 1 thread",
            o["p50"] / ours["ms"]["ours_2_threads"]["p50"],
            1.3,
            load,
            quality_ok=ours["identical"]["ours_2_threads"] == n,
            note=f"p50/p99 {ours['ms']['ours_2_threads']['p50']:.2f}/{ours['ms']['ours_2_threads']['p99']:.2f} ms",
        ),
        row(
            f"{label}: uint16 weights, top-10 identical to float32",
            "exact float32-weight ranking",
            ours["uint16_identical"] / n,
            1.0,
            load,
            note=f"{ours['uint16_identical']}/{n} queries (scipy float64 over quantised weights); the index keeps "
            "float32 weights unless this and nDCG hold",
        ),
        row(
            f"{label}: p99 / p50",
            "ours p50",
            o["p99"] / o["p50"],
            4.0,
            load,
            higher_is_better=False,
            note=f"{o['p99']:.2f} / {o['p50']:.2f} ms",
        ),
    ]
    hwm = build["vm_hwm_kib"] * 1024
    own = hwm - build["rss_start_kib"] * 1024
    out.append(
        row(
            f"{label}: peak build RSS / index size",
            "index size on disk",
            own / build["size_bytes"],
            2.0,
            LoadWatch.of([os.getloadavg()[0]]),
            higher_is_better=False,
            note=f"build's own {own / 2**20:.0f} MiB (peak RSS {hwm / 2**20:.0f} MiB incl. interpreter) for "
            f"{build['size_bytes'] / 2**20:.0f} MiB, {build['seconds']:.0f} s"
            + (" (cached build)" if build.get("cached") else ""),
            details={"build": build},
        )
    )

    def peer_row(name, engine, setting, target, higher_is_better=False, compare="p50", quality="", mine="ours"):
        o = ours["ms"][mine]
        result = peers.get(engine, {})
        stats = peer_stats(result, ours["top"]) if "settings" in result else {}
        if setting not in stats:
            why = result.get("error", f"{engine}/{setting} not measured")
            return row(name, engine, None, target, load, higher_is_better=higher_is_better, note=why)
        p = stats[setting]
        ratio = o[compare] / p["ms"][compare] if not higher_is_better else p["ms"][compare] / o[compare]
        info = p["load"]
        both = {**info, **({"unreliable": load["unreliable"]} if "unreliable" in load else {})}
        return row(
            name,
            f"{engine} {setting}",
            ratio,
            target,
            both,
            higher_is_better=higher_is_better,
            quality=quality or f"{engine} recall@10 vs exact {p['recall@10']:.3f}",
            note=f"{engine} p50/p99 {p['ms']['p50']:.2f}/{p['ms']['p99']:.2f} ms vs ours {o['p50']:.2f}/{o['p99']:.2f}",
            details={"peer": p, "peer_build_s": result.get("build_s"), "peer_rss_kib": result.get("rss_kib")},
        )

    out.append(peer_row(f"{label}: p50 vs splade-index numba", "splade_index", "numba", 0.8))
    out.append(peer_row(f"{label}: p50 vs PISA MaxScore", "pisa", "maxscore", 0.2))
    # The default search uses both cores here (doc-range shards); the peers run one thread each.
    two = "ours_2_threads"
    out.append(peer_row(f"{label}: 2-thread p50 vs splade-index numba", "splade_index", "numba", 0.8, mine=two))
    out.append(peer_row(f"{label}: 2-thread p50 vs PISA MaxScore", "pisa", "maxscore", 0.2, mine=two))
    out.append(peer_row(f"{label}: p50 vs PISA BlockMax-WAND", "pisa", "bmw", 0.2))
    out.append(
        peer_row(f"{label}: bm25s numba p50 / ours (latency only)", "bm25s", "numba", 1.0, higher_is_better=True)
    )
    pisa = peers.get("pisa", {})
    if "size_bytes" in pisa:
        out.append(
            row(
                f"{label}: index on disk / PISA's",
                "PISA block_simdbp index + WAND data + lexicons",
                build["size_bytes"] / pisa["size_bytes"],
                1.5,
                load,
                higher_is_better=False,
                note=f"{build['size_bytes'] / 2**20:.0f} MiB vs {pisa['size_bytes'] / 2**20:.0f} MiB "
                f"({build['size_bytes'] / max(ours['nnz'], 1):.2f} vs {pisa['size_bytes'] / max(ours['nnz'], 1):.2f}"
                " bytes a posting; our weights stay float32)",
            )
        )
    else:
        out.append(row(f"{label}: index on disk / PISA's", "PISA", None, 1.5, load, note=pisa.get("error", "")))
    seismic = peers.get("seismic", {})
    stats = peer_stats(seismic, ours["top"]) if "settings" in seismic else {}
    for level in SEISMIC_RECALLS:
        fits = [(s["ms"]["p50"], name) for name, s in stats.items() if s["recall@10"] >= level]
        if not fits:
            why = seismic.get("error", f"no Seismic setting reached recall {level}")
            out.append(
                row(
                    f"{label}: Seismic at recall >= {level} (approximate reference)",
                    "Seismic",
                    None,
                    1.0,
                    load,
                    note=why,
                )
            )
            continue
        _, best = min(fits)
        out.append(
            peer_row(
                f"{label}: Seismic p50 / ours at recall >= {level} (approximate reference)",
                "seismic",
                best,
                1.0,
                higher_is_better=True,
            )
        )
    return out


def quantization_rows(real_path: Path) -> list[Row]:
    """Would uint8/uint16 weights keep the ranking? Top-10 identity and nDCG@10 against float, on the real corpus."""
    from neuronforge.retrieval import evaluate, run_from_results
    from neuronforge.sparse_index import SparseIndex

    real, z = real_matrix(real_path)
    docs = z["chunk_docs"].tolist()
    qrels = json.loads(str(z["qrels"]))
    pairs = query_list(z, with_ids=True)
    qids = [qid for qid, _ in pairs]
    queries = [q for _, q in pairs]
    with LoadWatch() as watch:
        exact = SparseIndex.build(real, docs, real.shape[1])
        want = [exact.search(q, K) for q in queries]
        float_eval = evaluate(run_from_results(qids, want), {q: qrels[q] for q in qids if q in qrels})
        out = []
        for bits in (8, 16):
            scale = float(real.data.max()) / (2**bits - 1)
            quantised = real.copy()
            quantised.data = (np.rint(real.data / scale) * scale).astype(np.float32)
            index = SparseIndex.build(quantised, docs, real.shape[1])
            got = [index.search(q, K) for q in queries]
            same = sum([d for d, _ in a] == [d for d, _ in b] for a, b in zip(got, want, strict=True))
            q_eval = evaluate(run_from_results(qids, got), {q: qrels[q] for q in qids if q in qrels})
            delta = abs(q_eval["ndcg@10"] - float_eval["ndcg@10"])
            out.append((bits, same, q_eval, delta))
    load = watch.info()
    return [
        row(
            f"uint{bits} weights: top-10 identical to float32 (real corpus)",
            "float32 weights",
            same / len(queries),
            1.0,
            load,
            quality=f"nDCG@10 {q_eval['ndcg@10']:.4f} vs float {float_eval['ndcg@10']:.4f} over "
            f"{float_eval['queries']} judged queries",
            quality_ok=round(q_eval["ndcg@10"], 4) == round(float_eval["ndcg@10"], 4),
            note=f"{same}/{len(queries)} queries identical; the index keeps float32 unless both hold",
        )
        for bits, same, q_eval, delta in out
    ]


# ---------------------------------------------------------------------------------------------------------- dense


def dense_blocked_top_k(matrix: np.ndarray, query: np.ndarray, k: int, block: int = 65_536):
    """Exact top-k by dot product over a memory-mapped matrix, block by block (memory: one block of scores)."""
    from neuronforge.retrieval import top_k_indices
    from neuronforge.sparse_index import merge_top_k

    parts = []
    for lo in range(0, matrix.shape[0], block):
        scores = matrix[lo : lo + block] @ query
        top = top_k_indices(scores, k)
        parts.append((top + lo, scores[top].astype(np.float64)))
    return merge_top_k(parts, k)


def dense_rows(ctx: BenchContext, n_rows: int, n_queries: int = 20, max_rounds: int = 6) -> list[Row]:
    from neuronforge.retrieval import top_k_indices

    matrix = dense_matrix(ctx, n_rows)
    rng = np.random.default_rng(SEED)
    picks = rng.choice(n_rows, size=n_queries, replace=False)
    queries = np.asarray(matrix[np.sort(picks)]) + 0.5 * rng.standard_normal((n_queries, matrix.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    in_ram = np.array(matrix)

    def plain(q):
        scores = in_ram @ q
        return top_k_indices(scores, K)

    identical = sum(
        dense_blocked_top_k(matrix, q, K)[0].tolist() == plain(q).tolist() for q in queries[: min(5, n_queries)]
    )
    ratios, blocked_s, plain_s = [], [], []
    with LoadWatch() as watch:
        for r in range(max_rounds):
            b_round, p_round = [], []
            for i, q in enumerate(queries):
                for name in ("b", "p") if (i + r) % 2 == 0 else ("p", "b"):
                    started = time.perf_counter()
                    dense_blocked_top_k(matrix, q, K) if name == "b" else plain(q)
                    (b_round if name == "b" else p_round).append(time.perf_counter() - started)
            blocked_s += b_round
            plain_s += p_round
            ratios.append(float(np.median(p_round) / np.median(b_round)))
            spread = (max(ratios) - min(ratios)) / float(np.median(ratios))
            if r >= 1 and spread <= 0.10:
                break
    b, p = percentiles(blocked_s), percentiles(plain_s)
    load = watch.info()
    return [
        row(
            f"dense {n_rows} x 384 float32 exact top-10 p50: blocked over the memory map",
            "numpy matrix @ q in RAM + top_k_indices",
            float(np.median(ratios)),
            0.9,
            load,
            quality=f"identical top-10 on {identical}/{min(5, n_queries)} checked queries",
            quality_ok=identical == min(5, n_queries),
            note=f"p50 {b['p50'] * 1e3:.1f} ms vs {p['p50'] * 1e3:.1f} ms; paired ratio over {len(ratios)} rounds, "
            f"spread {spread:.0%}" + ("" if spread <= 0.10 else " (above 10 %: reported, not converged)"),
            details={"round_ratios": ratios},
        ),
        row(
            f"dense {n_rows} x 384 int8 exact-rerank path",
            "float32 blocked scan",
            None,
            1.0,
            load,
            note="not built: numpy has no int8 GEMM, and the float32 scan above is already memory-bound",
        ),
    ]


# ----------------------------------------------------------------------------------------------------- the section


def search_scale_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    real_path = real_data(ctx)
    _, z = real_matrix(real_path)
    queries = query_list(z)
    rows: list[Row] = []
    info: dict[str, Any] = {"cpu": cpu_model(), "queries": len(queries), "k": K}
    scales = [("real", 0)] + [("synthetic", n) for n in ctx.sizes.scale_docs]
    for source, n_docs in scales:
        folder, build = built_index(ctx, real_path, source, n_docs)
        label = f"real {int(z['shape'][0])} chunks" if source == "real" else f"synthetic {n_docs / 1e6:g}M docs"
        print(f"[bench] search-scale: {label}: ours and scipy ...", file=sys.stderr, flush=True)
        ours = measure_ours(folder, queries)
        engines = [e for e in PEER_ENGINES if not (e == "seismic" and n_docs > 2_000_000)]
        print(f"[bench] search-scale: {label}: peers {engines} ...", file=sys.stderr, flush=True)
        peers = run_peers(ctx, folder, queries, engines)
        if "seismic" not in engines:
            peers["seismic"] = {"error": "not built above 2M docs: its 4M builds ran out of memory in 24 GB (#17)"}
        rows += scale_rows(label, build, ours, peers)
        info[label] = {
            "build": build,
            "ours": {k: v for k, v in ours.items() if k != "top"},
            "peers": {
                e: {k: v for k, v in r.items() if k != "settings"} | {"stats": peer_stats(r, ours["top"])}
                for e, r in peers.items()
            },
        }
    rows += quantization_rows(real_path)
    rows += dense_rows(ctx, ctx.sizes.dense_scale_rows)
    return rows, info
