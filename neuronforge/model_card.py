"""Model cards for published artifacts: Hub metadata (YAML front matter) plus a page a person can act on.

The card is a pure function of the artifact manifest (and optional extras): no dates or hostnames, so republishing
the same artifact produces a byte-identical README.md and the Hub skips it like every other unchanged file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from neuronforge.neuron_card import neuron_usage_snippet

# library_name decides which "Use this model" snippet and widget the Hub shows.
_LIBRARY_BY_KIND = {"dense": "sentence-transformers", "sparse": "sentence-transformers", "chat": "transformers"}
_PIPELINE_BY_KIND = {"dense": "sentence-similarity", "sparse": "feature-extraction", "chat": "text-generation"}
_KIND_LABEL = {"dense": "dense text embedding", "sparse": "sparse (SPLADE) text embedding", "chat": "chat"}
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def card_metadata(manifest: Mapping[str, Any], *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Hub metadata block: library_name, tags, base_model, pipeline_tag and a `neuronforge` block."""
    kind = manifest.get("kind", "dense")
    backend = manifest["backend"]
    fmt = manifest.get("format", backend)
    options = dict(manifest.get("options") or {})
    tags = ["neuronforge", backend, kind]
    if backend == "neuron":
        tags += ["neuron", "inferentia2"]
    if backend == "onnx" or str(fmt).startswith("onnx"):
        tags.append("onnx")
    if options.get("quantize"):
        tags.append("int8" if "int8" in str(fmt) or options["quantize"] is True else str(options["quantize"]))
    if kind == "sparse":
        tags += ["splade", "sparse-encoder"]
    meta: dict[str, Any] = {
        "library_name": "onnx" if backend == "onnx" else _LIBRARY_BY_KIND.get(kind, "transformers"),
        "pipeline_tag": _PIPELINE_BY_KIND.get(kind, "feature-extraction"),
        "tags": list(dict.fromkeys(tags)),
    }
    base_model = (manifest.get("source") or {}).get("base_model")
    # The Hub validates base_model as a repo id; builtin sources without a Hub counterpart are left out.
    if isinstance(base_model, str) and _REPO_ID_RE.fullmatch(base_model):
        meta["base_model"] = base_model
    meta["neuronforge"] = {
        "compile_key": manifest["compile_key"],
        "model": manifest["model"],
        "kind": kind,
        "backend": backend,
        "format": fmt,
        "static_shapes": dict(manifest.get("shapes") or {}),
        "options": options,
        "toolchain": dict(manifest.get("toolchain") or {}),
        "source": dict(manifest.get("source") or {}),
    }
    for key, value in (extra or {}).items():
        if key == "sections":
            continue
        if key == "tags":
            meta["tags"] = list(dict.fromkeys([*meta["tags"], *value]))
        elif isinstance(value, Mapping) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    return meta


def render_model_card(
    manifest: Mapping[str, Any],
    *,
    repo_id: str,
    model_name: str,
    tag: str,
    extra: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
) -> str:
    """README.md for a published artifact (`endpoint`: the Hub it is published on, named in the snippet if not the
    public one).

    `extra` adds front-matter keys (tags are appended, mappings merged, e.g. `{"datasets": ["scifact"]}`); its
    optional `sections` mapping (title -> markdown) adds body sections such as evaluation results.
    """
    meta = card_metadata(manifest, extra=extra)
    shapes = meta["neuronforge"]["static_shapes"]
    kind = meta["neuronforge"]["kind"]
    backend = meta["neuronforge"]["backend"]
    source = meta["neuronforge"]["source"]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    lines = [
        "---",
        front.rstrip("\n"),
        "---",
        "",
        f"# {model_name} — {backend} ({meta['neuronforge']['format']})",
        "",
        f"A {_KIND_LABEL.get(kind, kind)} model compiled by neuronforge for the **{backend}** "
        f"backend with static shapes. Source: `{source.get('id', 'unknown')}` at revision "
        f"`{source.get('revision', 'unknown')}`. This exact build is tag `{tag}` of this repository.",
        "",
        "## Static shapes",
        "",
        "Inputs must be padded to exactly these shapes (the compiled graph does not accept others):",
        "",
        "| dimension | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in shapes.items()],
        "",
        "## Build",
        "",
        "| component | version |",
        "|---|---|",
        *[
            f"| {name} | {value if value is not None else 'not used'} |"
            for name, value in sorted(meta["neuronforge"]["toolchain"].items())
        ],
        f"| compile key | `{meta['neuronforge']['compile_key']}` |",
        *[
            f"| option `{name}` | {value} |"
            for name, value in sorted(meta["neuronforge"]["options"].items())
            if value is not None
        ],
        "",
        "## Usage",
        "",
        "```python",
        usage_snippet(manifest, repo_id=repo_id, tag=tag, endpoint=endpoint),
        "```",
        "",
    ]
    for title, body in ((extra or {}).get("sections") or {}).items():
        lines += [f"## {title}", "", str(body).strip(), ""]
    return "\n".join(lines)


def usage_snippet(manifest: Mapping[str, Any], *, repo_id: str, tag: str, endpoint: str | None = None) -> str:
    """Python that loads this artifact from the Hub and runs it with the right padding."""
    kind = manifest.get("kind", "dense")
    backend = manifest["backend"]
    shapes = manifest.get("shapes") or {}
    batch, seq = shapes.get("batch_size", 1), shapes.get("sequence_length", 128)
    files = sorted((manifest.get("files") or {}).keys())
    download = f'path = snapshot_download("{repo_id}", revision="{tag}")'
    if backend == "onnx":
        onnx_file = next((f for f in files if f.endswith(".onnx")), "model.onnx")
        folder = onnx_file.rsplit("/", 1)[0] if "/" in onnx_file else ""
        has_tokenizer = any(f.rsplit("/", 1)[-1] in _TOKENIZER_FILES for f in files)
        tokenizer_from = (
            (f'f"{{path}}/{folder}"' if folder else "path") if has_tokenizer else f'"{_source_id(manifest)}"'
        )
        return "\n".join(
            [
                "import numpy as np",
                "import onnxruntime as ort",
                "from huggingface_hub import snapshot_download",
                "from transformers import AutoTokenizer",
                "",
                download,
                f"tokenizer = AutoTokenizer.from_pretrained({tokenizer_from})",
                f'session = ort.InferenceSession(f"{{path}}/{onnx_file}")',
                "",
                'texts = ["The Eiffel Tower is in Paris.", "Inferentia2 runs compiled graphs."]',
                f"# Static shapes: pad every batch to {batch} rows of {seq} tokens, then drop the padding rows.",
                f'enc = tokenizer(texts, padding="max_length", truncation=True, max_length={seq}, return_tensors="np")',
                f"feed = {{k: np.zeros(({batch}, {seq}), dtype=np.int64) for k in enc}}",
                "for k, v in enc.items():",
                "    feed[k][: len(texts)] = v",
                "names = {i.name for i in session.get_inputs()}",
                "outputs = session.run(None, {k: v for k, v in feed.items() if k in names})",
                "result = outputs[0][: len(texts)]  # the graph's first output, padding rows dropped",
            ]
        )
    if backend == "neuron":
        return neuron_usage_snippet(manifest, repo_id=repo_id, tag=tag, endpoint=endpoint)
    # torch / transformers formats load with the usual libraries.
    if kind == "chat":
        return "\n".join(
            [
                "from huggingface_hub import snapshot_download",
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "",
                download,
                "model = AutoModelForCausalLM.from_pretrained(path)",
                "tokenizer = AutoTokenizer.from_pretrained(path)",
                'messages = [{"role": "user", "content": "Hello!"}]',
                'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")',
                "output = model.generate(inputs, max_new_tokens=64)",
                "print(tokenizer.decode(output[0][inputs.shape[-1]:], skip_special_tokens=True))",
            ]
        )
    cls = "SparseEncoder" if kind == "sparse" else "SentenceTransformer"
    return "\n".join(
        [
            "from huggingface_hub import snapshot_download",
            f"from sentence_transformers import {cls}",
            "",
            download,
            f"model = {cls}(path)",
            'embeddings = model.encode(["The Eiffel Tower is in Paris."])',
        ]
    )


def _source_id(manifest: Mapping[str, Any]) -> str:
    source = manifest.get("source") or {}
    base = source.get("base_model")
    return base if isinstance(base, str) and base else str(source.get("id", ""))
