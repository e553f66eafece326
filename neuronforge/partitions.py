"""Corpus partitions: a fixed number of hash buckets of the document id, and exact search across them.

A document belongs to bucket `blake2b(id) mod n` (`bucket_of`). That is
- stable: editing a document, or adding and removing others, never moves it to another bucket;
- balanced: a uniform hash spreads any set of ids evenly (each bucket holds about 1/n of the documents);
- local: the id alone decides, so each partition is planned, encoded and indexed without reading the others' output
  (on a fleet, one run or pod per partition).
`n` is `partitions` in corpus.yaml (default DEFAULT_PARTITIONS). A partition key names its bucket and the count,
"1-of-4", so a key always says which documents it holds: changing `partitions` gives a new set of keys (and a full
re-encode) instead of reinterpreting old outputs.

Searching every partition as one gives the same results as one index over the whole corpus, ties included, because
the order of results does not depend on how the corpus was cut: by score descending, then document id ascending
(code point order, as reciprocal rank fusion already orders ties). Sparse: each partition's index is a segment of a
`SegmentedIndex`, whose merge is exact; `top_k_by_id` re-orders its ties by id, fetching more while the k-th score's
tie may reach past what was fetched. Dense: `rows_by_id` puts the partitions' rows in (document id, chunk) order, so
the matrix searched is the same matrix however it was partitioned.

Plain Python and numpy: no Dagster, no index code imported here (the index is duck-typed).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

__all__ = [
    "DEFAULT_PARTITIONS",
    "MAX_PARTITIONS",
    "Partition",
    "PartitionError",
    "bucket_of",
    "bucket_sizes",
    "partition_keys",
    "rows_by_id",
    "top_k_by_id",
]

DEFAULT_PARTITIONS = 4
MAX_PARTITIONS = 1024  # a key per partition in Dagster's UI and one record each: beyond this, use fewer, larger ones
_KEY = re.compile(r"(\d+)-of-(\d+)")

T = TypeVar("T")


class PartitionError(ValueError):
    """A partition key or count that is not valid; the message says what is expected."""


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PARTITIONS:
        raise PartitionError(f"the partition count must be an integer from 1 to {MAX_PARTITIONS}, got {count!r}")
    return count


def bucket_of(doc_id: str, count: int) -> int:
    """The bucket (0 .. count-1) of a document id: blake2b of its UTF-8 bytes, modulo `count`."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _check_count(count)


@dataclass(frozen=True)
class Partition:
    """Bucket `index` of `count`: the documents whose id hashes there."""

    index: int
    count: int

    def __post_init__(self) -> None:
        _check_count(self.count)
        if not 0 <= self.index < self.count:
            raise PartitionError(f"partition index {self.index} is outside 0..{self.count - 1}")

    @property
    def key(self) -> str:
        return f"{self.index}-of-{self.count}"

    @classmethod
    def parse(cls, key: str) -> Partition:
        """The partition a key ("1-of-4") names."""
        match = _KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            raise PartitionError(f"{key!r} is not a corpus partition key; keys look like '1-of-4' (bucket 1 of 4)")
        return cls(int(match.group(1)), int(match.group(2)))

    def contains(self, doc_id: str) -> bool:
        return bucket_of(doc_id, self.count) == self.index

    def select(self, docs: Iterable[T], id_of: Any = lambda doc: doc.id) -> Iterator[T]:
        """The items of `docs` (documents, or anything `id_of` gives a document id for) in this partition, in order."""
        return (doc for doc in docs if self.contains(id_of(doc)))


def partition_keys(count: int) -> list[str]:
    """Every partition key of a corpus split `count` ways, in bucket order."""
    return [Partition(i, count).key for i in range(_check_count(count))]


def bucket_sizes(doc_ids: Iterable[str], count: int) -> list[int]:
    """How many of `doc_ids` fall in each bucket (for balance reports and tests)."""
    sizes = [0] * _check_count(count)
    for doc_id in doc_ids:
        sizes[bucket_of(doc_id, count)] += 1
    return sizes


# ------------------------------------------------------------------------------------------------ search across


class _Index(Protocol):  # neuronforge.sparse_index.SegmentedIndex (or SparseIndex with doc_ids)
    def top_k(self, query: Any, k: int = 10, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def doc_id(self, number: int) -> str: ...


def top_k_by_id(index: _Index, query: Any, k: int, threads: int | None = None) -> list[tuple[str, float]]:
    """Exact top-k [(doc id, score)] of an index, ties ordered by document id instead of by index position.

    The index's own top-k is exact in (-score, document number) order; every document tied with the k-th score is
    needed to order that tie by id, so while the last hit fetched still has the k-th score, fetch twice as many.
    Only a tie that long costs more than one search.
    """
    if k <= 0:
        return []
    fetch = k
    while True:
        docs, scores = index.top_k(query, fetch, threads)
        if docs.size < fetch or scores[-1] < scores[k - 1]:
            break
        fetch *= 2
    hits = [(index.doc_id(d), s) for d, s in zip(docs.tolist(), scores.tolist(), strict=True)]
    hits.sort(key=lambda hit: (-hit[1], hit[0]))
    return hits[:k]


def rows_by_id(doc_ids: Sequence[str], chunk_index: Sequence[int]) -> np.ndarray:
    """The permutation that puts chunk rows in (document id, chunk index) order: the same order for the same rows,
    however they were split into partitions and shards."""
    if len(doc_ids) != len(chunk_index):
        raise ValueError(f"{len(doc_ids)} document ids for {len(chunk_index)} chunk indexes")
    if not len(doc_ids):
        return np.empty(0, dtype=np.int64)
    return np.lexsort((np.asarray(chunk_index, dtype=np.int64), np.asarray(doc_ids, dtype=str)))
