"""The search-scale peers, run in their own venv (`make bench-peers`): PISA, Seismic, splade-index and bm25s over the
postings of one of our index folders, one query at a time, k results each.

`python bench/peers_worker.py SPEC.json OUT.json` (with .venv-peers/bin/python). SPEC names the index folder (format
v2, one row per document), a queries .npz (indptr, terms, weights), a work folder for the peers' own index files
(reused while present), k, and the engines to run. OUT gets, per engine and setting: per-query seconds, the top-k
document numbers, build seconds, peak RSS after building and the engine's index size on disk. Recall and pass/miss
are the main bench's: it knows the exact answers.

Only numpy at module level: the main bench imports `load_csc` from here too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

BLOCK_BITS = 16


def load_csc(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(indptr int64[V+1], rows int32[N], weights float32[N], n_rows, vocab) of a format-v2 index folder."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    blocks = np.load(folder / "postings_blocks.npy")
    lows = np.load(folder / "postings_lows.npy", mmap_mode="r")
    weights = np.load(folder / "postings_weights.npy", mmap_mode="r")
    vocab, n_blocks = blocks.shape[0], blocks.shape[1] - 1
    # Entry j of the flattened table starts (term, block) segment j; every (B+1)-th segment is empty (term change).
    block_of_segment = np.tile(np.arange(n_blocks + 1, dtype=np.int32), vocab)[:-1]
    block = np.repeat(block_of_segment, np.diff(blocks.ravel()))
    rows = (block << BLOCK_BITS) | lows.astype(np.int32)
    indptr = np.append(blocks[:, 0], blocks[-1, -1]).astype(np.int64)
    return indptr, rows, np.asarray(weights, dtype=np.float32), int(meta["rows"]), vocab


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def folder_bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def load_queries(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    q = np.load(path)
    ptr = q["indptr"]
    return [
        (q["terms"][a:b].astype(np.int64), q["weights"][a:b].astype(np.float32))
        for a, b in zip(ptr[:-1], ptr[1:], strict=True)
    ]


def timed(fn, queries, warmup: int = 10) -> tuple[list[float], list[list[int]]]:
    for q in queries[:warmup]:
        fn(q)
    seconds, tops = [], []
    for q in queries:
        started = time.perf_counter()
        top = fn(q)
        seconds.append(time.perf_counter() - started)
        tops.append([int(d) for d in top])
    return seconds, tops


# ----------------------------------------------------------------------------------------------------------- PISA


def pisa_engine(csc, work: Path, k: int):
    """PISA over impacts quantised as round(weight * 100) (at least 1), the binary collection written from the CSC
    (PISA's own Python indexer loops over every posting), MaxScore and BlockMax-WAND on one thread."""
    import pyterrier_pisa
    from pyterrier_pisa import _pisathon

    indptr, rows, weights, n_rows, vocab = csc
    folder = work / "pisa"
    started = time.perf_counter()
    if not (folder / "pt_meta.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        used = np.flatnonzero(np.diff(indptr))  # PISA's lexicon holds only terms with postings
        lengths = np.diff(indptr)[used].astype(np.uint32)
        # .docs: [1, n_docs] then per term [df, doc ids...]; .freqs: per term [df, impacts...]; .sizes: [n, sizes...]
        slots = np.zeros(len(rows) + len(used), dtype=bool)
        heads = indptr[used] + np.arange(len(used))
        slots[heads] = True
        docs = np.empty(slots.size, dtype=np.uint32)
        docs[slots] = lengths
        docs[~slots] = rows
        impacts = np.maximum(1, np.rint(weights * 100)).astype(np.uint32)
        freqs = docs.copy()
        freqs[~slots] = impacts
        np.concatenate([np.array([1, n_rows], dtype=np.uint32), docs]).tofile(folder / "inv.docs")
        freqs.tofile(folder / "inv.freqs")
        sizes = np.bincount(rows, minlength=n_rows).astype(np.uint32)
        np.concatenate([np.array([n_rows], dtype=np.uint32), sizes]).tofile(folder / "inv.sizes")
        (folder / "fwd.terms").write_text("".join(f"t{t:07d}\n" for t in used))  # sorted: the lexicon is searched
        (folder / "fwd.documents").write_text("".join(f"{d}\n" for d in range(n_rows)))
        _pisathon.build_binlex(str(folder / "fwd.terms"), str(folder / "fwd.termlex"))
        _pisathon.build_binlex(str(folder / "fwd.documents"), str(folder / "fwd.doclex"))
        (folder / "pt_meta.json").write_text(
            json.dumps({"type": "sparse_index", "format": "pisa", "package_hint": "pyterrier-pisa", "stemmer": "none"})
        )
    index = pyterrier_pisa.PisaIndex(str(folder), stemmer="none", stops="none")
    retriever = index.quantized(num_results=k, threads=1, query_algorithm="maxscore")  # builds WAND data + index
    build_s = time.perf_counter() - started
    ctxt = retriever._ctxt
    out = {
        "qidx": np.empty(k, dtype=np.int32),
        "docno": np.empty(k, dtype=object),
        "rank": np.empty(k, dtype=np.int32),
        "score": np.empty(k, dtype=np.float32),
    }

    def searcher(algorithm):
        def search(query):
            terms, qweights = query
            toks = {f"t{t:07d}": float(w * 100) for t, w in zip(terms.tolist(), qweights.tolist(), strict=True)}
            size = _pisathon.retrieve(
                ctxt,
                algorithm,
                [(0, toks)],
                k=k,
                threads=1,
                query_weighted=1,
                pretokenised=True,
                result_qidxs=out["qidx"],
                result_docnos=out["docno"],
                result_ranks=out["rank"],
                result_scores=out["score"],
            )
            return [int(d) for d in out["docno"][:size]]

        return search

    # What MaxScore needs at query time: the compressed index, its WAND (max-score) data and the lexicons.
    needed = [p for p in folder.iterdir() if ".bmw." in p.name or p.name.endswith("lex")]
    return build_s, folder_bytes(needed), {"maxscore": searcher("maxscore"), "bmw": searcher("block_max_wand")}


# -------------------------------------------------------------------------------------------------------- Seismic


SEISMIC_SETTINGS = [  # (query_cut, heap_factor): from cheap/approximate to expensive/near-exact
    (5, 0.9),
    (10, 0.9),
    (10, 0.8),
    (20, 0.8),
    (20, 0.7),
    (30, 0.6),
    (50, 0.5),
]


def seismic_engine(csc, work: Path, k: int):
    """Seismic built with its documented defaults (n_postings 3500, centroid_fraction 0.1, summary_energy 0.4)."""
    import scipy.sparse as sp
    import seismic

    indptr, rows, weights, n_rows, vocab = csc
    path = work / "seismic.index"
    started = time.perf_counter()
    if path.exists() or Path(str(path) + ".index.seismic").exists():
        index = seismic.SeismicIndex.load(str(path) + ".index.seismic" if not path.exists() else str(path))
    else:
        csr = sp.csc_matrix((weights, rows, indptr), shape=(n_rows, vocab)).tocsr()
        csr.sort_indices()
        dataset = seismic.SeismicDataset()
        dataset.add_documents_by_id(
            [str(i) for i in range(n_rows)],
            csr.indices.astype(np.int64),
            csr.data.astype(np.float32),
            csr.indptr.astype(np.int64),
        )
        del csr
        index = seismic.SeismicIndex.build_from_dataset(dataset, num_threads=os.cpu_count())
        del dataset
        index.save(str(path))
    build_s = time.perf_counter() - started
    size = folder_bytes(work.glob("seismic.index*"))
    string = seismic.get_seismic_string()

    def searcher(cut, heap):
        def search(query):
            terms, qweights = query
            hits = index.search("q", np.array([str(t) for t in terms], dtype=string), qweights, k, cut, heap)
            return [int(doc) for _, _, doc in hits]

        return search

    return build_s, size, {f"cut{c}-heap{h}": searcher(c, h) for c, h in SEISMIC_SETTINGS}


# --------------------------------------------------------------------------------------------- splade-index, bm25s


def splade_index_engine(csc, work: Path, k: int):
    """splade-index's numba search (its `retrieve` path for one query: exhaustive float32 scores + numba top-k)."""
    import numba
    from splade_index.numba.retrieve_utils import _retrieve_internal_jitted_parallel

    numba.set_num_threads(1)
    indptr, rows, weights, n_rows, vocab = csc
    data, indices, ptr = weights.astype(np.float32), rows.astype(np.int32), indptr.astype(np.int32)

    def search(query):
        terms, qweights = query
        _, top = _retrieve_internal_jitted_parallel(
            terms.astype(np.int32),
            qweights.astype(np.float32),
            np.array([0, terms.size], dtype=np.int32),
            k,
            True,
            np.float32,
            np.int32,
            data,
            ptr,
            indices,
            n_rows,
        )
        return top[0].tolist()

    return 0.0, (data.nbytes + indices.nbytes + ptr.nbytes), {"numba": search}


def bm25s_engine(csc, work: Path, k: int):
    """bm25s's numba scorer over the same impacts (bm25s has no query weights: every query term counts once)."""
    import bm25s

    indptr, rows, weights, n_rows, vocab = csc
    retriever = bm25s.BM25(backend="numba")
    retriever.scores = {"data": weights, "indices": rows, "indptr": indptr, "num_docs": n_rows}
    retriever.nonoccurrence_array = None

    def search(query):
        terms, _ = query
        _, top = retriever._get_top_k_results(terms.astype(np.int32).tolist(), k=k, backend="numba", sorted=True)
        return top.tolist()

    return 0.0, (weights.nbytes + rows.nbytes + indptr.nbytes), {"numba": search}


ENGINES = {"pisa": pisa_engine, "seismic": seismic_engine, "splade_index": splade_index_engine, "bm25s": bm25s_engine}


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    csc = load_csc(Path(spec["index_dir"]))
    queries = load_queries(Path(spec["queries"]))
    k = int(spec["k"])
    results: dict = {}
    for name in spec["engines"]:
        try:
            build_s, size, searchers = ENGINES[name](csc, work, k)
            settings = {}
            for setting, fn in searchers.items():
                load = os.getloadavg()
                seconds, tops = timed(fn, queries)
                settings[setting] = {"seconds": seconds, "top": tops, "load": [load, os.getloadavg()]}
            results[name] = {"build_s": build_s, "size_bytes": size, "rss_kib": vm_hwm_kib(), "settings": settings}
        except Exception as exc:  # one peer's failure must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[peers] {name}: {results[name].get('error', 'done')}", file=sys.stderr, flush=True)
        Path(out_path).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
