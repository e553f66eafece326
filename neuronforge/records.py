"""Stage records: one JSON record per stage output, keyed by what produced it.

Every stage (source model, export, corpus, embeddings, sparse index, evaluations, publish) writes one record when it
finishes: what it produced (paths, counts) and from what (the compile key, the corpus fingerprint, the upstream record
keys). The record's key names those inputs, so the same inputs always lead to the same record, and two runs that
produce different outputs of one stage at the same time (two corpora, two compile keys) never overwrite each other:

    records/<stage>/<name>/<key>.json   the record (written atomically; rewritten only by a run with the same inputs)
    records/<stage>/<name>/current.json {"key": ...}: the last finished run's record, for readers without a run

A partitioned stage (the corpus stages, one output per corpus partition) keeps each partition's records under its own
name, `<name>/<partition>` (`partition_name`), so every partition has its own `current` and partitions built by
different runs (or pods) at once never overwrite each other's pointer.

A Dagster materialization names its record (metadata `record_key`, and the key is its data version). Downstream steps
and checks read the record their upstream materialization names — a check always judges the output of its own run —
while the search CLI and the sensors, which have no run to follow, read `current`. Both go through this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuronforge.artifacts import write_json_atomic

RECORDS_DIR = "records"
CURRENT = "current"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PARTITION = re.compile(r"\d+-of-\d+")  # neuronforge.partitions keys


def partition_name(name: str, partition: str | None) -> str:
    """The record name of one partition of a stage output (`<name>/<partition>`); `name` itself when unpartitioned."""
    if partition is None:
        return name
    if not _PARTITION.fullmatch(partition):
        raise ValueError(f"invalid partition key {partition!r}: corpus partition keys look like '1-of-4'")
    return f"{name}/{partition}"


def split_partition(name: str) -> tuple[str, str | None]:
    """(name, partition) of a record name; partition None for an unpartitioned output."""
    base, _, last = name.rpartition("/")
    return (base, last) if base and _PARTITION.fullmatch(last) else (name, None)


class RecordMissingError(LookupError):
    """A stage has no record (yet) for the requested output; the message names the asset to materialize."""


def asset_name(stage: str, name: str) -> str:
    """The Dagster asset a stage output belongs to: `<model>/<stage>`, or the stage alone for shared stages (a
    partition's record name gives its asset's name)."""
    name = split_partition(name)[0]
    return stage if name == "default" else f"{name}/{stage}"


@dataclass(frozen=True)
class StageRecord:
    stage: str
    name: str  # the model (or corpus) the output belongs to; "default" for the shared stages; + "/<partition>"
    key: str  # what produced it
    data: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, item: str) -> Any:
        return self.data[item]

    def get(self, item: str, default: Any = None) -> Any:
        return self.data.get(item, default)

    def path_of(self, item: str) -> Path:
        """A path field of the record (records store paths as strings)."""
        return Path(self.data[item])

    @property
    def partition(self) -> str | None:
        """The corpus partition the output covers (None: the whole corpus, or an unpartitioned stage)."""
        return split_partition(self.name)[1]


class RecordStore:
    """Stage records under a data directory (NEURONFORGE_HOME)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def _folder(self, stage: str, name: str) -> Path:
        for part in (stage, *name.split("/")):
            if not _PART.fullmatch(part):
                raise ValueError(f"invalid record stage/name part {part!r}")
        return self.root / RECORDS_DIR / stage / name

    def _file(self, stage: str, name: str, key: str) -> Path:
        if not _KEY.fullmatch(key) or key == CURRENT:
            raise ValueError(f"invalid record key {key!r}: use letters, digits, '.', '_' and '-'")
        return self._folder(stage, name) / f"{key}.json"

    def write(self, stage: str, name: str, key: str, data: Mapping[str, Any], *, current: bool = True) -> StageRecord:
        """Write the record (atomically), then make it the stage's current one."""
        path = self._file(stage, name, key)
        write_json_atomic(path, {"stage": stage, "name": name, "key": key, "data": dict(data)})
        if current:
            write_json_atomic(self._folder(stage, name) / f"{CURRENT}.json", {"key": key})
        return StageRecord(stage, name, key, dict(data), path)

    def read(self, stage: str, name: str, key: str) -> StageRecord:
        path = self._file(stage, name, key)
        if not path.is_file():
            raise RecordMissingError(
                f"no {stage} record {key} for {name!r} under {self.root}: the output it names is gone (data "
                f"directory cleaned or moved?); materialize {asset_name(stage, name)} again"
            )
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RecordMissingError(
                f"{path} is unreadable ({exc}); materialize {asset_name(stage, name)} again"
            ) from exc
        return StageRecord(stage, name, key, raw.get("data", {}), path)

    def current(self, stage: str, name: str) -> StageRecord:
        """The record of the stage's last finished run."""
        pointer = self._folder(stage, name) / f"{CURRENT}.json"
        if not pointer.is_file():
            raise RecordMissingError(
                f"no {stage} output for {name!r} under {self.root}; materialize {asset_name(stage, name)} first "
                "(`make run` materializes everything)"
            )
        return self.read(stage, name, json.loads(pointer.read_text())["key"])

    def current_or_none(self, stage: str, name: str) -> StageRecord | None:
        try:
            return self.current(stage, name)
        except RecordMissingError:
            return None

    def names(self, stage: str) -> list[str]:
        """Names (models) that have a current record of `stage`, sorted."""
        folder = self.root / RECORDS_DIR / stage
        if not folder.is_dir():
            return []
        return sorted(p.parent.relative_to(folder).as_posix() for p in folder.rglob(f"{CURRENT}.json"))
