"""Garbage collection of the data directory: remove the shards, index folders and records no current record needs.

    neuronforge-gc                  # dry run: lists what would go and how much space it frees
    neuronforge-gc --delete         # removes it

Stages never delete another output themselves (two corpora, two compile keys: each record keeps its own shards, so
switching back costs nothing); this explicit command is how the old ones go. What stays:

- every stage's current record (`records/<stage>/<name>/current.json`), and every record a kept record names (a
  retrieval_eval names the embeddings / index records it scored, an embeddings record its corpus record), transitively;
- every file or folder a kept record names by path (an index folder, an artifact, the built corpus), and exactly the
  shards it lists in its shard folder (`dir` + `shards`);
- anything younger than `--min-age-hours` (default 24): a run that is still encoding has written shards no record
  lists yet.

Candidates are only records (`records/**/<key>.json`), shard files (`stages/**/shard-*.parquet`), index folders
(`stages/**/index-*`) and leftovers of interrupted atomic writes (`stages/**/.*.tmp`, `records/**/.*.tmp`). Artifacts,
the Hub, Dagster's storage and caches are never touched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuronforge.records import CURRENT, RECORDS_DIR

STAGES_DIR = "stages"
DEFAULT_MIN_AGE_HOURS = 24.0


@dataclass(frozen=True)
class Garbage:
    path: Path
    what: str  # record | shard | index | leftover
    bytes: int


@dataclass
class GcPlan:
    root: Path
    kept_records: int = 0
    young: int = 0  # candidates kept because they are newer than the minimum age
    garbage: list[Garbage] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(g.bytes for g in self.garbage)

    def summary(self, deleted: bool) -> str:
        counts: dict[str, int] = {}
        for g in self.garbage:
            counts[g.what] = counts.get(g.what, 0) + 1
        parts = ", ".join(f"{n} {what}{'s' if n != 1 else ''}" for what, n in sorted(counts.items())) or "nothing"
        verb = "removed" if deleted else "would remove"
        tail = "" if deleted or not self.garbage else "; run with --delete to remove them"
        return (
            f"{self.root}: {verb} {parts} ({self.bytes / 2**20:.1f} MiB); kept {self.kept_records} records and what "
            f"they name, and {self.young} newer entries{tail}"
        )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _shard_lists(value: Any) -> Iterator[tuple[str, list[Any]]]:
    """(dir, shards) of every mapping in a record that lists shards in a folder."""
    if isinstance(value, dict):
        if isinstance(value.get("dir"), str) and isinstance(value.get("shards"), list):
            yield value["dir"], value["shards"]
        for item in value.values():
            yield from _shard_lists(item)
    elif isinstance(value, list):
        for item in value:
            yield from _shard_lists(item)


def _shard_name(entry: Any) -> str | None:
    # A shard list entry is a file name, or a mapping naming it (with its checksum and row count).
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return entry["name"]
    return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def plan_gc(root: Path, *, min_age_hours: float = DEFAULT_MIN_AGE_HOURS, now: float | None = None) -> GcPlan:
    """What `neuronforge-gc` would remove under the data directory `root` (nothing is changed)."""
    root = Path(root).resolve()
    plan = GcPlan(root)
    cutoff = (time.time() if now is None else now) - min_age_hours * 3600
    records_dir = root / RECORDS_DIR

    # Every record file, by key; the current ones are the roots of what is needed.
    records: dict[Path, dict[str, Any] | None] = {}
    by_key: dict[str, list[Path]] = {}
    roots: list[Path] = []
    for path in sorted(records_dir.rglob("*.json")) if records_dir.is_dir() else []:
        if path.name.startswith("."):
            continue
        if path.stem == CURRENT:
            pointer = _read(path)
            if pointer and isinstance(pointer.get("key"), str):
                roots.append(path.with_name(f"{pointer['key']}.json"))
            continue
        records[path] = _read(path)
        by_key.setdefault(path.stem, []).append(path)

    kept: set[Path] = set()
    pending = [p for p in roots if p in records]
    while pending:
        path = pending.pop()
        if path in kept:
            continue
        kept.add(path)
        for text in _strings((records[path] or {}).get("data", {})):
            pending.extend(by_key.get(text, ()))
    plan.kept_records = len(kept)

    needed_files: set[Path] = set()
    needed_trees: list[Path] = []
    for path in kept:
        data = (records[path] or {}).get("data", {})
        shard_dirs = set()
        for folder, shards in _shard_lists(data):
            shard_dirs.add(str(Path(folder).resolve()))
            needed_files.update(Path(folder).resolve() / n for n in map(_shard_name, shards) if n)
        for text in _strings(data):
            if text.startswith("/") and text not in shard_dirs:
                candidate = Path(text).resolve()
                if candidate == root or root not in candidate.parents:
                    continue  # outside the data directory, or all of it: never a reason to keep a candidate
                needed_trees.append(candidate)

    def needed(path: Path) -> bool:
        if path in needed_files:
            return True
        # A folder is needed when a record names it, something inside it, or a folder that holds it.
        return any(path == t or t in path.parents or path in t.parents for t in needed_trees) or any(
            path in f.parents for f in needed_files
        )

    def consider(path: Path, what: str) -> None:
        if needed(path):
            return
        try:
            if path.stat().st_mtime > cutoff or (path.is_dir() and _newest(path) > cutoff):
                plan.young += 1
                return
            plan.garbage.append(Garbage(path, what, _size(path)))
        except FileNotFoundError:
            pass  # removed meanwhile

    for path in sorted(records):
        if path not in kept:
            consider(path, "record")
    stages = root / STAGES_DIR
    if stages.is_dir():
        for path in sorted(stages.rglob("shard-*.parquet")):
            consider(path, "shard")
        for path in sorted(p for p in stages.rglob("index-*") if p.is_dir()):
            consider(path, "index")
    for top in (stages, records_dir):
        for path in sorted(top.rglob(".*.tmp")) if top.is_dir() else []:
            consider(path, "leftover")
    return plan


def _newest(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)


def collect(plan: GcPlan) -> None:
    """Remove what `plan` lists (files and folders; already-gone entries are fine)."""
    for item in plan.garbage:
        if item.path.is_dir():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuronforge-gc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="default: NEURONFORGE_HOME or ./.neuronforge")
    parser.add_argument("--delete", action="store_true", help="remove what is listed (default: dry run)")
    parser.add_argument(
        "--min-age-hours",
        type=float,
        default=DEFAULT_MIN_AGE_HOURS,
        help=f"keep anything newer than this (default {DEFAULT_MIN_AGE_HOURS:g}: runs in progress)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    if args.min_age_hours < 0:
        parser.error(f"--min-age-hours must be >= 0, got {args.min_age_hours}")
    from neuronforge.paths import data_dir

    root = args.data_dir or data_dir()
    if not Path(root).is_dir():
        print(f"neuronforge-gc: {root} is not a directory", file=sys.stderr)
        return 2
    plan = plan_gc(root, min_age_hours=args.min_age_hours)
    if args.delete:
        collect(plan)
    if args.json:
        entries = [{"path": str(g.path), "what": g.what, "bytes": g.bytes} for g in plan.garbage]
        print(json.dumps({"deleted": args.delete, "garbage": entries, "bytes": plan.bytes}, indent=2))
    else:
        for g in plan.garbage:
            print(f"{'removed' if args.delete else 'would remove'} {g.what:8} {g.bytes / 2**20:9.2f} MiB  {g.path}")
    print(plan.summary(args.delete), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
