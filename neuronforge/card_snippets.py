"""The "Usage" snippets of a model card: one function per (backend, kind), each returning the ways a user loads it.

Every snippet is complete Python that runs as-is on a user's machine (tests/clients/ executes each one from the
rendered card against the loopback Hub): it loads this exact build (`revision=<tag>`) from the Hub by repo id, names
the Hub when it is not huggingface.co (HF_ENDPOINT, set before huggingface_hub is imported), and leaves its result in
a variable named for what it is (`embeddings`, `weights`, `reply`), which the tests compare with the source model.

Neuron snippets live in neuronforge/neuron_card.py; neuronforge/model_card.py's `SNIPPETS` table picks the
function for an artifact's (backend, kind).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PUBLIC_HUB = "https://huggingface.co"
TEXTS = 'texts = ["The Eiffel Tower is in Paris.", "Inferentia2 runs compiled graphs."]'


@dataclass(frozen=True)
class Snippet:
    title: str  # the card's subsection title, e.g. "Sentence Transformers (ONNX Runtime)"
    install: str  # the pip command the snippet needs
    code: str


@dataclass(frozen=True)
class Where:
    """Where the snippet loads from: the repo, the build's tag, and the Hub (None or PUBLIC_HUB: huggingface.co)."""

    repo_id: str
    tag: str
    endpoint: str | None = None

    def header(self) -> list[str]:
        """Lines that point huggingface_hub at a Hub other than huggingface.co (nothing for the public Hub)."""
        if not self.endpoint or self.endpoint.rstrip("/") == PUBLIC_HUB:
            return []
        return [
            "import os",
            "",
            "# This repository lives on the Hub below, not on huggingface.co; set it before huggingface_hub is imported.",
            f'os.environ["HF_ENDPOINT"] = "{self.endpoint.rstrip("/")}"',
            "",
        ]

    def args(self) -> str:
        return f'"{self.repo_id}", revision="{self.tag}"'


def code(where: Where, *lines: str) -> str:
    return "\n".join([*where.header(), *lines])


def graph_file(manifest: Mapping[str, Any]) -> str:
    """The ONNX graph neuronforge runs (manifests from before the sentence-transformers layout: the root graph)."""
    return str(manifest.get("onnx_file") or "model.onnx")


def is_sentence_transformers_folder(manifest: Mapping[str, Any]) -> bool:
    return "modules.json" in (manifest.get("files") or {})


def sentence_transformers_torch(cls: str, where: Where, comment: str) -> Snippet:
    return Snippet(
        f"{cls} (PyTorch)",
        "pip install sentence-transformers",
        code(
            where,
            f"from sentence_transformers import {cls}",
            "",
            f"model = {cls}({where.args()})  # {comment}",
            TEXTS,
            "embeddings = model.encode(texts)",
            "print(embeddings.shape)",
        ),
    )


def onnxruntime_graph(manifest: Mapping[str, Any], where: Where, result: str, what: str) -> Snippet:
    """Our graph with plain onnxruntime: any batch size and length (its axes are symbolic), output `sentence_embedding`."""
    graph = graph_file(manifest)
    seq = (manifest.get("shapes") or {}).get("sequence_length", 128)
    return Snippet(
        "ONNX Runtime",
        "pip install onnxruntime transformers huggingface_hub",
        code(
            where,
            "import onnxruntime as ort",
            "from huggingface_hub import snapshot_download",
            "from transformers import AutoTokenizer",
            "",
            f'folder = snapshot_download({where.args()}, allow_patterns=["{graph}*"])',
            f'session = ort.InferenceSession(f"{{folder}}/{graph}")',
            f"tokenizer = AutoTokenizer.from_pretrained({where.args()})",
            TEXTS,
            f'batch = tokenizer(texts, padding=True, truncation=True, max_length={seq}, return_tensors="np")',
            "inputs = {i.name: batch[i.name] for i in session.get_inputs()}",
            f'{result} = session.run(["sentence_embedding"], inputs)[0]  # {what}',
            f"print({result}.shape)",
        ),
    )


def onnx_dense(manifest: Mapping[str, Any], where: Where) -> list[Snippet]:
    if not is_sentence_transformers_folder(manifest):
        return [onnxruntime_graph(manifest, where, "embeddings", "[texts, dimension] sentence embeddings")]
    graph = graph_file(manifest)
    # sentence-transformers loads onnx/model.onnx by default; any other graph (the int8 one) is named with file_name.
    kwargs = "" if graph == "onnx/model.onnx" else f', model_kwargs={{"file_name": "{graph}"}}'
    onnx = Snippet(
        "Sentence Transformers (ONNX Runtime)",
        'pip install "sentence-transformers[onnx]"',
        code(
            where,
            "from sentence_transformers import SentenceTransformer",
            "",
            f'model = SentenceTransformer({where.args()}, backend="onnx"{kwargs})  # runs {graph}',
            TEXTS,
            "embeddings = model.encode(texts)",
            "print(embeddings.shape)",
        ),
    )
    return [onnx, sentence_transformers_torch("SentenceTransformer", where, "the same model from model.safetensors")]


def onnx_sparse(manifest: Mapping[str, Any], where: Where) -> list[Snippet]:
    ort_snippet = onnxruntime_graph(manifest, where, "weights", "[texts, vocabulary] SPLADE term weights")
    if not is_sentence_transformers_folder(manifest):
        return [ort_snippet]
    return [sentence_transformers_torch("SparseEncoder", where, "SPLADE from model.safetensors"), ort_snippet]


def torch_encoder(manifest: Mapping[str, Any], where: Where) -> list[Snippet]:
    if manifest.get("kind") == "sparse":
        return [sentence_transformers_torch("SparseEncoder", where, "SPLADE from model.safetensors")]
    return [sentence_transformers_torch("SentenceTransformer", where, "from model.safetensors")]


def torch_chat(manifest: Mapping[str, Any], where: Where) -> list[Snippet]:
    return [
        Snippet(
            "Transformers",
            "pip install transformers torch",
            code(
                where,
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "",
                f"model = AutoModelForCausalLM.from_pretrained({where.args()})",
                f"tokenizer = AutoTokenizer.from_pretrained({where.args()})",
                'messages = [{"role": "user", "content": "What is the capital of France?"}]',
                "# The tokenizer's own chat template turns the conversation into the prompt the model was tuned on.",
                'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")',
                "output = model.generate(inputs, attention_mask=inputs.new_ones(inputs.shape), max_new_tokens=32,"
                " do_sample=False)",
                "reply = tokenizer.decode(output[0][inputs.shape[-1]:], skip_special_tokens=True)",
                "print(reply)",
            ),
        )
    ]
