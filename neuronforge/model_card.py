"""Model cards for published artifacts: Hub metadata (YAML front matter) plus a page a person can act on.

The card is a pure function of the artifact manifest and what the publishing run passes in (the Hub endpoint, the
measured evidence, notes): no dates or hostnames of its own, so republishing the same artifact with the same evidence
produces a byte-identical README.md and the Hub skips it like every other unchanged file.

Structure (top to bottom): front matter (library_name, tags, base_model, model-index, a `neuronforge` block) · title
and summary · notes · Usage (one subsection per snippet, from the `SNIPPETS` table: add a backend's snippets as a
function there) · Evaluation · Shapes · Build.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from neuronforge import card_snippets as cpu
from neuronforge import neuron_card as neuron
from neuronforge.card_evaluation import CardEvidence, evaluation_markdown, model_index
from neuronforge.card_snippets import Snippet, Where

_PIPELINE_BY_KIND = {"dense": "sentence-similarity", "sparse": "feature-extraction", "chat": "text-generation"}
_KIND_LABEL = {"dense": "dense text embedding", "sparse": "sparse (SPLADE) text embedding", "chat": "chat"}
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
# Keys of `extra` that are card content, not front matter.
_BODY_KEYS = frozenset({"sections", "evidence", "notes"})

SnippetFunction = Callable[[Mapping[str, Any], Where], list[Snippet]]
# (backend, kind) → the functions that write its Usage snippets.
SNIPPETS: dict[tuple[str, str], SnippetFunction] = {
    ("onnx", "dense"): cpu.onnx_dense,
    ("onnx", "sparse"): cpu.onnx_sparse,
    ("torch", "dense"): cpu.torch_encoder,
    ("torch", "sparse"): cpu.torch_encoder,
    ("torch", "chat"): cpu.torch_chat,
    ("neuron", "dense"): neuron.dense,
    ("neuron", "sparse"): neuron.sparse,
    ("neuron", "chat"): neuron.chat,
}


def library_name(manifest: Mapping[str, Any]) -> str:
    """The library that loads the repo (the Hub's "Use this model" button follows it)."""
    if cpu.is_sentence_transformers_folder(manifest) or (
        manifest["backend"] == "neuron" and manifest.get("kind") in ("dense", "sparse")
    ):
        return "sentence-transformers"
    if manifest["backend"] == "onnx":
        return "onnx"  # a bare graph (artifacts from before the sentence-transformers layout)
    return "transformers"


def card_tags(manifest: Mapping[str, Any]) -> list[str]:
    kind, backend = manifest.get("kind", "dense"), manifest["backend"]
    fmt = str(manifest.get("format", backend))
    tags = ["neuronforge", backend, kind]
    if backend == "neuron":
        tags += ["neuron", "inferentia2"]
    if backend == "onnx" or fmt.startswith("onnx"):
        tags.append("onnx")
    if fmt.endswith("int8"):
        tags.append("int8")
    if kind == "sparse":
        tags += ["splade", "sparse-encoder"]
    return list(dict.fromkeys(tags))


def card_metadata(
    manifest: Mapping[str, Any], *, extra: Mapping[str, Any] | None = None, model_name: str | None = None
) -> dict[str, Any]:
    """The Hub metadata block: library_name, tags, base_model, pipeline_tag, model-index and a `neuronforge` block.

    `extra` adds front-matter keys (tags are appended, mappings merged); its `evidence` (CardEvidence) becomes the
    model-index."""
    extra = extra or {}
    kind = manifest.get("kind", "dense")
    meta: dict[str, Any] = {
        "library_name": library_name(manifest),
        "pipeline_tag": _PIPELINE_BY_KIND.get(kind, "feature-extraction"),
        "tags": card_tags(manifest),
    }
    base_model = (manifest.get("source") or {}).get("base_model")
    # The Hub validates base_model as a repo id; builtin sources without a Hub counterpart are left out.
    if isinstance(base_model, str) and _REPO_ID_RE.fullmatch(base_model):
        meta["base_model"] = base_model
    evidence: CardEvidence | None = extra.get("evidence")
    if evidence is not None and evidence.evaluations:
        meta["model-index"] = model_index(model_name or manifest["model"], evidence.evaluations)
    meta["neuronforge"] = {
        "compile_key": manifest["compile_key"],
        "model": manifest["model"],
        "kind": kind,
        "backend": manifest["backend"],
        "format": manifest.get("format", manifest["backend"]),
        "shapes": dict(manifest.get("shapes") or {}),
        "static_shapes": manifest["backend"] == "neuron",
        "options": dict(manifest.get("options") or {}),
        "toolchain": dict(manifest.get("toolchain") or {}),
        "source": dict(manifest.get("source") or {}),
    }
    for key, value in extra.items():
        if key in _BODY_KEYS:
            continue
        if key == "tags":
            meta["tags"] = list(dict.fromkeys([*meta["tags"], *value]))
        elif isinstance(value, Mapping) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    return meta


def usage_snippets(
    manifest: Mapping[str, Any], *, repo_id: str, tag: str, endpoint: str | None = None
) -> list[Snippet]:
    """The Usage snippets of this artifact (empty for a (backend, kind) no backend produces)."""
    function = SNIPPETS.get((str(manifest["backend"]), str(manifest.get("kind", "dense"))))
    return function(manifest, Where(repo_id, tag, endpoint)) if function else []


def usage_snippet(manifest: Mapping[str, Any], *, repo_id: str, tag: str, endpoint: str | None = None) -> str:
    """Every Usage snippet's code, one after the other (itself valid Python)."""
    return "\n\n".join(s.code for s in usage_snippets(manifest, repo_id=repo_id, tag=tag, endpoint=endpoint))


def shapes_markdown(manifest: Mapping[str, Any]) -> list[str]:
    """What the shapes mean for this backend: static only where the compiled graph really is."""
    shapes = dict(manifest.get("shapes") or {})
    batch, seq = shapes.get("batch_size", "?"), shapes.get("sequence_length", "?")
    backend, kind = manifest["backend"], manifest.get("kind", "dense")
    if backend == "neuron":
        text = "Compiled for exactly these shapes: pad every input to them (the compiled graph accepts no others)."
    elif backend == "onnx":
        text = (
            "The ONNX graph has symbolic batch and sequence axes: it accepts any batch size and any length up to the "
            f"model's position limit. neuronforge runs it in batches of at most {batch} × {seq} tokens (the shapes a "
            "Neuron build of this model is compiled for) and its evaluation used those."
        )
    elif kind == "chat":
        text = f"Any shape the model supports; neuronforge evaluated it with at most {seq} tokens of prompt + reply."
    else:
        text = f"Any shape the model supports; neuronforge ran it in batches of at most {batch} × {seq} tokens."
    return [text, "", "| dimension | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in shapes.items()]]


def render_model_card(
    manifest: Mapping[str, Any],
    *,
    repo_id: str,
    model_name: str,
    tag: str,
    endpoint: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """README.md for a published artifact.

    `endpoint` is the Hub the repo is published to (snippets set HF_ENDPOINT unless it is huggingface.co). `extra`
    adds front-matter keys (see card_metadata) and card content: `evidence` (a CardEvidence: the Evaluation section
    and model-index), `notes` (sentences a reader must see before using the build, shown under the title) and
    `sections` (title -> markdown, appended).
    """
    extra = extra or {}
    meta = card_metadata(manifest, extra=extra, model_name=model_name)
    block = meta["neuronforge"]
    source = block["source"]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    lines = [
        "---",
        front.rstrip("\n"),
        "---",
        "",
        f"# {model_name} — {block['backend']} ({block['format']})",
        "",
        f"A {_KIND_LABEL.get(block['kind'], block['kind'])} model exported by neuronforge for the **{block['backend']}** "
        f"backend. Source: `{source.get('id', 'unknown')}` at revision `{source.get('revision', 'unknown')}`. This "
        f"exact build is tag `{tag}` of this repository.",
        "",
        *[f"> **Note:** {note}\n" for note in extra.get("notes") or ()],
        "## Usage",
        "",
    ]
    for snippet in usage_snippets(manifest, repo_id=repo_id, tag=tag, endpoint=endpoint):
        lines += [f"### {snippet.title}", "", f"`{snippet.install}`", "", "```python", snippet.code, "```", ""]
    evidence: CardEvidence | None = extra.get("evidence")
    if evidence is not None:
        lines += ["## Evaluation", "", "Measured by the neuronforge run that published this build.", ""]
        lines += [evaluation_markdown(evidence), ""]
    lines += ["## Shapes", "", *shapes_markdown(manifest), ""]
    lines += [
        "## Build",
        "",
        "| component | version |",
        "|---|---|",
        *[
            f"| {name} | {value if value is not None else 'not used'} |"
            for name, value in sorted(block["toolchain"].items())
        ],
        f"| compile key | `{block['compile_key']}` |",
        *[f"| option `{name}` | {value} |" for name, value in sorted(block["options"].items()) if value is not None],
        "",
    ]
    for title, body in (extra.get("sections") or {}).items():
        lines += [f"## {title}", "", str(body).strip(), ""]
    return "\n".join(lines)
