"""The "Usage" snippets of Neuron artifacts' model cards: optimum-neuron's own loaders, straight from the Hub id.

Each snippet is complete Python a user runs on an inf2/trn1 host (tests execute them, extracted from the rendered
card, against the loopback Hub with the stub SDK). The repo layouts they rely on are neuronforge/backends/
neuron_repo.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuronforge.card_snippets import PUBLIC_HUB, Snippet, Where

INSTALL = "pip install optimum-neuron  # plus the Neuron SDK from AWS's repository (a Neuron DLAMI has it)"


def endpoint_lines(endpoint: str | None) -> list[str]:
    """Point huggingface_hub at the repo's Hub when it is not the public one (read once, at its import)."""
    if not endpoint or endpoint.rstrip("/") == PUBLIC_HUB:
        return []
    return [
        "import os",
        "",
        f'os.environ["HF_ENDPOINT"] = "{endpoint.rstrip("/")}"  # this repo\'s Hub; set before any Hugging Face import',
        "",
    ]


EXAMPLE_TEXTS = ("The Eiffel Tower is in Paris.", "Inferentia2 runs compiled graphs.")


def _padded_batch(batch: int, seq: int, comment: str) -> list[str]:
    texts = ", ".join(f'"{text}"' for text in EXAMPLE_TEXTS[: max(1, batch)])  # never more rows than the batch
    return [
        f"texts = [{texts}]",
        f"# Static shapes: pad to {batch} rows of {seq} tokens, then drop the padding rows. {comment}",
        f'enc = tokenizer(texts + [""] * ({batch} - len(texts)), padding="max_length", truncation=True,',
        f'                max_length={seq}, return_tensors="pt")',
    ]


def neuron_usage_snippet(manifest: Mapping[str, Any], *, repo_id: str, tag: str, endpoint: str | None = None) -> str:
    """Python that loads a Neuron artifact from its Hub id with optimum-neuron's loaders and runs it."""
    kind = manifest.get("kind", "dense")
    shapes = manifest.get("shapes") or {}
    batch, seq = shapes.get("batch_size", 1), shapes.get("sequence_length", 128)
    files = set(manifest.get("files") or {})
    head = endpoint_lines(endpoint)
    if kind == "chat":
        cores = (manifest.get("options") or {}).get("tensor_parallel_size") or 1
        has_generation_config = "generation_config.json" in files
        lines = [
            *head,
            "import torch",
            "from optimum.neuron import NeuronModelForCausalLM",
            f"from transformers import AutoTokenizer{', GenerationConfig' if has_generation_config else ''}",
            "",
            f"# main holds the newest build (optimum-neuron reads neuron_config.json from main); this one is tag {tag}.",
            f'model = NeuronModelForCausalLM.from_pretrained("{repo_id}")  # {cores} free NeuronCore(s) of an '
            "inf2/trn1 host",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        ]
        if has_generation_config:
            lines.append(
                f'generation_config = GenerationConfig.from_pretrained("{repo_id}")  # the model\'s own end-of-turn'
            )
        lines += [
            'messages = [{"role": "user", "content": "What is the capital of France?"}]',
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")',
            f"# Compiled for batch {batch} and at most {seq} tokens (prompt + reply); right padding only.",
            "output = model.generate(",
            "    inputs,",
            "    attention_mask=torch.ones_like(inputs),",
            *(["    generation_config=generation_config,"] if has_generation_config else []),
            "    max_new_tokens=32,",
            ")",
            "reply = tokenizer.decode(output[0][inputs.shape[-1] :], skip_special_tokens=True)",
            "print(reply)",
        ]
        return "\n".join(lines)
    if kind == "sparse":
        return "\n".join(
            [
                *head,
                "import torch",
                "import torch_neuronx  # registers the Neuron ops torch.jit.load needs (inf2/trn1 host)",
                "from huggingface_hub import hf_hub_download",
                "from transformers import AutoTokenizer",
                "",
                f'model = torch.jit.load(hf_hub_download("{repo_id}", "model.neuron", revision="{tag}"))',
                f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="{tag}")',
                *_padded_batch(batch, seq, "The graph is the MLM head + SPLADE pooling."),
                'weights = model(enc["input_ids"], enc["attention_mask"])[: len(texts)]  # [texts, vocabulary]',
            ]
        )
    return "\n".join(
        [
            *head,
            "from optimum.neuron import NeuronSentenceTransformers",
            "from transformers import AutoTokenizer",
            "",
            f'model = NeuronSentenceTransformers.from_pretrained("{repo_id}", revision="{tag}")  # inf2/trn1 host',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="{tag}")',
            # optimum-neuron 0.4.5's encode() returns rows out of order for texts of different lengths.
            *_padded_batch(batch, seq, "Call the model, not encode(), which reorders rows."),
            'embeddings = model(enc["input_ids"], enc["attention_mask"])["sentence_embedding"][: len(texts)]',
        ]
    )


# The model card's SNIPPETS table (neuronforge/model_card.py) calls these, one per kind.
def _snippets(title: str, manifest: Mapping[str, Any], where: Where) -> list[Snippet]:
    code = neuron_usage_snippet(manifest, repo_id=where.repo_id, tag=where.tag, endpoint=where.endpoint)
    return [Snippet(title, INSTALL, code)]


def dense(manifest: Mapping[str, Any], where: Where) -> list[Snippet]:
    return _snippets("optimum-neuron (NeuronSentenceTransformers)", manifest, where)


def sparse(manifest: Mapping[str, Any], where: Where) -> list[Snippet]:
    return _snippets("torch-neuronx (the traced SPLADE graph)", manifest, where)


def chat(manifest: Mapping[str, Any], where: Where) -> list[Snippet]:
    return _snippets("optimum-neuron (NeuronModelForCausalLM)", manifest, where)
