"""search-scale data: the real SPLADE rows of the built-in corpus, the synthetic corpus drawn from them, the index
builds (in a child process, for their peak RSS) and the dense vectors, all cached in <bench cache>/search-scale.

`python -m bench.search_scale_data build real|synthetic REAL.npz|SHARD_DIR OUT_DIR` is the build child.
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

from bench.context import SPARSE_MODEL, BenchContext, hash_sample

SEED = 17
BATCH_ROWS = 10_000  # rows per synthetic shard (the pipeline's Parquet shards are smaller still)
REPO = Path(__file__).resolve().parents[1]


def real_data(ctx: BenchContext) -> Path:
    """Real chunk rows and queries as one .npz in the cache (encoded once per artifact)."""
    from neuronforge.artifacts import stable_hash
    from neuronforge.backends import load_encoder
    from neuronforge.corpus import load_qrels, load_queries
    from neuronforge.sparse_index import to_csr

    artifact = ctx.artifact(SPARSE_MODEL)
    encoder = load_encoder(artifact)
    queries = hash_sample(list(load_queries(ctx.corpus_dir).items()), ctx.sizes.scale_queries, key=lambda q: q[0])
    key = stable_hash([encoder.manifest["compile_key"], len(ctx.documents), [q for q, _ in queries]], 12)
    path = ctx.cache_dir / "search-scale" / f"real-{key}.npz"
    if path.is_file():
        return path
    with ctx.setup("search-scale: SPLADE-encode the built-in corpus and queries"):
        chunks = ctx.chunks(encoder.tokenizer, encoder.sequence_length)
        matrix = to_csr(encoder.encode([c.input_text for c in chunks], truncate=False), encoder.max_active_dims)
        qmatrix = to_csr(encoder.encode([text for _, text in queries]))
    qrels = load_qrels(ctx.corpus_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        indptr=matrix.indptr,
        indices=matrix.indices,
        data=matrix.data,
        shape=np.array(matrix.shape),
        chunk_ids=np.array([c.id for c in chunks]),
        chunk_docs=np.array([c.doc_id for c in chunks]),
        q_indptr=qmatrix.indptr,
        q_terms=qmatrix.indices,
        q_weights=qmatrix.data,
        query_ids=np.array([q for q, _ in queries]),
        qrels=np.array(json.dumps(qrels)),
    )
    os.replace(tmp, path)
    return path


def real_matrix(path: Path):
    import scipy.sparse as sp

    z = np.load(path)
    return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"])), z


def synthetic_rows(real, lo: int, n: int, seed: int):
    """Rows lo .. lo+n of the synthetic corpus (deterministic per batch): see the module docstring."""
    import scipy.sparse as sp

    vocab = real.shape[1]
    csc = real.tocsc()
    df = np.diff(csc.indptr)
    cdf = np.cumsum(df) / df.sum()
    cdf[-1] = 1.0
    active = np.diff(real.indptr)
    active = active[active > 0]
    rng = np.random.default_rng([seed, lo])
    counts = rng.choice(active, size=n)
    draws = (counts * 1.3).astype(np.int64) + 8  # extra draws make up for repeats of frequent terms
    row_of = np.repeat(np.arange(n, dtype=np.int64), draws)
    terms = np.minimum(np.searchsorted(cdf, rng.random(row_of.size), side="right"), vocab - 1)
    pairs = np.unique(row_of * vocab + terms)
    r, t = pairs // vocab, pairs % vocab
    order = np.lexsort((rng.random(pairs.size), r))  # a random subset of each row's distinct terms ...
    starts = np.searchsorted(r[order], np.arange(n))
    rank = np.arange(pairs.size) - starts[r[order]]
    keep = np.sort(order[rank < counts[r[order]]])  # ... of the drawn size, back in (row, term) order
    r, t = r[keep], t[keep]
    weights = csc.data[csc.indptr[t] + (rng.random(t.size) * df[t]).astype(np.int64)]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))])
    return sp.csr_matrix((weights.astype(np.float32), t, indptr), shape=(n, vocab))


def synthetic_shards(ctx: BenchContext, real_path: Path, n_docs: int) -> Path:
    """The synthetic corpus as CSR .npz shards of BATCH_ROWS documents (what the index build streams over, as the
    sparse_index asset streams over Parquet shards), generated once into the cache."""
    import scipy.sparse as sp

    folder = ctx.cache_dir / "search-scale" / f"{real_path.stem}-shards-{n_docs}-s{SEED}"
    if (folder / "complete").is_file():
        return folder
    real, _ = real_matrix(real_path)
    folder.mkdir(parents=True, exist_ok=True)
    with ctx.setup(f"search-scale: generate {n_docs} synthetic documents"):
        for lo in range(0, n_docs, BATCH_ROWS):
            rows = synthetic_rows(real, lo, min(BATCH_ROWS, n_docs - lo), SEED)
            sp.save_npz(folder / f"shard-{lo:09d}.npz", rows, compressed=False)
        (folder / "complete").write_text(str(n_docs))
    return folder


def build_worker(source: str, input_path: str, out: str) -> dict[str, Any]:
    """The child process: write one index streaming, report seconds and memory (VmHWM: its high-water mark)."""
    import scipy.sparse as sp

    from bench.scaling import vm_kib
    from neuronforge.sparse_build import csr_batches, write_index

    if source == "real":
        real, _ = real_matrix(Path(input_path))
        vocab = real.shape[1]
        batches = csr_batches(real, [str(i) for i in range(real.shape[0])], BATCH_ROWS)
    else:
        shards = sorted(Path(input_path).glob("shard-*.npz"))
        vocab = sp.load_npz(shards[0]).shape[1]

        def batches():
            for shard in shards:
                rows = sp.load_npz(shard)
                lo = int(shard.stem.split("-")[1])
                yield rows, [str(i) for i in range(lo, lo + rows.shape[0])]

    started_kib = vm_kib("VmRSS")
    started = time.perf_counter()
    write_index(Path(out), batches, vocab, {"source": source, "seed": SEED})
    return {
        "seconds": time.perf_counter() - started,
        "rss_start_kib": started_kib,
        "vm_hwm_kib": vm_kib("VmHWM"),
        "size_bytes": sum(p.stat().st_size for p in Path(out).iterdir()),
    }


def built_index(ctx: BenchContext, real_path: Path, source: str, n_docs: int) -> tuple[Path, dict[str, Any]]:
    folder = ctx.cache_dir / "search-scale" / f"{real_path.stem}-{source}-{n_docs}-s{SEED}"
    report = folder.with_name(folder.name + ".build.json")
    if (folder / "meta.json").is_file() and report.is_file():
        return folder, json.loads(report.read_text()) | {"cached": True}
    source_path = real_path if source == "real" else synthetic_shards(ctx, real_path, n_docs)
    with ctx.setup(f"search-scale: build {source} index ({n_docs} docs)"):
        args = [sys.executable, "-m", "bench.search_scale_data", "build", source, str(source_path), str(folder)]
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"index build failed ({source}, {n_docs}): {done.stderr[-2000:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    report.write_text(json.dumps(info))
    return folder, info | {"cached": False}


def dense_matrix(ctx: BenchContext, n_rows: int, dim: int = 384) -> np.ndarray:
    """n_rows unit vectors (seeded normal), written once in blocks to a .npy in the cache and memory-mapped."""
    path = ctx.cache_dir / "search-scale" / f"dense-{n_rows}x{dim}-s{SEED}.npy"
    if not path.is_file():
        with ctx.setup(f"search-scale: write {n_rows} x {dim} dense vectors"):
            tmp = path.with_suffix(".tmp.npy")
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_rows, dim))
            for lo in range(0, n_rows, 65_536):
                block = np.random.default_rng([SEED, lo]).standard_normal((min(65_536, n_rows - lo), dim))
                out[lo : lo + block.shape[0]] = block / np.linalg.norm(block, axis=1, keepdims=True)
            out.flush()
            del out
            os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


if __name__ == "__main__":
    if sys.argv[1:2] != ["build"] or len(sys.argv) != 5:
        sys.exit("usage: python -m bench.search_scale_data build real|synthetic REAL.npz|SHARD_DIR OUT_DIR")
    print(json.dumps(build_worker(*sys.argv[2:5])))
