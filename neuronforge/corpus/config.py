"""The corpus configuration: one file every entry point reads, so a user's corpus is configured once.

`corpus.yaml` at the repository root (documented there) holds where the corpus comes from and how it is read,
chunked, judged and fused. The default job (`make run`), the UI launchpad's default, the nightly schedule and
`corpus_sensor` all get their `CorpusResource` from it; the search CLI reads its fusion settings.

`NEURONFORGE_CORPUS` overrides it for one shell or deployment:
- a `.yaml` / `.yml` file: that file replaces corpus.yaml;
- anything else: the corpus source itself (a BEIR folder, a .jsonl/.parquet file, a folder of .txt/.md files, or
  `builtin`), with corpus.yaml's other settings.

A relative `source:` in a file is relative to that file's folder; a relative NEURONFORGE_CORPUS to the working
directory. Errors name the file, the field and the fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuronforge.partitions import DEFAULT_PARTITIONS, MAX_PARTITIONS
from neuronforge.paths import REPO_ROOT

__all__ = [
    "BUILTIN_SOURCE",
    "CORPUS_ENV",
    "DEFAULT_CORPUS_FILE",
    "DEFAULT_RRF_K",
    "CorpusConfig",
    "CorpusConfigError",
    "corpus_config_path",
    "load_corpus_config",
]

DEFAULT_CORPUS_FILE = REPO_ROOT / "corpus.yaml"
CORPUS_ENV = "NEURONFORGE_CORPUS"
BUILTIN_SOURCE = "builtin"
# Chosen by the sweep on the built-in corpus recorded in docs/retrieval_defaults.md (rrf_k, then the weights).
DEFAULT_RRF_K = 10
DEFAULT_RRF_WEIGHTS: dict[str, float] = {"dense": 0.6, "sparse": 0.4}
BAD_INPUT_MODES = ("skip", "fail")


class CorpusConfigError(ValueError):
    """The corpus configuration is invalid; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class CorpusConfig:
    """Validated corpus settings (the fields of `CorpusResource`)."""

    source: str | None = None  # absolute path, or None for the built-in stdlib corpus
    min_body_chars: int = 200
    bad_input: str = "skip"
    max_doc_bytes: int = 1_000_000
    chunk_overlap: int = 16
    shard_chunks: int = 512
    partitions: int = DEFAULT_PARTITIONS
    ndcg_floor: float = 0.3
    rrf_k: int = DEFAULT_RRF_K
    rrf_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RRF_WEIGHTS))
    origin: str = "defaults"  # where it came from (file and/or NEURONFORGE_CORPUS), for messages and metadata

    def resource_fields(self) -> dict[str, Any]:
        """Keyword arguments of `CorpusResource` (everything but `origin`)."""
        data = asdict(self)
        data.pop("origin")
        return data


def corpus_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The configuration file in effect: a .yaml NEURONFORGE_CORPUS, else corpus.yaml at the repository root."""
    value = (environ if environ is not None else os.environ).get(CORPUS_ENV, "").strip()
    if value and _is_config_file(value):
        return Path(value).expanduser().resolve()
    return DEFAULT_CORPUS_FILE


def _is_config_file(value: str) -> bool:
    return Path(value).suffix.lower() in (".yaml", ".yml")


def load_corpus_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> CorpusConfig:
    """Read and validate the corpus configuration (see the module docstring for where it comes from).

    A missing default corpus.yaml means the defaults (the built-in corpus); a missing file named explicitly is an
    error.
    """
    environ = environ if environ is not None else os.environ
    env_value = environ.get(CORPUS_ENV, "").strip()
    explicit = path is not None or (env_value and _is_config_file(env_value))
    path = Path(path).expanduser().resolve() if path is not None else corpus_config_path(environ)
    raw: dict[str, Any] = {}
    origin = str(path)
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CorpusConfigError(f"{path}: is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise CorpusConfigError(f"{path}: must be a mapping of settings (source: ..., bad_input: ...)")
        raw = dict(loaded or {})
    elif explicit:
        where = f" ({CORPUS_ENV}={env_value})" if env_value and path == Path(env_value).expanduser().resolve() else ""
        raise CorpusConfigError(f"{path}{where}: corpus configuration not found; create it (see corpus.yaml)")
    else:
        origin = "defaults (no corpus.yaml)"
    config = _parse(path, raw, origin)
    if env_value and not _is_config_file(env_value):
        source = _resolve_source(env_value, Path.cwd())
        config = CorpusConfig(**{**config.resource_fields(), "source": source, "origin": f"{origin} + {CORPUS_ENV}"})
    return config


def _fail(path: Path, fld: str, problem: str) -> CorpusConfigError:
    return CorpusConfigError(f"{path}: field {fld!r}: {problem}")


def _resolve_source(value: str, base: Path) -> str | None:
    # Existence is checked when a run or a sensor tick reads the source (CorpusResource.source_path): a corpus on a
    # drive that is away for a moment must not take the whole code location down.
    if value.strip().lower() == BUILTIN_SOURCE:
        return None
    source = Path(value).expanduser()
    return str((source if source.is_absolute() else base / source).resolve())


def _int(path: Path, fld: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, fld, f"must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise _fail(path, fld, f"must be an integer <= {maximum}, got {value!r}")
    return value


def _number(path: Path, fld: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, fld, f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise _fail(path, fld, f"must be between {low} and {high}, got {value!r}")
    return float(value)


def _parse(path: Path, raw: dict[str, Any], origin: str) -> CorpusConfig:
    defaults = CorpusConfig()
    known = set(defaults.resource_fields())
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(path, unknown[0], f"is not a known setting (known: {', '.join(sorted(known))})")
    source = raw.get("source")
    if source is not None and not isinstance(source, str):
        raise _fail(path, "source", f"must be a path (or {BUILTIN_SOURCE!r}), got {source!r}")
    bad_input = raw.get("bad_input", defaults.bad_input)
    if bad_input not in BAD_INPUT_MODES:
        raise _fail(path, "bad_input", f"unknown value {bad_input!r}; use one of {', '.join(BAD_INPUT_MODES)}")
    weights = raw.get("rrf_weights", defaults.rrf_weights)
    if not isinstance(weights, dict) or not weights:
        raise _fail(path, "rrf_weights", f"must map 'dense', 'sparse' or a model name to a weight, got {weights!r}")
    return CorpusConfig(
        source=_resolve_source(source, path.parent) if source else None,
        min_body_chars=_int(path, "min_body_chars", raw.get("min_body_chars", defaults.min_body_chars), 0),
        bad_input=bad_input,
        max_doc_bytes=_int(path, "max_doc_bytes", raw.get("max_doc_bytes", defaults.max_doc_bytes), 1),
        chunk_overlap=_int(path, "chunk_overlap", raw.get("chunk_overlap", defaults.chunk_overlap), 0),
        shard_chunks=_int(path, "shard_chunks", raw.get("shard_chunks", defaults.shard_chunks), 1),
        partitions=_int(path, "partitions", raw.get("partitions", defaults.partitions), 1, MAX_PARTITIONS),
        ndcg_floor=_number(path, "ndcg_floor", raw.get("ndcg_floor", defaults.ndcg_floor), 0.0, 1.0),
        rrf_k=_int(path, "rrf_k", raw.get("rrf_k", defaults.rrf_k), 0),
        rrf_weights={
            str(name): _number(path, f"rrf_weights.{name}", weight, 0.0, 100.0) for name, weight in weights.items()
        },
        origin=origin,
    )
